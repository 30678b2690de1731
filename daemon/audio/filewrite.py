"""Writing WAV/FLAC/OGG/MP3 files: checking an output path before any work, and writing
through a temporary file in the same folder that replaces the target only when complete, so
an error, a full disk or Ctrl-C leaves the old file as it was."""

from __future__ import annotations

import errno
import os
import secrets
import stat
from pathlib import Path
from typing import Any

import numpy as np

from daemon.errors import BadArgumentError, SottovoceError

_FULL_BYTES = 1 << 20    # a write that failed with less than this free: the disk is full

# What an output file's extension asks for: (libsndfile format, subtype).
_WRITE_FORMATS = {
    ".wav": ("WAV", "PCM_16"),
    ".flac": ("FLAC", "PCM_16"),
    ".ogg": ("OGG", "VORBIS"),
    ".mp3": ("MP3", "MPEG_LAYER_III"),
}


def output_formats() -> dict[str, tuple[str, str]]:
    """The extensions this libsndfile can write, with their (format, subtype)."""
    import soundfile

    available = soundfile.available_formats()
    return {ext: fmt for ext, fmt in _WRITE_FORMATS.items() if fmt[0] in available}


def check_output_file(path: str | os.PathLike[str], suffixes: tuple[str, ...] | None = None, *,
                      in_place: bool = False) -> Path:
    """Refuse, before any work is done, a path audio could not be written to.

    ``suffixes``: the extensions allowed (default: every one :func:`write_audio` can write).
    ``in_place``: the file is written where it is (not made beside it and renamed), so its
    folder need not take new files.
    Raises :class:`BadArgumentError` with one line: a name that is not UTF-8, a folder, an
    unsupported extension, a folder that does not exist (no folder is made: a typo in its
    name must not create one) or cannot be written to.
    """
    _check_encodable(path)
    file = Path(path).expanduser()
    allowed = suffixes if suffixes is not None else tuple(output_formats())
    if os.fspath(path).endswith(os.sep) or file.is_dir():
        raise BadArgumentError(f"{path} is a folder; give a file name such as {file / ('reply' + allowed[0])}")
    if file.suffix.lower() not in allowed:
        raise _unsupported(file, allowed)
    _check_writable(file)
    if not in_place:
        _check_folder_writable(file)
    return file


def _check_encodable(path: str | os.PathLike[str]) -> None:
    """A name with bytes that are not UTF-8 (Python keeps them as surrogates) cannot be
    handed to libsndfile, nor printed back."""
    name = os.fspath(path)
    if isinstance(name, str):
        try:
            name.encode("utf-8")
        except UnicodeEncodeError:
            shown = name.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
            raise BadArgumentError(f"cannot write {shown!r}: the file name is not valid UTF-8; "
                                   "choose a name in UTF-8 (check your terminal's encoding)") from None


def same_file(a: str | os.PathLike[str], b: str | os.PathLike[str]) -> bool:
    """Whether two paths name one file: the same inode when both exist (links included),
    else the same resolved name."""
    first, second = Path(a).expanduser(), Path(b).expanduser()
    try:
        return os.path.samefile(first, second)
    except (OSError, ValueError):       # one is missing (or cannot be looked at)
        try:
            return os.path.realpath(first) == os.path.realpath(second)
        except (OSError, ValueError):
            return False


def refuse_same_file(source: str, out: str, source_option: str, out_option: str) -> None:
    """BadArgumentError when ``out`` names the file ``source`` names: writing the output
    (``out_option``) would destroy the input (``source_option``) it comes from."""
    if same_file(source, out):
        raise BadArgumentError(f"{out_option} {out} is the same file as {source_option} {source}: "
                               f"it would be overwritten; give {out_option} another file name")


def _unsupported(file: Path, allowed: tuple[str, ...]) -> BadArgumentError:
    what = f"a {file.suffix} file" if file.suffix else "a file without an extension"
    names = allowed[0] if len(allowed) == 1 else f"{', '.join(allowed[:-1])} or {allowed[-1]}"
    return BadArgumentError(f"{file}: cannot write {what}; name it {names}")


def _check_folder(file: Path) -> None:
    """The folder ``file`` goes in must exist already: it is never created."""
    folder = file.parent
    if not folder.exists():
        raise BadArgumentError(f"cannot write {file}: the folder {folder} does not exist")
    if not folder.is_dir():
        raise BadArgumentError(f"cannot write {file}: {folder} is not a folder")


def _check_writable(file: Path) -> None:
    _check_folder(file)
    existed = file.exists()
    try:
        with open(file, "ab"):       # appends nothing: an existing file is left as it is
            pass
    except OSError as exc:
        raise BadArgumentError(f"cannot write {file} ({exc.strerror or exc})") from None
    if not existed:
        file.unlink(missing_ok=True)


def _check_folder_writable(file: Path) -> None:
    """The new audio is written beside ``file`` first: its folder must take a new file."""
    try:
        temp, fd = _open_temp(_target(file))
    except OSError as exc:
        raise BadArgumentError(f"cannot write {file}: its folder {file.parent} does not take new files "
                               f"({exc.strerror or exc})") from None
    os.close(fd)
    temp.unlink(missing_ok=True)


def _target(file: Path) -> Path:
    """Where the bytes go: through a symbolic link to the file it names, as a plain write would."""
    return Path(os.path.realpath(file)) if file.is_symlink() else file


def _open_temp(target: Path) -> tuple[Path, int]:
    """A new hidden file beside ``target`` (clearly a partial copy by its name), opened for
    writing with the permissions a new file gets (``target``'s own when it exists)."""
    while True:
        temp = target.with_name(f".{target.name[:100]}.{secrets.token_hex(4)}.part")
        try:
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
        except FileExistsError:
            continue
        try:
            os.fchmod(fd, stat.S_IMODE(os.stat(target).st_mode))
        except FileNotFoundError:
            pass
        except OSError:
            os.close(fd)
            temp.unlink(missing_ok=True)
            raise
        return temp, fd


class AudioFileWriter:
    """Audio streamed into a file in the format the extension names (.wav: 16-bit PCM,
    .flac, .ogg, .mp3), atomically: the samples go to a hidden temporary file beside it,
    which :meth:`commit` renames over ``path`` and :meth:`discard` deletes. An existing file
    is replaced whole or not at all, and no partial file is left behind.

    Errors are one line: :class:`BadArgumentError` when the file cannot be written (its
    extension, its folder) and :class:`SottovoceError` (exit 1) when the disk is full.
    """

    def __init__(self, path: str | os.PathLike[str], sample_rate: int, channels: int = 1) -> None:
        import soundfile

        self.path = Path(path)
        formats = output_formats()
        fmt = formats.get(self.path.suffix.lower())
        if fmt is None:
            raise _unsupported(self.path, tuple(formats))
        _check_folder(self.path)
        self._target = _target(self.path)
        self._file: Any = None
        try:
            self._temp, self._fd = _open_temp(self._target)
        except OSError as exc:
            raise _write_error(self.path, exc) from None
        try:
            self._file = soundfile.SoundFile(self._fd, "w", samplerate=int(sample_rate), channels=channels,
                                             format=fmt[0], subtype=fmt[1], closefd=False)
        except (OSError, RuntimeError) as exc:      # LibsndfileError is a RuntimeError
            self.discard()
            raise _write_error(self.path, exc) from None

    def write(self, samples: np.ndarray) -> None:
        """Append float32 samples (clipped to -1..1); on failure the partial file is deleted."""
        data = np.clip(np.asarray(samples, dtype=np.float32), -1.0, 1.0)
        try:
            self._file.write(data)
        except (OSError, RuntimeError) as exc:
            self.discard()
            raise _write_error(self.path, exc) from None

    def commit(self) -> Path:
        """Finish the file and put it in place of ``path``."""
        try:
            self._close()
            os.replace(self._temp, self._target)
        except (OSError, RuntimeError) as exc:
            self.discard()
            raise _write_error(self.path, exc) from None
        return self.path

    def discard(self) -> None:
        """Forget what was written: ``path`` stays as it was. Safe to call more than once."""
        try:
            self._close()
        except Exception:  # noqa: BLE001 - closing a file being thrown away: its errors do not matter
            pass
        self._temp.unlink(missing_ok=True)

    def _close(self) -> None:
        """Close libsndfile's handle (it writes the header), then the descriptor, once each."""
        file, self._file = self._file, None
        fd, self._fd = self._fd, -1
        try:
            if file is not None:
                file.close()
        finally:
            if fd >= 0:
                os.close(fd)


def _write_error(file: Path, exc: BaseException) -> SottovoceError:
    """One line for a failed write. libsndfile reports a full disk as "System error.", so the
    free space of the folder is what tells."""
    reason = getattr(exc, "errno", None)
    if reason in (errno.ENOSPC, errno.EDQUOT) or (reason is None and _disk_full(_target(file).parent)):
        return SottovoceError(f"cannot write {file}: no space left on device; "
                              "free some space or write it elsewhere (the file was left as it was)")
    return BadArgumentError(f"cannot write {file} ({getattr(exc, 'strerror', None) or exc})")


def _disk_full(folder: Path) -> bool:
    try:
        st = os.statvfs(folder)
    except OSError:
        return False
    return st.f_bavail * st.f_frsize < _FULL_BYTES


def write_audio(path: str | os.PathLike[str], samples: np.ndarray, sample_rate: int) -> None:
    """Write float32 samples in the format the extension names (.wav, .flac, .ogg, .mp3),
    replacing an existing file only once the new one is complete.

    Raises :class:`BadArgumentError` (one line) when the extension is not one of those or the
    file cannot be written (its folder missing included); :class:`SottovoceError` when the
    disk is full.
    """
    data = np.asarray(samples, dtype=np.float32)
    out = AudioFileWriter(path, sample_rate, channels=1 if data.ndim == 1 else data.shape[1])
    out.write(data)
    out.commit()


def write_wav(path: str | os.PathLike[str], samples: np.ndarray, sample_rate: int) -> None:
    """Write float32 samples in [-1, 1] (mono, or frames x channels) as 16-bit PCM WAV
    into an existing folder (:class:`BadArgumentError` if it is missing)."""
    import soundfile

    data = np.clip(np.asarray(samples, dtype=np.float32), -1.0, 1.0)
    _check_folder(Path(path))
    soundfile.write(str(path), data, int(sample_rate), subtype="PCM_16", format="WAV")
