"""Play a turn's audio on an output device as it arrives (the CLI's default output)."""

from __future__ import annotations

import logging
import queue
import threading

import numpy as np

from daemon.audio import portaudio
from daemon.audio.portaudio import DeviceChoice
from daemon.config import AudioConfig
from daemon.errors import NoDeviceError
from daemon.messages import AudioChunk

_LOGGER = logging.getLogger(__name__)


def check_output_device(name: str) -> DeviceChoice:
    """The output device ``name`` names ("default", an index, a PortAudio name or a
    PulseAudio sink, found as the service finds its speaker).

    Raises :class:`NoDeviceError` (one line) when PortAudio is missing or finds no such
    device, e.g. on a machine without a sound card.
    """
    try:
        return portaudio.resolve(name or "default", "output")
    except (OSError, ImportError) as exc:     # OSError: the PortAudio library is missing
        raise NoDeviceError(f"no audio output device: PortAudio unavailable ({exc}); "
                            "use --out FILE.wav") from None
    except Exception as exc:  # noqa: BLE001 - NoDeviceError, or PortAudioError ("Error querying device -1")
        raise NoDeviceError(f"no audio output device {name!r} ({exc}); use --out FILE.wav") from None


class DeviceSink:
    """Streams chunks to ``audio.output`` through sounddevice from a writer thread.

    Made before any work: raises :class:`NoDeviceError` when there is no such device."""

    def __init__(self, cfg: AudioConfig) -> None:
        self._device = check_output_device(cfg.output)
        self._queue: "queue.Queue[AudioChunk | None]" = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="cli-playback", daemon=True)
        self._started = False
        self._error: Exception | None = None

    def write(self, chunk: AudioChunk) -> None:
        if not self._started:
            self._started = True
            self._thread.start()
        self._queue.put(chunk)

    def _run(self) -> None:
        stream = None
        try:
            while (chunk := self._queue.get()) is not None:
                if stream is None:
                    stream = portaudio.start_stream(portaudio.open_stream(
                        self._device, samplerate=chunk.sample_rate, channels=1, dtype="float32"))
                stream.write(np.ascontiguousarray(chunk.samples, dtype=np.float32).reshape(-1, 1))
        except Exception as exc:  # reported by close()
            self._error = exc
        finally:
            if stream is not None:
                try:
                    stream.stop()               # plays out what was written
                finally:
                    portaudio.close_stream(stream)

    def close(self) -> None:
        if self._started:
            self._queue.put(None)
            self._thread.join()
        if self._error is not None:
            raise NoDeviceError(f"playback on {self._device.label} failed: {self._error}")
