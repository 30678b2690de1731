"""Core fixtures: the effective default config, a scratch environment for CLI runs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Callable

import pytest

from daemon.config import Config, load_config

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
DATA = TESTS / "data"


def sottovoce(*args: str, env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """The `sottovoce` CLI, run as a user would (its own process, ``env``)."""
    return subprocess.run([sys.executable, "-m", "daemon.cli.main", *args], capture_output=True,
                          text=True, env=env, timeout=timeout, cwd=ROOT)


def one_line_error(res: subprocess.CompletedProcess[str], code: int, *words: str, ignore: str = "") -> None:
    """Exit ``code``, one line on stderr holding ``words``, no traceback. Lines starting with
    ``ignore`` (a note the run may print first) are not counted."""
    assert res.returncode == code, (res.returncode, res.stderr)
    lines = [line for line in res.stderr.splitlines() if line.strip() and not (ignore and line.startswith(ignore))]
    assert len(lines) == 1 and "Traceback" not in res.stderr, res.stderr
    for word in words:
        assert word in res.stderr, res.stderr


@pytest.fixture(scope="session")
def default_config() -> Config:
    return load_config(use_user_file=False)


@pytest.fixture(scope="session")
def scratch_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A HOME for subprocesses, so tests never touch the user's config, index or history."""
    home = tmp_path_factory.mktemp("home")
    (home / ".config").mkdir()
    return home


@pytest.fixture(scope="session")
def cli_env(scratch_home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("XDG_", "DBUS_"))}
    env.update(HOME=str(scratch_home), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               DBUS_SESSION_BUS_ADDRESS="unix:path=/nonexistent/sottovoce-test-bus")
    return env


@pytest.fixture(scope="session")
def espeak() -> Callable[..., Path]:
    """Make spoken test audio: (text, out, voice, speed) -> 16 kHz mono 16-bit WAV."""
    from bench.util import espeak_wav

    return espeak_wav
