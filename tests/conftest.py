"""Shared pytest setup. Fixtures live in one module per area (loaded below), each loading
its models once per test run (session scope)."""

from __future__ import annotations

import os

import pytest

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


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A test on the virtual sound card runs once more if the sound server died under it
    (PulseAudio's own crash, see tests/fixtures_pulse.py; pytest-rerunfailures shows it as R)."""
    from tests.fixtures_pulse import sound_server_died

    for item in items:
        if "pulse" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.flaky(reruns=1, condition=sound_server_died))


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    from tests.fixtures_pulse import note_test_start

    note_test_start()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    """A failed test that used a live `sottovoced` shows the end of its log in the report."""
    outcome = yield
    report = outcome.get_result()
    args = getattr(item, "funcargs", {})
    service = args.get("live") or args.get("echo_live")
    if report.when == "call" and report.failed and hasattr(service, "text"):
        report.sections.append(("sottovoced log (end)", service.text()[-6000:]))
