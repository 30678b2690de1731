"""Core fixtures: the effective default config and a scratch home."""

from __future__ import annotations

from pathlib import Path

import pytest

from daemon.config import Config, load_config

TESTS = Path(__file__).resolve().parent
DATA = TESTS / "data"


@pytest.fixture(scope="session")
def default_config() -> Config:
    return load_config(use_user_file=False)
