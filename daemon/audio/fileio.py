"""Reading any audio file as 16 kHz float32 mono, resampling, and writing 16-bit WAVs.

libsndfile (through soundfile) reads WAV, FLAC, OGG and MP3; anything else it refuses is
handed to PyAV (through faster-whisper's decoder), which knows what ffmpeg knows.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path

import numpy as np

from daemon.errors import BadAudioError

_LOGGER = logging.getLogger(__name__)

TARGET_RATE = 16000
_HALF_ZEROS = 16         # sinc zero crossings on each side of the resampling kernel
_KAISER_BETA = 8.6       # ~ -80 dB stop band
_BLOCK = 8192            # output samples resampled per block (bounds the gather's memory)


def load_audio(path: str | os.PathLike[str], sample_rate: int = TARGET_RATE) -> np.ndarray:
    """Decode ``path`` into float32 mono at ``sample_rate`` (default 16 kHz).

    Raises :class:`BadAudioError` with one line when the file is missing or not audio.
    An audio file with no samples gives an empty array (the caller decides what that means).
    """
    file = Path(path)
    if not file.is_file():
        raise BadAudioError(f"{file}: no such audio file")
    if file.stat().st_size == 0:
        raise BadAudioError(f"{file}: the file is empty, not audio")
    if not _looks_like_soundfile(file):
        return _read_pyav(file, sample_rate)
    try:
        samples, rate = _read_soundfile(file)
    except Exception as first:  # noqa: BLE001 - libsndfile's errors are untyped RuntimeErrors
        _LOGGER.debug("soundfile could not read %s (%s); trying PyAV", file, first)
        return _read_pyav(file, sample_rate)
    return resample(samples, rate, sample_rate)


def _looks_like_soundfile(file: Path) -> bool:
    """Whether libsndfile should try first: its MP3 decoder prints notes on stderr for junk."""
    with open(file, "rb") as fh:
        head = fh.read(12)
    if head[:4] in (b"RIFF", b"RF64", b"fLaC", b"OggS", b"FORM", b"caff") or head[:3] == b"ID3":
        return True
    return len(head) >= 2 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0 and file.suffix.lower() == ".mp3"


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
    try:
        from faster_whisper.audio import decode_audio

        samples = decode_audio(str(file), sampling_rate=sample_rate)
    except Exception as exc:  # noqa: BLE001 - PyAV raises many unrelated types
        reason = getattr(exc, "strerror", None) or (str(exc).splitlines() or [type(exc).__name__])[0]
        raise BadAudioError(
            f"{file}: not a readable audio file ({reason}); use WAV, FLAC, MP3 or OGG"
        ) from None
    if samples.size == 0 and not _has_audio_stream(file):
        raise BadAudioError(f"{file}: holds no audio stream; use WAV, FLAC, MP3 or OGG")
    return np.asarray(samples, dtype=np.float32)


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


# --------------------------------------------------------------------- writing
def write_wav(path: str | os.PathLike[str], samples: np.ndarray, sample_rate: int) -> None:
    """Write float32 samples in [-1, 1] (mono, or frames x channels) as 16-bit PCM WAV."""
    import soundfile

    data = np.clip(np.asarray(samples, dtype=np.float32), -1.0, 1.0)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(str(path), data, int(sample_rate), subtype="PCM_16", format="WAV")
