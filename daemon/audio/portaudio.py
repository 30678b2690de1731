"""PortAudio (through sounddevice): finding the configured device and opening streams on it.

``audio.input`` / ``audio.output`` may be "default", a PortAudio device index, a substring of
a PortAudio device name, or a substring of a PulseAudio source/sink name. PortAudio 19.6 sees
PulseAudio only as ALSA's "pulse" device, so a PulseAudio name is reached by opening "pulse"
with ``PULSE_SOURCE``/``PULSE_SINK`` set: the ALSA plugin reads them when the stream opens.

PortAudio lists devices once, at initialisation: a server that was not running then stays
invisible until PortAudio is re-initialised. :func:`resolve` does that when nothing matches,
but only while no stream is open (``Pa_Terminate`` would close them all).

``sounddevice`` initialises PortAudio when imported, so it is imported lazily here.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from typing import Any, Literal

from daemon.audio import pulse
from daemon.errors import NoDeviceError

_LOGGER = logging.getLogger(__name__)

Direction = Literal["input", "output"]
_LOCK = threading.RLock()       # PortAudio calls that open, close or re-initialise
_OPEN_STREAMS = 0               # streams opened here and not yet closed
_ENV = {"input": "PULSE_SOURCE", "output": "PULSE_SINK"}
_PULSE_KIND: dict[str, pulse.Kind] = {"input": "source", "output": "sink"}


def sounddevice() -> Any:
    """The sounddevice module (imported on first use: the import starts PortAudio)."""
    _route_alsa_errors()
    import sounddevice as sd

    return sd


_ALSA_HANDLER: Any = None


def _route_alsa_errors() -> None:
    """Send ALSA library messages to the log instead of stderr (the journal).

    ALSA prints e.g. "snd_pcm_recover() underrun occurred" straight to stderr each time the
    pulse plugin underruns. Its handler is variadic; only the fixed arguments are read here.
    """
    global _ALSA_HANDLER
    if _ALSA_HANDLER is not None:
        return
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("asound")
    if not name:
        _ALSA_HANDLER = False
        return
    proto = ctypes.CFUNCTYPE(None, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p,
                             ctypes.c_int, ctypes.c_char_p)

    def handler(file: bytes | None, line: int, func: bytes | None, err: int, fmt: bytes | None) -> None:
        _LOGGER.debug("ALSA %s: %s (error %d)", (func or b"?").decode(errors="replace"),
                      (fmt or b"").decode(errors="replace").strip(), err)

    try:
        _ALSA_HANDLER = proto(handler)
        ctypes.CDLL(name).snd_lib_error_set_handler(_ALSA_HANDLER)
    except (OSError, AttributeError) as exc:
        _LOGGER.debug("cannot route ALSA messages: %s", exc)
        _ALSA_HANDLER = False


@dataclass(frozen=True)
class DeviceChoice:
    """Where a stream goes: a PortAudio device, optionally a named PulseAudio device behind it."""

    query: str                  # what the config said
    direction: Direction
    index: int                  # PortAudio device index
    name: str                   # PortAudio device name
    default_rate: int           # the device's native rate as PortAudio reports it
    pulse_name: str | None = None

    @property
    def label(self) -> str:
        """How messages name the device."""
        if self.pulse_name:
            kind = _PULSE_KIND[self.direction]
            return f"{self.query!r} (PulseAudio {kind} {self.pulse_name})"
        return f"{self.query!r} ({self.name})"


def resolve(query: str, direction: Direction) -> DeviceChoice:
    """Find the device ``query`` names; raise :class:`NoDeviceError` naming it when absent."""
    with _LOCK:
        try:
            return _resolve(query, direction)
        except NoDeviceError:
            if not reinit_if_idle():
                raise
        return _resolve(query, direction)


def reinit_if_idle() -> bool:
    """Re-initialise PortAudio so it sees devices (or a sound server) that appeared since.

    Skipped (returns False) while any stream opened through this module is open.
    """
    with _LOCK:
        if _OPEN_STREAMS:
            return False
        sd = sounddevice()
        sd._terminate()
        sd._initialize()
        _LOGGER.debug("PortAudio re-initialised")
        return True


def _resolve(query: str, direction: Direction) -> DeviceChoice:
    sd = sounddevice()
    channels = f"max_{direction}_channels"
    devices = [dict(d) for d in sd.query_devices()]
    usable = [d for d in devices if d[channels] > 0]
    q = query.strip()
    if q.lower() in ("", "default"):
        index = sd.default.device[0 if direction == "input" else 1]
        if index is None or index < 0:
            raise NoDeviceError(
                f"no default audio {direction} device; set audio.{direction} to a device name")
        return _choice(q or "default", direction, devices[index])
    if q.isdigit():
        if int(q) >= len(devices) or devices[int(q)][channels] <= 0:
            raise NoDeviceError(f"audio {direction} device {q} does not exist; {_available(usable)}")
        return _choice(q, direction, devices[int(q)])
    exact = [d for d in usable if d["name"] == q]
    partial = [d for d in usable if q.lower() in d["name"].lower()]
    if exact or partial:
        return _choice(q, direction, (exact or partial)[0])
    return _resolve_pulse(q, direction, usable)


def _resolve_pulse(q: str, direction: Direction, usable: list[dict[str, Any]]) -> DeviceChoice:
    kind = _PULSE_KIND[direction]
    names = pulse.list_devices(kind)
    found = pulse.match_device(names, q, kind)
    if found is None:
        server = f"; PulseAudio {kind}s: {', '.join(names)}" if names else ""
        raise NoDeviceError(f"audio {direction} device {q!r} not found ({_available(usable)}{server})")
    bridge = [d for d in usable if d["name"] == "pulse"] or [d for d in usable if d["name"] == "default"]
    if not bridge:
        raise NoDeviceError(
            f"audio {direction} device {q!r} is a PulseAudio {kind} but PortAudio has no 'pulse' "
            "device; install libasound2-plugins")
    return _choice(q, direction, bridge[0], pulse_name=found)


def _choice(q: str, direction: Direction, dev: dict[str, Any], pulse_name: str | None = None) -> DeviceChoice:
    return DeviceChoice(q, direction, int(dev["index"]), str(dev["name"]),
                        int(dev["default_samplerate"]), pulse_name)


def _available(usable: list[dict[str, Any]]) -> str:
    if not usable:
        return "PortAudio sees no devices"
    return "PortAudio devices: " + ", ".join(f"{d['index']} {d['name']}" for d in usable)


def pick_rate(choice: DeviceChoice, wanted: int, channels: int) -> int:
    """``wanted`` when the device accepts it (the sound server or driver converts), else native."""
    sd = sounddevice()
    check = sd.check_input_settings if choice.direction == "input" else sd.check_output_settings
    try:
        check(device=choice.index, samplerate=wanted, channels=channels, dtype="float32")
        return wanted
    except Exception:  # noqa: BLE001 - PortAudio reports unsupported settings untyped
        return choice.default_rate


def open_stream(choice: DeviceChoice, **kwargs: Any) -> Any:
    """Open (not start) a sounddevice stream on ``choice``; raises :class:`NoDeviceError`."""
    global _OPEN_STREAMS
    sd = sounddevice()
    cls = sd.InputStream if choice.direction == "input" else sd.OutputStream
    var = _ENV[choice.direction]
    with _LOCK:
        saved = os.environ.get(var)
        if choice.pulse_name:
            os.environ[var] = choice.pulse_name
        try:
            stream = cls(device=choice.index, **kwargs)
        except Exception as exc:  # noqa: BLE001 - PortAudioError, or ValueError for settings
            raise NoDeviceError(
                f"cannot open audio {choice.direction} device {choice.label}: {exc}") from None
        finally:
            if choice.pulse_name:
                _restore_env(var, saved)
        _OPEN_STREAMS += 1
        return stream


def close_stream(stream: Any) -> None:
    """Abort and close a stream from :func:`open_stream` (never raises)."""
    global _OPEN_STREAMS
    with _LOCK:
        try:
            stream.abort(ignore_errors=True)
            stream.close(ignore_errors=True)
        except Exception as exc:  # noqa: BLE001 - a vanished device may refuse to close
            _LOGGER.debug("closing the audio stream failed: %s", exc)
        _OPEN_STREAMS = max(0, _OPEN_STREAMS - 1)


def _restore_env(var: str, saved: str | None) -> None:
    if saved is None:
        os.environ.pop(var, None)
    else:
        os.environ[var] = saved


def start_stream(stream: Any) -> Any:
    """Start an opened stream; on failure close it before the error propagates."""
    try:
        stream.start()
    except Exception:
        close_stream(stream)
        raise
    return stream
