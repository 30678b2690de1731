"""Audio files: any common format, rate and channel count comes in as 16 kHz float32 mono;
resampling is band-limited; WAVs are written as 16-bit PCM; non-audio gives one clear line."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import soundfile as sf

from daemon import errors
from daemon.audio.fileio import load_audio, resample
from daemon.audio.filewrite import check_output_file, write_audio, write_wav
from daemon.errors import BadArgumentError, BadAudioError
from tests.fixtures_core import DATA, one_line_error, sottovoce

JFK_SECONDS = 11.0


@pytest.fixture(scope="module")
def jfk() -> np.ndarray:
    return load_audio(DATA / "jfk.flac")


def _envelope(x: np.ndarray, hop: int = 1600) -> np.ndarray:
    n = x.size // hop
    return np.sqrt((x[: n * hop].reshape(n, hop) ** 2).mean(axis=1))


def test_jfk_flac_44k_stereo_loads_as_16k_mono(jfk: np.ndarray) -> None:
    assert jfk.dtype == np.float32 and jfk.ndim == 1
    assert abs(jfk.size / 16000 - JFK_SECONDS) < 0.1
    assert 0.2 < float(np.abs(jfk).max()) <= 1.0


@pytest.mark.parametrize(
    "name,args",
    [
        ("8k_mono.wav", ["-r", "8000", "-c", "1"]),
        ("48k_stereo.wav", ["-r", "48000", "-c", "2"]),
        ("22k_mono.ogg", ["-r", "22050", "-c", "1"]),
        ("44k_stereo.mp3", None),
        ("32k_mono.m4a", None),
    ],
)
def test_formats_rates_and_channels(jfk: np.ndarray, tmp_path: Path, name: str, args: list[str] | None) -> None:
    path = tmp_path / name
    if args is not None:
        subprocess.run(["sox", "-R", str(DATA / "jfk.flac"), *args, str(path)], check=True)
    else:       # sox here has no MP3/AAC encoder: ffmpeg makes those
        rate = "44100" if name.endswith(".mp3") else "32000"
        subprocess.run(["ffmpeg", "-loglevel", "error", "-i", str(DATA / "jfk.flac"), "-ar", rate, str(path)],
                       check=True)
    audio = load_audio(path)
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert abs(audio.size / 16000 - JFK_SECONDS) < 0.15
    a, b = _envelope(jfk), _envelope(audio)
    n = min(a.size, b.size)
    assert np.corrcoef(a[:n], b[:n])[0, 1] > 0.97, "the same speech, at the same place in time"


@pytest.mark.parametrize("sr_in,sr_out", [(44100, 16000), (48000, 16000), (8000, 16000), (16000, 22050)])
def test_resample_keeps_tones_and_removes_aliases(sr_in: int, sr_out: int) -> None:
    t = np.arange(sr_in * 2) / sr_in
    tone = np.sin(2 * np.pi * 1000 * t).astype(np.float32)
    out = resample(tone, sr_in, sr_out)
    assert out.size == int(np.ceil(tone.size * sr_out / sr_in))
    ref = np.sin(2 * np.pi * 1000 * np.arange(out.size) / sr_out)
    inner = slice(200, -200)
    assert np.abs(out[inner] - ref[inner]).max() < 1e-3
    if sr_out < sr_in:   # a tone above the new Nyquist must vanish, not fold back
        high = np.sin(2 * np.pi * (sr_out * 0.6) * t).astype(np.float32)
        folded = resample(high, sr_in, sr_out)
        assert np.sqrt(np.mean(folded[inner] ** 2)) < 1e-3


def test_write_wav_is_16_bit_pcm_and_round_trips(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    samples = (rng.uniform(-1.2, 1.2, 22050)).astype(np.float32)   # out-of-range is clipped
    path = tmp_path / "out.wav"
    write_wav(path, samples, 22050)
    info = sf.info(str(path))
    assert (info.samplerate, info.channels, info.subtype, info.format) == (22050, 1, "PCM_16", "WAV")
    back, _ = sf.read(str(path), dtype="float32")
    assert np.abs(back - np.clip(samples, -1, 1)).max() < 2 / 32768
    assert np.allclose(load_audio(path, sample_rate=22050), back)


def test_zero_length_audio_is_empty_not_an_error(tmp_path: Path) -> None:
    path = tmp_path / "nothing.wav"
    sf.write(str(path), np.zeros(0, np.float32), 16000)
    assert load_audio(path).size == 0


@pytest.mark.parametrize(
    "name,content",
    [
        ("notes.wav", b"this is not audio at all\n" * 50),
        ("empty.flac", b""),
        ("random.mp3", bytes(np.random.default_rng(1).integers(0, 256, 4000, dtype=np.uint8))),
        ("doc.pdf", b"%PDF-1.4\n1 0 obj << >> endobj\ntrailer << >>\n%%EOF\n"),
    ],
)
def test_non_audio_is_one_line_bad_audio_error(tmp_path: Path, name: str, content: bytes) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(BadAudioError) as err:
        load_audio(path)
    message = str(err.value)
    assert "\n" not in message and str(path) in message


def test_missing_file_is_bad_audio(tmp_path: Path) -> None:
    with pytest.raises(BadAudioError, match="no such audio file"):
        load_audio(tmp_path / "absent.wav")


def test_a_missing_folder_is_refused_not_created(tmp_path: Path) -> None:
    """A typo in a folder name (``--out ~/Musci/reply.wav``) is an error, not a new folder."""
    samples = np.zeros(1000, dtype=np.float32)
    out = tmp_path / "typo" / "deep" / "x.flac"
    with pytest.raises(BadArgumentError, match="does not exist") as err:
        check_output_file(out)
    assert "\n" not in str(err.value) and str(tmp_path / "typo" / "deep") in str(err.value)
    for write in (write_audio, write_wav):
        with pytest.raises(BadArgumentError, match="does not exist"):
            write(tmp_path / "typo" / "x.wav", samples, 16000)
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(BadArgumentError, match="not a folder"):
        check_output_file(tmp_path / "file" / "x.wav")
    assert check_output_file(tmp_path / "x.ogg") == tmp_path / "x.ogg"


def test_cli_out_into_a_missing_folder_is_exit_8_before_models_load(cli_env, tmp_path: Path) -> None:
    """Checked before any model loads: with models that do not exist, a later check would
    fail with the missing-model code instead."""
    cfg = tmp_path / "no_models.yaml"
    cfg.write_text(f"llm:\n  model: {tmp_path / 'missing.gguf'}\n"
                   f"tts:\n  voice: {tmp_path / 'missing.onnx'}\n  fallback: none\n"
                   f"rag:\n  index_dir: {tmp_path / 'index'}\n")
    out = tmp_path / "nonexistent" / "dir" / "x.wav"
    for args in (["speak", "Hello"], ["ask", "--local", "Hello"]):
        res = sottovoce("--config", str(cfg), *args, "--out", str(out), env=cli_env)
        one_line_error(res, errors.EXIT_BAD_ARG, str(out.parent), "does not exist")
    assert not (tmp_path / "nonexistent").exists()


# ------------------------------------------------------------------ junk with an audio name
def _random_bytes(n: int, seed: int) -> bytes:
    return np.random.default_rng(seed).bytes(n)


@pytest.mark.parametrize("name", ["junk.flac", "junk.mp3", "junk.wav"])
def test_random_bytes_named_as_audio_are_not_audio(tmp_path: Path, name: str) -> None:
    """PyAV picks a demuxer by the extension and skips every frame it cannot decode: random
    bytes named .flac or .mp3 came out as an empty signal, which the CLI took for silence."""
    for seed, size in ((1, 300_000), (2, 1_000_000)):
        path = tmp_path / name
        path.write_bytes(_random_bytes(size, seed))
        with pytest.raises(BadAudioError, match="not a readable audio file") as err:
            load_audio(path, quiet=True)
        assert "\n" not in str(err.value) and str(path) in str(err.value)


def test_random_flac_is_exit_4_and_real_silence_still_exit_5(cli_env, tmp_path: Path) -> None:
    junk = tmp_path / "recording.flac"
    junk.write_bytes(_random_bytes(300_000, 3))
    for args in (["transcribe", str(junk)], ["ask", "--local", "--wav", str(junk), "--out", str(tmp_path / "r.wav")]):
        res = sottovoce(*args, env=cli_env)
        one_line_error(res, errors.EXIT_BAD_AUDIO, str(junk), "not a readable audio file")
    # A real file that holds only silence is audio: it loads (as zeros) and has no speech.
    silent = tmp_path / "silent.flac"
    sf.write(str(silent), np.zeros(32000, np.float32), 16000)
    m4a = tmp_path / "silent.m4a"       # through PyAV, like the junk above
    subprocess.run(["ffmpeg", "-loglevel", "error", "-f", "lavfi", "-i", "anullsrc=r=16000:cl=mono",
                    "-t", "2", str(m4a)], check=True)
    for path in (silent, m4a):
        audio = load_audio(path)
        assert audio.size >= 30000 and not audio.any(), path
    res = sottovoce("transcribe", str(m4a), env=cli_env)
    one_line_error(res, errors.EXIT_NO_SPEECH, "no speech heard")


# ------------------------------------------------------------------ files that cannot be read
# A write-only attribute: open() for reading is refused even to root (kernfs: EACCES).
_WRITE_ONLY = next((p for p in (Path("/sys/bus/pci/rescan"), Path("/sys/kernel/uevent_helper"))
                    if p.is_file() and p.stat().st_mode & 0o444 == 0), None)


def _as_nobody(work: Callable[[], str]) -> str:
    """``work()`` run in a forked child that has dropped root (chmod 000 does not stop root)."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:                                   # the child: never returns into pytest
        result = "no result"
        try:
            os.setgid(65534)
            os.setuid(65534)
            result = work()
        except BaseException as exc:  # noqa: BLE001 - reported to the parent
            result = f"{type(exc).__name__}: {exc}"
        finally:
            os.write(write, result.encode()[:4000])
            os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    with os.fdopen(read, "rb") as fh:
        return fh.read().decode()


def _load_error(path: str | Path) -> str:
    try:
        load_audio(path)
    except BadAudioError as exc:
        return f"BadAudioError: {exc}"
    return "read"


def test_a_file_without_read_permission_is_one_line_bad_audio(tmp_path: Path, monkeypatch) -> None:
    """chmod 000 gave a PermissionError traceback from the sniffing open()."""
    path = tmp_path / "noperm.wav"
    sf.write(str(path), np.zeros(1600, np.float32), 16000)
    path.chmod(0)
    if os.geteuid() != 0:
        assert _load_error(path) == f"BadAudioError: cannot read {path}: permission denied"
        return
    # As root: the folder is opened for "nobody" by working in it (its parents stay private).
    tmp_path.chmod(0o711)
    monkeypatch.chdir(tmp_path)
    assert _as_nobody(lambda: _load_error("noperm.wav")) == "BadAudioError: cannot read noperm.wav: permission denied"


def test_a_name_too_long_or_a_refused_open_is_one_line_bad_audio(tmp_path: Path) -> None:
    """Each OSError on the way to the samples is the not-audio error, root or not."""
    long_name = tmp_path / ("a" * 300 + ".wav")       # ENAMETOOLONG while checking the path
    assert _load_error(long_name) == f"BadAudioError: cannot read {long_name}: file name too long"
    if _WRITE_ONLY is not None:
        assert _load_error(_WRITE_ONLY) == f"BadAudioError: cannot read {_WRITE_ONLY}: permission denied"


def test_cli_unreadable_audio_is_exit_4_with_one_line(cli_env, tmp_path: Path) -> None:
    files = [tmp_path / ("a" * 300 + ".wav")] + ([_WRITE_ONLY] if _WRITE_ONLY is not None else [])
    for path in files:
        for args in (["transcribe", str(path)], ["ask", "--wav", str(path), "--out", str(tmp_path / "r.wav")]):
            res = sottovoce(*args, env=cli_env)
            one_line_error(res, errors.EXIT_BAD_AUDIO, f"cannot read {path}: ")


# ------------------------------------------------------------------ what is not a file
def test_things_that_are_not_audio_files_say_what_they_are(tmp_path: Path) -> None:
    """A FIFO, a device, a broken symlink and a symlink loop all said "no such audio file"."""
    fifo = tmp_path / "fifo.wav"
    os.mkfifo(fifo)
    dangling = tmp_path / "dangling.wav"
    dangling.symlink_to(tmp_path / "gone.wav")
    loop = tmp_path / "loop1.wav"
    loop.symlink_to(tmp_path / "loop2.wav")
    (tmp_path / "loop2.wav").symlink_to(loop)
    cases = [(fifo, "is a pipe (FIFO), not an audio file"), (Path("/dev/zero"), "is a device, not an audio file"),
             (dangling, "is a broken symlink"), (loop, "is a symlink loop")]
    for path, words in cases:
        assert _load_error(path).startswith(f"BadAudioError: {path} {words}"), _load_error(path)
    assert _load_error(tmp_path / "absent.wav") == f"BadAudioError: {tmp_path / 'absent.wav'}: no such audio file"


def test_cli_fifo_is_exit_4_and_named_a_pipe(cli_env, tmp_path: Path) -> None:
    fifo = tmp_path / "fifo.wav"
    os.mkfifo(fifo)
    one_line_error(sottovoce("transcribe", str(fifo), env=cli_env), errors.EXIT_BAD_AUDIO, "pipe (FIFO)")


# ------------------------------------------------------------------ damaged headers, bad samples
def _with_rate(src: Path, dst: Path, rate: int) -> Path:
    """``src`` (a PCM WAV) with the sample rate in its header replaced: a damaged header."""
    data = bytearray(src.read_bytes())
    fmt = data.index(b"fmt ")
    data[fmt + 12:fmt + 16] = rate.to_bytes(4, "little")
    dst.write_bytes(bytes(data))
    return dst


@pytest.mark.parametrize("rate", [1, 3999, 2_000_000])
def test_an_implausible_sample_rate_is_refused_before_resampling(tmp_path: Path, rate: int) -> None:
    """A header claiming 1 Hz made 85 KB of audio resample into 9 GB (16000 times the samples)."""
    wav = tmp_path / "speech.wav"
    sf.write(str(wav), np.zeros(2000, np.float32), 16000, subtype="PCM_16")
    bad = _with_rate(wav, tmp_path / f"rate{rate}.wav", rate)
    assert sf.info(str(bad)).samplerate == rate
    with pytest.raises(BadAudioError) as err:
        load_audio(bad)
    assert str(err.value) == (f"{bad}: a sample rate of {rate} Hz is not plausible for audio (4000 to 768000 Hz "
                              "expected); the file's header is probably damaged")
    assert load_audio(_with_rate(wav, tmp_path / "ok.wav", 4000)).size == 8000     # the lowest rate taken


@pytest.mark.parametrize("bad", [np.nan, np.inf, 1e30])
def test_float_samples_that_are_not_sound_are_bad_audio(jfk: np.ndarray, tmp_path: Path, bad: float) -> None:
    """NaN, infinite or absurd float samples said "no speech heard"; loud audio still loads."""
    samples = jfk[:16000].copy()
    if bad == 1e30:
        samples *= bad
    else:
        samples[8000] = bad
    path = tmp_path / "bad.wav"
    sf.write(str(path), samples, 16000, subtype="FLOAT")
    with pytest.raises(BadAudioError, match="holds invalid samples") as err:
        load_audio(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)
    sf.write(str(path), jfk[:16000] * 50, 16000, subtype="FLOAT")   # overdriven, not broken
    assert load_audio(path).size == 16000


# ------------------------------------------------------------------ writing: atomic, streamed
def _chunk(samples: np.ndarray, rate: int = 22050):  # type: ignore[no-untyped-def]
    from daemon.messages import AudioChunk

    return AudioChunk(turn=1, samples=samples, sample_rate=rate, chunk_index=0)


def _parts(folder: Path) -> list[Path]:
    return sorted(folder.glob(".*.part"))


def test_file_sink_streams_to_a_temporary_file_and_replaces_at_close(tmp_path: Path) -> None:
    """The reply was kept in memory and written over the file at the end, even after an error."""
    from daemon.audio.sinks import AudioFileSink

    out = tmp_path / "reply.wav"
    sf.write(str(out), np.full(1000, 0.25, np.float32), 16000)
    out.chmod(0o640)
    old = out.read_bytes()
    tone = np.sin(np.arange(22050) / 10).astype(np.float32) * 0.5
    sink = AudioFileSink(out)
    sizes = []
    for _ in range(5):
        sink.write(_chunk(tone))
        (part,) = _parts(tmp_path)
        sizes.append(part.stat().st_size)
        assert out.read_bytes() == old          # the old file stays until the new one is whole
    assert sizes == sorted(sizes) and sizes[-1] >= 4 * 22050 * 2, sizes      # on disk as it comes
    assert sink.close() == out
    assert _parts(tmp_path) == []
    back, rate = sf.read(str(out), dtype="float32")
    assert rate == 22050 and back.size == 5 * 22050
    assert out.stat().st_mode & 0o777 == 0o640                 # the replaced file's permissions


def test_file_sink_discard_keeps_the_existing_file(tmp_path: Path) -> None:
    """Ctrl-C or an error in the turn: the old file as it was, no partial file left."""
    from daemon.audio.sinks import AudioFileSink

    for name in ("keep.wav", "keep.mp3", "new.flac"):
        out = tmp_path / name
        if name.startswith("keep"):
            sf.write(str(out), np.full(1000, 0.25, np.float32), 16000)
        old = out.read_bytes() if out.exists() else None
        sink = AudioFileSink(out)
        sink.write(_chunk(np.zeros(22050, np.float32)))
        sink.discard()
        sink.discard()
        assert (out.read_bytes() if out.exists() else None) == old
        assert _parts(tmp_path) == []


def test_write_audio_into_a_symlink_writes_its_target(tmp_path: Path) -> None:
    real = tmp_path / "real.wav"
    sf.write(str(real), np.zeros(100, np.float32), 16000)
    link = tmp_path / "link.wav"
    link.symlink_to(real)
    write_audio(link, np.full(3000, 0.1, np.float32), 16000)
    assert link.is_symlink() and sf.info(str(real)).frames == 3000


def test_an_out_name_that_is_not_utf8_is_refused_up_front(tmp_path: Path) -> None:
    """``--out $'o\\xff.wav'`` failed with a UnicodeEncodeError traceback after synthesis."""
    name = os.fsdecode(os.fsencode(str(tmp_path)) + b"/o\xff.wav")
    with pytest.raises(BadArgumentError, match="not valid UTF-8") as err:
        check_output_file(name)
    assert "\n" not in str(err.value)
    assert list(tmp_path.iterdir()) == []


def test_same_file_knows_links_and_spellings(tmp_path: Path) -> None:
    from daemon.audio.filewrite import same_file

    a = tmp_path / "a.wav"
    sf.write(str(a), np.zeros(100, np.float32), 16000)
    os.link(a, tmp_path / "hard.wav")
    (tmp_path / "soft.wav").symlink_to(a)
    for other in (a, tmp_path / "hard.wav", tmp_path / "soft.wav", tmp_path / "." / "x" / ".." / "a.wav"):
        assert same_file(a, str(other)), other
    assert not same_file(a, tmp_path / "b.wav")
    assert same_file(tmp_path / "b.wav", tmp_path / "." / "b.wav")


@pytest.fixture()
def small_disk(tmp_path: Path):  # type: ignore[no-untyped-def]
    """A real 256 KiB tmpfs (root only; skipped where it cannot be mounted)."""
    folder = tmp_path / "small"
    folder.mkdir()
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(folder)],
                         capture_output=True, text=True)
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({res.stderr.strip()})")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True)


def test_a_full_disk_keeps_the_old_file_and_says_so(small_disk: Path) -> None:
    """The file was truncated first, then "cannot write keep.wav (System error.)", exit 8."""
    out = small_disk / "keep.wav"
    sf.write(str(out), np.full(50_000, 0.25, np.float32), 16000)      # 100 KB of 256
    old = out.read_bytes()
    with pytest.raises(errors.SottovoceError) as err:
        write_audio(out, np.full(200_000, 0.25, np.float32), 16000)  # 400 KB: does not fit
    assert str(err.value).startswith(f"cannot write {out}: no space left on device"), err.value
    assert err.value.exit_code == errors.EXIT_FAILURE
    assert out.read_bytes() == old and _parts(small_disk) == []
