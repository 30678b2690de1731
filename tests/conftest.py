"""Shared pytest setup. Fixtures live in one module per area (loaded below), each loading
its models once per test run (session scope)."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

pytest_plugins = [
    "tests.fixtures_core",
    "tests.fixtures_kb",
    "tests.fixtures_audio",
    "tests.fixtures_dbus",
    "tests.fixtures_x11",
    "tests.fixtures_gpu",
    "tests.fixtures_pulse",
    "tests.fixtures_service",
    "tests.fixtures_quality",
]
