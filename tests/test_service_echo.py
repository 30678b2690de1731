"""Echo: the assistant must not take its own voice, leaking back into the microphone, for the user.

The virtual card gets a loopback from the speaker into the microphone at -10.5 dB (a laptop's
loudspeaker heard by its own microphone), and PulseAudio's WebRTC ``module-echo-cancel``,
its source and sink set as the defaults: the service runs on the "default" devices, as a desktop
user would after ``pactl load-module module-echo-cancel`` (README). With the canceller the
reply plays to its end. The control shows the setup is not vacuous: with the service's
microphone moved to the raw, uncancelled source, the same leak makes it interrupt itself
(the stricter ``vad.speaking_threshold`` alone does not save it at this level).
"""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Callable, Iterator

import pytest

from daemon.stages.stt import WhisperTranscriber
from bench.util import espeak_wav
from tests.fixtures_dbus import PrivateBus, wait_until
from tests.fixtures_pulse import EchoCancel, PulseRig
from tests.fixtures_service import (
    LONG_Q, BusThread, LiveService, ServiceFiles, similar, sound_spans, start_live_service,
)

LEAK_VOLUME = 0.3            # linear: -10.5 dB from the speaker into the microphone
EC_SOURCE, EC_SINK = "sottovoce_mic", "sottovoce_speaker"
# The recommended setup (README): the extended filter copes with an echo path whose delay the
# server only estimates (without it 1 reply in 6 was cut short here); no automatic gain
# control, which would turn the microphone's volume down under the test's feet.
AEC_ARGS = "extended_filter=1 analog_gain_control=0 digital_gain_control=0"
REPLY_TIMEOUT = 90.0
WARM_UP_TEXT = ("The canceller learns the room from whatever the speaker plays. This is a "
                "few seconds of speech played through the echo-cancelled sink while the "
                "assistant is paused, as music or an earlier reply would be.")


@pytest.fixture(scope="module")
def echo_card(pulse: PulseRig) -> Iterator[tuple[PulseRig, EchoCancel]]:
    """The card with the leak and the canceller; the canceller's devices are the defaults."""
    pulse.reset(fresh=True)
    module = int(pulse.pactl(
        "load-module", "module-echo-cancel", "aec_method=webrtc",
        f"source_master={pulse.mic}.monitor", f"sink_master={pulse.speaker}",
        f"source_name={EC_SOURCE}", f"sink_name={EC_SINK}", f'aec_args="{AEC_ARGS}"'))
    canceller = EchoCancel(EC_SOURCE, EC_SINK, module)
    pulse.pactl("set-default-source", canceller.source)
    pulse.pactl("set-default-sink", canceller.sink)
    pulse.add_echo_loopback(volume=LEAK_VOLUME)
    try:
        yield pulse, canceller
    finally:
        pulse.unload_module(module)
        pulse.reset(fresh=True)      # the canceller leaves the sinks changed


@pytest.fixture(scope="module")
def echo_live(echo_card: tuple[PulseRig, EchoCancel], module_bus: PrivateBus,
              service_files: ServiceFiles,
              tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveService]:
    rig, _ = echo_card
    service = start_live_service(rig, module_bus, service_files, tmp_path_factory.mktemp("echo"))
    yield service
    service.kill()


@pytest.fixture(scope="module")
def bus(echo_live: LiveService, module_bus: PrivateBus) -> Iterator[BusThread]:
    client = BusThread(module_bus.address)
    yield client
    client.close()


def _warm_up(rig: PulseRig, canceller: EchoCancel, bus: BusThread, folder: Path) -> None:
    """Let a fresh canceller adapt, the assistant paused (a fresh WebRTC canceller needs a few
    seconds of far-end sound; before that, its residual can still sound like speech)."""
    mark = bus.mark()
    bus.call("Pause")
    bus.wait_state("paused", mark, 10)
    rig.play_into_mic(espeak_wav(WARM_UP_TEXT, folder / "warm.wav"), device=canceller.sink)
    mark = bus.mark()
    bus.call("Resume")
    bus.wait_state("listening", mark, 10)


def test_with_the_canceller_the_reply_plays_to_the_end(
        echo_card: tuple[PulseRig, EchoCancel], echo_live: LiveService, bus: BusThread,
        spoken: Callable[[str], Path], transcriber: WhisperTranscriber, tmp_path: Path) -> None:
    rig, canceller = echo_card
    _warm_up(rig, canceller, bus, tmp_path)
    mark, log = bus.mark(), echo_live.mark()
    with rig.record_speaker() as rec:
        rig.play_into_mic(spoken(LONG_Q))
        asked = time.monotonic()
        reply, _ = bus.wait("Reply", after=mark, timeout=REPLY_TIMEOUT)
        bus.wait_state("listening", mark, REPLY_TIMEOUT)
    assert bus.since(mark, "Interrupted") == [], echo_live.text(log) + str(bus.since(mark))
    assert "barge-in" not in echo_live.text(log) and "playback held" not in echo_live.text(log)
    assert bus.states(mark) == ["hearing", "thinking", "speaking", "listening"]
    assert len(bus.since(mark, "Transcript")) == 1
    # The whole reply came out of the speaker (and so leaked into the microphone).
    assert sound_spans(rec.between(asked)), "nothing was played"
    said, _ = transcriber.transcribe(rec.between(asked))
    assert similar(said, reply) >= 0.6, (reply, said)


def test_control_without_the_canceller_the_echo_interrupts(
        echo_card: tuple[PulseRig, EchoCancel], echo_live: LiveService, bus: BusThread,
        spoken: Callable[[str], Path]) -> None:
    rig, canceller = echo_card
    mark, log = bus.mark(), echo_live.mark()
    rig.pactl("set-default-source", f"{rig.mic}.monitor")    # the raw microphone
    try:
        rig.play_into_mic(spoken(LONG_Q))
        # Its own voice is taken for the user's: the reply is held (it stutters) or cut
        # short, while it was speaking and nobody else was.
        echo_live.wait_line("playback held|barge-in", REPLY_TIMEOUT, log)
        assert bus.get("State") == "speaking" or "speaking" in bus.states(mark), bus.states(mark)
    finally:
        stop = bus.mark()
        bus.call("Pause")                   # the echo keeps "asking": stop listening first
        bus.call("Interrupt")
        bus.wait_state("paused", stop, 30)
        rig.pactl("set-default-source", canceller.source)
        bus.call("Resume")
        wait_until(lambda: bus.get("State") == "listening", 30, "State listening")


def test_sigint_stops_within_3_seconds(echo_live: LiveService, bus: BusThread) -> None:
    code, took = echo_live.signal_and_wait(signal.SIGINT)
    assert code == 0, echo_live.tail()
    assert took < 3.0, took
    assert "SIGINT: stopping" in echo_live.text()
