"""Config: defaults, key-by-key overrides, and one-line errors naming file, key, expectation."""

from __future__ import annotations

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


@pytest.mark.parametrize("text,needle", [
    ("vad:\n  end_silence_ms: fast\n", "vad.end_silence_ms: expected an integer"),
    ("vad:\n  threshold: 3\n", "vad.threshold: expected a value from 0.01 to 0.99"),
    ("vad:\n  treshold: 0.4\n", "vad.treshold: unknown key"),
    ("llm:\n  engine: gpt\n", "llm.engine: expected one of llamacpp, openai"),
    ("nonsense: 1\n", "nonsense: unknown section"),
    ("stt: [1, 2]\n", "stt: expected a mapping"),
    ("emotion:\n  default: grumpy\n", "emotion.default: expected one of"),
    ("vad: {threshold: 0.5\n", "is not valid YAML"),
])
def test_bad_values_name_file_key_and_expectation(tmp_path: Path, text: str, needle: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    msg = str(info.value)
    assert str(path) in msg and needle in msg and "\n" not in msg


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
