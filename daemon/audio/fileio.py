"""Reading any audio file as 16 kHz float32 mono, and resampling (writing: filewrite.py).

libsndfile (through soundfile) reads WAV, FLAC, OGG and MP3; anything else it refuses is
handed to PyAV (through faster-whisper's decoder), which knows what ffmpeg knows.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import math
import os
import stat
import sys
from pathlib import Path
from typing import Iterator

import numpy as np

from daemon.errors import BadAudioError

_LOGGER = logging.getLogger(__name__)

TARGET_RATE = 16000
_HALF_ZEROS = 16         # sinc zero crossings on each side of the resampling kernel
_KAISER_BETA = 8.6       # ~ -80 dB stop band
_BLOCK = 8192            # output samples resampled per block (bounds the gather's memory)
# File bytes per decoded second above which PyAV's result is checked packet by packet: compressed
# audio stays under 40000 (320 kbit/s); more is a video, or junk that decoded to a few frames.
_SUSPECT_BYTES_PER_S = 64_000
MIN_RATE = 4000          # sample rates outside these bounds come from a damaged header
MAX_RATE = 768_000
_MAX_PEAK = 1000.0       # float samples 60 dB over full scale: garbage, not loud audio


def check_audio_file(path: str | os.PathLike[str]) -> Path:
    """``path`` as a Path when it names an existing regular file; else :class:`BadAudioError`
    saying what it is instead (a folder, a pipe or device, a broken symlink, a symlink loop,
    no such file) or why it cannot be looked at (a folder on the way not readable, a name
    too long)."""
    file = Path(path)
    try:
        st = os.stat(file)
    except (FileNotFoundError, NotADirectoryError):
        if os.path.islink(file):
            raise BadAudioError(f"{file} is a broken symlink (what it points to does not exist)") from None
        raise BadAudioError(f"{file}: no such audio file") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise BadAudioError(f"{file} is a symlink loop, not an audio file") from None
        raise unreadable(file, exc) from None
    if stat.S_ISDIR(st.st_mode):
        raise BadAudioError(f"{file} is a folder, not an audio file")
    if not stat.S_ISREG(st.st_mode):
        raise BadAudioError(f"{file} is {_file_kind(st.st_mode)}, not an audio file; "
                            "save the audio to a file and give that")
    return file


def _file_kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "a pipe (FIFO)"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def unreadable(file: Path, exc: OSError) -> BadAudioError:
    """One line for an OSError met while reading an input file: "cannot read F: permission denied"."""
    reason = exc.strerror or str(exc) or type(exc).__name__
    return BadAudioError(f"cannot read {file}: {reason[:1].lower()}{reason[1:]}")


def load_audio(path: str | os.PathLike[str], sample_rate: int = TARGET_RATE, *,
               quiet: bool = False) -> np.ndarray:
    """Decode ``path`` into float32 mono at ``sample_rate`` (default 16 kHz).

    Raises :class:`BadAudioError` with one line when the file is missing or not audio (junk
    that no decoder gets a sample out of included). A WAV, FLAC or OGG file that libsndfile
    reads as holding no samples gives an empty array (the caller decides what that means).
    ``quiet``: silence what libsndfile's MP3 decoder prints on stderr about a damaged file
    ("Warning: Xing stream size off ..."). It does so by pointing file descriptor 2 at
    /dev/null while the file is read, so only a process with nothing else to say meanwhile
    (the one-shot CLI, before it loads models) should ask for it.
    """
    file = check_audio_file(path)
    try:
        return _decode(file, sample_rate, quiet)
    except OSError as exc:              # no read permission (root is not stopped), a read error
        raise unreadable(file, exc) from None


def _decode(file: Path, sample_rate: int, quiet: bool) -> np.ndarray:
    if file.stat().st_size == 0:
        raise BadAudioError(f"{file}: the file is empty, not audio")
    if not _looks_like_soundfile(file):
        return _read_pyav(file, sample_rate)
    try:
        with _stderr_silenced(quiet):
            samples, rate = _read_soundfile(file)
    except Exception as first:  # noqa: BLE001 - libsndfile's errors are untyped RuntimeErrors
        _LOGGER.debug("soundfile could not read %s (%s); trying PyAV", file, first)
        return _read_pyav(file, sample_rate)
    _check_rate(file, rate)             # before resampling: 1 Hz to 16 kHz is 16000 times the samples
    _check_samples(file, samples)
    return resample(samples, rate, sample_rate)


def _check_rate(file: Path, rate: int) -> None:
    """A damaged header can claim any rate; resampling from an absurd one takes gigabytes."""
    if not MIN_RATE <= rate <= MAX_RATE:
        raise BadAudioError(f"{file}: a sample rate of {rate} Hz is not plausible for audio "
                            f"({MIN_RATE} to {MAX_RATE} Hz expected); the file's header is probably damaged")


def _check_samples(file: Path, samples: np.ndarray) -> None:
    """Float files can hold NaN, infinities or values far outside -1..1: not sound, and
    every model downstream would hear nothing in them."""
    if samples.size == 0:
        return
    peak = float(np.max(np.abs(samples)))
    if not math.isfinite(peak):
        raise BadAudioError(f"{file}: holds invalid samples (NaN or infinite values), not usable audio")
    if peak > _MAX_PEAK:
        raise BadAudioError(f"{file}: holds invalid samples (values up to {peak:.3g}, where audio "
                            "stays within -1 to 1), not usable audio")


def _looks_like_soundfile(file: Path) -> bool:
    """Whether libsndfile should try first: its MP3 decoder prints notes on stderr for junk."""
    with open(file, "rb") as fh:
        head = fh.read(12)
    if head[:4] in (b"RIFF", b"RF64", b"fLaC", b"OggS", b"FORM", b"caff") or head[:3] == b"ID3":
        return True
    return len(head) >= 2 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0 and file.suffix.lower() == ".mp3"


@contextlib.contextmanager
def _stderr_silenced(on: bool) -> Iterator[None]:
    """Point file descriptor 2 at /dev/null for the block (when ``on``): native libraries'
    notes bypass Python's sys.stderr."""
    if not on:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _read_soundfile(file: Path) -> tuple[np.ndarray, int]:
    import soundfile

    data, rate = soundfile.read(str(file), dtype="float32", always_2d=True)
    return _to_mono(data), int(rate)


def _to_mono(data: np.ndarray) -> np.ndarray:
    """Average the channels (frames x channels -> frames)."""
    if data.ndim == 1:
        return data.astype(np.float32, copy=False)
    if data.shape[1] == 1:
        return np.ascontiguousarray(data[:, 0], dtype=np.float32)
    return data.mean(axis=1, dtype=np.float32)


def _read_pyav(file: Path, sample_rate: int) -> np.ndarray:
    rate = _stream_rate(file)
    if rate is not None:
        _check_rate(file, rate)
    try:
        from faster_whisper.audio import decode_audio

        samples = decode_audio(str(file), sampling_rate=sample_rate)
    except Exception as exc:  # noqa: BLE001 - PyAV raises many unrelated types
        reason = getattr(exc, "strerror", None) or (str(exc).splitlines() or [type(exc).__name__])[0]
        raise BadAudioError(
            f"{file}: not a readable audio file ({reason}); use WAV, FLAC, MP3 or OGG"
        ) from None
    # PyAV skips the packets it cannot decode: random bytes named .flac or .mp3 open as an
    # audio stream (the extension picks the demuxer) and decode to nothing, or to a tenth of a
    # second of noise from a few chance frame headers. A real file that holds only silence
    # decodes to zeros, with every packet whole.
    if samples.size == 0:
        if not _has_audio_stream(file):
            raise BadAudioError(f"{file}: holds no audio stream; use WAV, FLAC, MP3 or OGG")
        raise BadAudioError(f"{file}: not a readable audio file (nothing in it could be decoded); "
                            "use WAV, FLAC, MP3 or OGG")
    if file.stat().st_size > _SUSPECT_BYTES_PER_S * samples.size / sample_rate and _mostly_undecodable(file):
        raise BadAudioError(f"{file}: not a readable audio file (most of it could not be decoded); "
                            "use WAV, FLAC, MP3 or OGG")
    return np.asarray(samples, dtype=np.float32)


def _mostly_undecodable(file: Path) -> bool:
    """More packets of the audio stream fail to decode than decode (a damaged real file
    loses a few in hundreds; junk keeps one or two in fifty)."""
    import av

    good = bad = 0
    try:
        with av.open(str(file), metadata_errors="ignore") as container:
            for packet in container.demux(audio=0):
                if packet.size == 0:         # the end-of-stream marker
                    continue
                try:
                    packet.decode()
                    good += 1
                except av.error.FFmpegError:
                    bad += 1
    except Exception:  # noqa: BLE001 - it decoded once already; count what was counted
        pass
    return bad > good


def _stream_rate(file: Path) -> int | None:
    """The sample rate of the first audio stream, as PyAV reads the header (None: no answer)."""
    import av

    try:
        with av.open(str(file), metadata_errors="ignore") as container:
            streams = container.streams.audio
            return int(streams[0].rate) if streams and streams[0].rate else None
    except Exception:  # noqa: BLE001 - decoding will say what is wrong
        return None


def _has_audio_stream(file: Path) -> bool:
    import av

    try:
        with av.open(str(file)) as container:
            return bool(container.streams.audio)
    except Exception:  # noqa: BLE001
        return False


# ------------------------------------------------------------------ resampling
def resample(samples: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    """Band-limited rational resampling (Kaiser-windowed sinc, polyphase), numpy only.

    Good enough for speech models: ~-80 dB images, pass band flat to ~0.9 x Nyquist.
    """
    x = np.asarray(samples, dtype=np.float32)
    if sr_in == sr_out or x.size == 0:
        return x.copy()
    if sr_in <= 0 or sr_out <= 0:
        raise ValueError(f"sample rates must be positive, got {sr_in} -> {sr_out}")
    g = math.gcd(int(sr_in), int(sr_out))
    up, down = int(sr_out) // g, int(sr_in) // g
    # Cut-off in input-sample units: the lower of the two Nyquist rates, slightly inside it.
    cutoff = 0.95 * min(1.0, up / down)
    half = int(math.ceil(_HALF_ZEROS / cutoff))        # kernel half-width in input samples
    n_out = int(math.ceil(x.size * up / down))
    padded = np.concatenate([np.zeros(half, np.float32), x, np.zeros(half + 1, np.float32)])
    taps = np.arange(-half + 1, half + 1)               # input offsets around floor(t)
    # One kernel per phase (fractional position), computed once; rows are picked per sample.
    table = _kernel(taps[None, :] - (np.arange(up) / up)[:, None], cutoff, half)
    out = np.empty(n_out, dtype=np.float32)
    for start in range(0, n_out, _BLOCK):
        n = np.arange(start, min(start + _BLOCK, n_out), dtype=np.int64)
        base, phase = np.divmod(n * down, up)           # input time = base + phase / up
        window = padded[base[:, None] + taps[None, :] + half]
        out[start:start + n.size] = np.einsum("ij,ij->i", table[phase], window)
    return out


def _kernel(dist: np.ndarray, cutoff: float, half: int) -> np.ndarray:
    ratio = np.clip(dist / half, -1.0, 1.0)
    window = np.i0(_KAISER_BETA * np.sqrt(1.0 - ratio**2)) / np.i0(_KAISER_BETA)
    return (cutoff * np.sinc(cutoff * dist) * window).astype(np.float32)
