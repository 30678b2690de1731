"""`sottovoced` live on a virtual sound card: spoken questions in, spoken answers out.

One real service for the module (models load once), on a private PulseAudio server
(``micfeed.monitor`` is its microphone, ``speaker`` its loudspeaker) and a private D-Bus bus.
Questions are espeak-ng speech played into the microphone in real time; answers are recorded
from the speaker and transcribed with the real Whisper model. Every wait has a deadline on an
observable event: a D-Bus signal, a log line, or recorded sound.
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import time
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import pytest
import soundfile
from dbus_fast import DBusError

from daemon.errors import EXIT_ALREADY_RUNNING, EXIT_FAILURE, EXIT_NO_DEVICE
from daemon.service.dbus_service import ERROR_PREFIX
from daemon.stages.stt import WhisperTranscriber
from tests.fixtures_dbus import PrivateBus, start_private_bus, wait_until
from tests.fixtures_pulse import PulseRig
from tests.fixtures_service import (
    FIRST_LIT_FACT, FIRST_LIT_Q, FLASH_FACT, FLASH_Q, LONG_Q, BusThread, LiveService, ServiceFiles,
    holds, launch, sound_spans, start_live_service, write_config,
)

MIC, SPEAKER = "micfeed.monitor", "speaker"
REPLY_TIMEOUT = 90.0


@pytest.fixture(scope="module")
def live(pulse: PulseRig, module_bus: PrivateBus, service_files: ServiceFiles,
         tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveService]:
    pulse.reset(fresh=True)     # new sinks: an earlier echo canceller leaves them changed
    service = start_live_service(pulse, module_bus, service_files, tmp_path_factory.mktemp("svc"),
                                 ("--input", MIC, "--output", SPEAKER))
    yield service
    service.kill()


@pytest.fixture(scope="module")
def bus(live: LiveService, module_bus: PrivateBus) -> Iterator[BusThread]:
    client = BusThread(module_bus.address)
    yield client
    client.close()


@pytest.fixture()
def idle(bus: BusThread, live: LiveService) -> BusThread:
    """The service listening, with nothing left of the previous test."""
    assert live.proc.poll() is None, live.tail()
    if bus.get("Paused"):
        bus.call("Resume")
    bus.call("Interrupt")
    wait_until(lambda: bus.get("State") == "listening", 30, "State listening", step=0.05)
    return bus


def ask_aloud(pulse: PulseRig, bus: BusThread, wav: Path) -> tuple[str, str, list[str]]:
    """Play a question into the microphone; (transcript, reply, sources) once it was spoken."""
    mark = bus.mark()
    pulse.play_into_mic(wav)
    reply, sources = bus.wait("Reply", after=mark, timeout=REPLY_TIMEOUT)
    bus.wait_state("listening", mark, REPLY_TIMEOUT)
    transcripts = bus.since(mark, "Transcript")
    assert len(transcripts) == 1, transcripts
    return transcripts[0][0], reply, list(sources)


def first_sound_after(rec: object, start: float, timeout: float) -> float:
    """When the speaker recording first carries sound after ``start`` (monotonic time)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        audio, times = rec.audio, rec.times()   # type: ignore[attr-defined]
        times = times[: audio.size]
        loud = np.flatnonzero((np.abs(audio) > 0.02) & (times >= start))
        if loud.size:
            return float(times[loud[0]])
        time.sleep(0.02)
    raise AssertionError(f"no sound from the speaker within {timeout} s")


# ---------------------------------------------------------------- answering
def test_answers_a_spoken_question_out_loud(live: LiveService, idle: BusThread, pulse: PulseRig,
                                           spoken: Callable[[str], Path],
                                           transcriber: WhisperTranscriber) -> None:
    with pulse.record_speaker() as rec:
        start = time.monotonic()
        heard, reply, sources = ask_aloud(pulse, idle, spoken(FLASH_Q))
    assert "flash" in heard.lower(), heard
    assert holds(reply, FLASH_FACT), reply
    assert sources == ["skerrimore_lighthouse.md"]
    assert idle.get("LastReply") == reply and idle.get("LastTranscript") == heard
    # What came out of the loudspeaker, transcribed, holds the fact too.
    said, _ = transcriber.transcribe(rec.between(start))
    assert holds(said, FLASH_FACT), said
    # Live turns go into the conversation history, once the reply has been played.
    assert live.history_turns()[-1] == (heard, reply)


def test_a_pause_inside_a_question_is_not_its_end(live: LiveService, idle: BusThread, pulse: PulseRig,
                                                  spoken: Callable[[str], Path], tmp_path: Path,
                                                  service_files: ServiceFiles) -> None:
    """A reply begun at a pause (speculatively, held back) is dropped unheard when the user
    goes on talking; the whole question is answered once. The end of speech is set to 1.5 s
    here, so that the 1 s pause leaves time to start a reply on a busy machine."""
    head, rate = soundfile.read(str(spoken("When was Skerrimore Lighthouse")), dtype="float32")
    tail, _ = soundfile.read(str(spoken("first lit?")), dtype="float32")
    gap = np.zeros(int(1.0 * rate), np.float32)
    wav = tmp_path / "paused_question.wav"
    soundfile.write(str(wav), np.concatenate([gap[:4000], _trimmed(head), gap, _trimmed(tail), gap[:4000]]), rate)
    try:
        _reload(live, service_files, "vad:\n  end_silence_ms: 1500\n")
        mark, log = idle.mark(), live.mark()
        with pulse.record_speaker() as rec:
            pulse.play_into_mic(wav)
            asked_until = time.monotonic()
            reply, sources = idle.wait("Reply", after=mark, timeout=REPLY_TIMEOUT)
            idle.wait_state("listening", mark, REPLY_TIMEOUT)
    finally:
        _reload(live, service_files)
    transcripts = idle.since(mark, "Transcript")
    assert len(transcripts) == 1, transcripts
    heard = transcripts[0][0].lower()
    # Both halves were heard as one question ("first lit" comes out as "1st lead" at times).
    assert heard.startswith("when") and any(w in heard for w in ("first", "1st", "lit", "lead")), heard
    assert reply.strip(), (reply, sources)
    live.wait_line("early reply dropped", 1, log)       # the pause did start a reply
    assert not sound_spans(rec.between(0.0, asked_until - 0.05)), "the dropped reply was heard"


def _reload(live: LiveService, files: ServiceFiles, extra: str = "") -> None:
    write_config(live.config, files, live.history, extra)
    log = live.mark()
    live.proc.send_signal(signal.SIGHUP)
    live.wait_line("config reloaded", 30, log)


def _trimmed(speech: np.ndarray) -> np.ndarray:
    """Without espeak's own leading and trailing silence."""
    loud = np.flatnonzero(np.abs(speech) > 0.01)
    return speech[loud[0]: loud[-1] + 1]


def test_barge_in_stops_playback_and_answers_the_new_question(
        live: LiveService, idle: BusThread, pulse: PulseRig,
        spoken: Callable[[str], Path]) -> None:
    second = spoken(FIRST_LIT_Q)
    second_s = soundfile.info(str(second)).duration
    mark, log = idle.mark(), live.mark()
    with pulse.record_speaker() as rec:
        pulse.play_into_mic(spoken(LONG_Q))
        idle.wait_state("speaking", mark, REPLY_TIMEOUT)
        first_sound_after(rec, 0.0, 10)
        talk = time.monotonic()
        pulse.play_into_mic(second)            # the user talks over the reply
        talk_end = time.monotonic()
        (spoken_part,) = idle.wait("Interrupted", after=mark, timeout=10)
        asked, _ = idle.wait_index("Transcript", lambda b: "first" in b[0].lower(), mark, REPLY_TIMEOUT)
        answer, sources = idle.wait("Reply", after=asked, timeout=REPLY_TIMEOUT)
        idle.wait_state("listening", asked, REPLY_TIMEOUT)
    live.wait_line("barge-in", 1, log)
    # Playback went silent while the user was still talking, and stayed so until the answer.
    spans = sound_spans(rec.between(talk))
    assert spans, "nothing was recorded"
    assert spans[0][1] < min(talk_end - talk, second_s), (spans, talk_end - talk)
    assert len(spans) >= 2, "the second question was not answered out loud"
    assert answer.strip(), (answer, sources)      # a misheard "first lead" may go unsourced
    # The history keeps only what was actually heard of the interrupted reply.
    turns = live.history_turns()
    interrupted = [a for q, a in turns if "everything" in q.lower()]
    assert interrupted and interrupted[-1] == spoken_part
    assert len(spoken_part.split()) < 60


def test_a_short_click_does_not_interrupt(live: LiveService, idle: BusThread, pulse: PulseRig,
                                          spoken: Callable[[str], Path], tmp_path: Path) -> None:
    click = _clicks(tmp_path / "click.wav", spoken(FLASH_Q))
    mark, log = idle.mark(), live.mark()
    with pulse.record_speaker() as rec:
        pulse.play_into_mic(spoken(LONG_Q))
        idle.wait_state("speaking", mark, REPLY_TIMEOUT)
        first_sound_after(rec, 0.0, 10)
        pulse.play_into_mic(click)             # a 100 ms noise click, then a 100 ms voiced blip
        click_end = time.monotonic()
        idle.wait("Reply", after=mark, timeout=REPLY_TIMEOUT)
        idle.wait_state("listening", mark, REPLY_TIMEOUT)
        done = time.monotonic()
    assert idle.since(mark, "Interrupted") == []
    text = live.text(log)
    assert "barge-in" not in text
    # The reply was still playing after the clicks, and all of it reached the speaker
    # (a hold may stretch it; nothing may be dropped).
    after = sound_spans(rec.between(click_end, done))
    assert after and after[0][0] < 0.1, after
    spans = sound_spans(rec.between(0.0, done))
    played = re.findall(r"turn \d+: ([\d.]+) s of reply audio played", text)
    assert played, text
    print(f"\nreply sound from {spans[0][0]:.2f} to {spans[-1][1]:.2f} s; {played[-1]} s of audio played")
    assert spans[-1][1] - spans[0][0] > float(played[-1]) - 0.4, (spans, played)


def _clicks(path: Path, speech_wav: Path) -> Path:
    """0.2 s silence, a 100 ms noise burst, 0.5 s silence, 100 ms of loud speech, 0.2 s silence."""
    speech, rate = soundfile.read(str(speech_wav), dtype="float32")
    level = np.sqrt(np.convolve(speech ** 2, np.ones(1600) / 1600, mode="valid"))
    blip = speech[int(np.argmax(level)): int(np.argmax(level)) + 1600]
    noise = np.random.default_rng(7).normal(0, 0.3, 1600).astype(np.float32)
    gap = lambda s: np.zeros(int(s * rate), np.float32)   # noqa: E731
    soundfile.write(str(path), np.concatenate([gap(0.2), noise, gap(0.5), blip, gap(0.2)]), rate)
    return path


# ---------------------------------------------------------------- pause
def test_nothing_is_heard_while_paused(live: LiveService, idle: BusThread, pulse: PulseRig,
                                       spoken: Callable[[str], Path]) -> None:
    mark, log = idle.mark(), live.mark()
    idle.call("Pause")
    idle.wait_state("paused", mark, 10)
    with pulse.record_speaker() as rec:
        pulse.play_into_mic(spoken(FIRST_LIT_Q))
        resumed = time.monotonic()
        idle.call("Resume")
        heard, reply, _ = ask_aloud(pulse, idle, spoken(FLASH_Q))
    # Only the question asked after Resume was heard, transcribed and answered.
    assert idle.since(mark, "Transcript") == [[heard]] and "flash" in heard.lower()
    assert idle.states(mark)[:2] == ["paused", "listening"]
    assert "utterance" not in live.text(log).split("state: listening")[0]
    assert not sound_spans(rec.between(0.0, resumed)), "the paused question got a spoken reply"
    assert reply.strip()


# ---------------------------------------------------------------- memory, errors
def test_text_asks_share_the_bounded_history(live: LiveService, idle: BusThread) -> None:
    mark = idle.mark()
    reply, sources = idle.call("Ask", "s", [FIRST_LIT_Q])
    assert holds(reply, FIRST_LIT_FACT) and "skerrimore_lighthouse.md" in sources
    idle.wait_state("listening", mark, 60)          # remembered once it has been spoken
    turns = live.history_turns()
    assert turns[-1] == (FIRST_LIT_Q, reply)
    assert len(turns) == 3                          # conversation.max_turns in the test config
    assert any("flash" in q.lower() for q, _ in turns[:-1]), "no live turn next to the Ask"


# ---------------------------------------------------------------- config reload
def test_sighup_reloads_the_config(live: LiveService, idle: BusThread,
                                   service_files: ServiceFiles) -> None:
    with pytest.raises(DBusError):
        idle.call("SetEmotion", "sd", ["pirate", 0.5])
    styles = ("emotion:\n  styles:\n    neutral: Answer plainly.\n"
              "    pirate: Answer like a cheerful pirate.\n")
    try:
        write_config(live.config, service_files, live.history, styles)
        log = live.mark()
        live.proc.send_signal(signal.SIGHUP)
        live.wait_line("config reloaded", 30, log)
        idle.call("SetEmotion", "sd", ["pirate", 0.5])
        assert list(idle.get("Emotion")) == ["pirate", 0.5]
    finally:
        write_config(live.config, service_files, live.history)
        log = live.mark()
        live.proc.send_signal(signal.SIGHUP)
        live.wait_line("config reloaded", 30, log)
    # The style is gone again: the emotion falls back to the default.
    assert list(idle.get("Emotion"))[0] == "neutral"
    assert live.proc.poll() is None and idle.get("State") == "listening"


# ---------------------------------------------------------------- devices
def test_the_microphone_vanishes_and_comes_back(live: LiveService, idle: BusThread,
                                                pulse_clean: PulseRig,
                                                spoken: Callable[[str], Path]) -> None:
    mark = idle.mark()
    pulse_clean.remove_device("micfeed")
    code, message = idle.wait("Error", after=mark, timeout=30)
    assert code == "Device" and MIC in message, message
    idle.wait_state("error", mark, 30)
    assert idle.get("State") == "error"
    mark = idle.mark()
    pulse_clean.restore_device("micfeed")
    idle.wait_state("listening", mark, 30)
    heard, reply, sources = ask_aloud(pulse_clean, idle, spoken(FLASH_Q))
    assert reply.strip() and "skerrimore_lighthouse.md" in sources, (heard, reply, sources)
    assert live.proc.poll() is None


def test_without_a_speaker_say_is_refused_and_an_answer_is_not_claimed_as_spoken(
        live: LiveService, idle: BusThread, pulse_clean: PulseRig, module_bus: PrivateBus) -> None:
    """The speaker goes away: the state is 'error' and Problems (and `sottovoce status`) say
    why; Say is refused with NoDevice (it said nothing yet returned success); an Ask still
    gets its text, with an Error that it was not spoken (it had been logged as played), and
    the history keeps nothing of it; `sottovoce ask` prints it and exits 11, as `say` does."""
    from tests.fixtures_dbus import run_cli

    mark = idle.mark()
    pulse_clean.remove_device("speaker")
    code, message = idle.wait("Error", after=mark, timeout=30)
    assert code == "Device" and SPEAKER in message, message
    wait_until(lambda: idle.get("State") == "error", 30, "State error", step=0.05)
    problems = dict(idle.get("Problems"))
    assert list(problems) == ["speaker"] and SPEAKER in problems["speaker"], problems
    out = run_cli(module_bus.env, "status")
    assert f"problem:       speaker: {problems['speaker']}" in out.stdout, out.stdout
    out = run_cli(module_bus.env, "resume")
    assert out.returncode == 0 and out.stdout.startswith("listening, but the state is error: speaker: "), out.stdout

    with pytest.raises(DBusError) as refused:
        idle.call("Say", "s", ["Dinner is ready at seven thirty."])
    assert refused.value.type == ERROR_PREFIX + "NoDevice" and "nothing was said" in refused.value.text
    mark = idle.mark()
    reply, _sources = idle.call("Ask", "s", ["How tall is Skerrimore Lighthouse?"], timeout=REPLY_TIMEOUT)
    assert reply.strip()
    code, message = idle.wait("Error", lambda b: b[0] == "Device" and "was not spoken" in b[1],
                              after=mark, timeout=30)
    assert "no speaker" in message, message
    # Nothing was heard: the history and LastReply keep nothing of it (they kept it all).
    wait_until(lambda: live.history_turns()[-1:] == [("How tall is Skerrimore Lighthouse?", "")], 30,
               f"the unheard reply kept as nothing: {live.history_turns()[-1:]}", step=0.05)
    assert idle.get("LastReply") == ""

    # `sottovoce ask` prints the reply yet says it was not spoken, with `say`'s exit code (it exited 0).
    question = "When was Skerrimore Lighthouse first lit?"
    out = run_cli(module_bus.env, "ask", question, timeout=REPLY_TIMEOUT)
    assert out.returncode == EXIT_NO_DEVICE, (out.returncode, out.stdout, out.stderr)
    assert out.stdout.strip() and "sources: " in out.stdout, out.stdout
    assert out.stderr.count("\n") == 1 and "the reply was not spoken: " in out.stderr, out.stderr
    assert SPEAKER in out.stderr, out.stderr
    wait_until(lambda: live.history_turns()[-1:] == [(question, "")], 30, "the CLI's question kept unheard",
               step=0.05)
    # With --json, the unspoken reply is still the one JSON object `ask --json` prints.
    out = run_cli(module_bus.env, "ask", "--json", question, timeout=REPLY_TIMEOUT)
    assert out.returncode == EXIT_NO_DEVICE, (out.returncode, out.stdout, out.stderr)
    reply = json.loads(out.stdout)
    assert reply["transcript"] == question and reply["reply"] and reply["sources"], reply

    pulse_clean.restore_device("speaker")
    wait_until(lambda: idle.get("State") == "listening", 30, "State listening", step=0.05)
    assert dict(idle.get("Problems")) == {}
    assert live.proc.poll() is None


def test_a_speaker_lost_in_the_middle_of_a_reply_cuts_it_short(
        live: LiveService, idle: BusThread, pulse_clean: PulseRig) -> None:
    """The speaker vanishes while a long reply plays: like a barge-in, only what was heard is
    kept (LastReply, the history, the Interrupted signal), and an Error says why."""
    mark = idle.mark()
    reply, _sources = idle.call("Ask", "s", ["Tell me a long story about a dragon who bakes bread."],
                                timeout=REPLY_TIMEOUT)
    idle.wait_state("speaking", mark, 30)
    time.sleep(1.5)
    pulse_clean.remove_device("speaker")
    (heard,) = idle.wait("Interrupted", after=mark, timeout=30)
    code, message = idle.wait("Error", lambda b: "lost during the reply" in b[1], after=mark, timeout=30)
    assert code == "Device"
    assert heard and len(heard) < len(reply) and reply.startswith(heard.split()[0]), (heard, reply)
    wait_until(lambda: idle.get("LastReply") == heard, 10, "LastReply = the part heard")
    assert live.history_turns()[-1][1] == heard
    pulse_clean.restore_device("speaker")
    wait_until(lambda: idle.get("State") == "listening", 30, "State listening", step=0.05)


def test_say_with_no_words_is_refused(idle: BusThread) -> None:
    with pytest.raises(DBusError) as refused:
        idle.call("Say", "s", ["🎉 🎉"])
    assert refused.value.type == ERROR_PREFIX + "InvalidArgument" and "nothing to say" in refused.value.text


# ---------------------------------------------------------------- process
def test_a_second_instance_refuses_to_start(live: LiveService, pulse: PulseRig,
                                            module_bus: PrivateBus, service_files: ServiceFiles,
                                            tmp_path: Path) -> None:
    second = launch(pulse, module_bus, service_files, tmp_path, ("--input", "none"))
    try:
        code = second.proc.wait(60)
    finally:
        second.kill()
    assert code == EXIT_ALREADY_RUNNING, second.tail()
    assert "sottovoced: another sottovoced already owns org.sottovoce.Assistant" in second.text()
    assert "loading" not in second.text()     # refused before loading any model
    assert live.proc.poll() is None


def test_reset_forgets_the_history_and_sigint_stops_it_while_loading(
        pulse: PulseRig, tmp_path: Path) -> None:
    files = ServiceFiles(tmp_path, tmp_path / "kb", tmp_path / "index")   # its own index
    history = tmp_path / "svc" / "history.json"
    history.parent.mkdir()
    history.write_text(json.dumps({"turns": [["What was asked before?", "An old answer."]]}))
    service = launch(pulse, None, files, tmp_path / "svc", ("--reset", "--input", "none"))
    try:
        service.wait_line("conversation history cleared", 60)
        assert json.loads(history.read_text()) == {"turns": []}
        code, took = service.signal_and_wait(signal.SIGINT)   # models still loading
    finally:
        service.kill()
    assert code == 0, service.tail()
    assert took < 3.0, took


def test_stage_failures_are_reported_and_five_in_a_row_exit_for_a_restart(
        pulse: PulseRig, service_files: ServiceFiles, spoken: Callable[[str], Path], tmp_path: Path) -> None:
    """The speech program disappears under the running service (as an upgrade that removes
    espeak-ng would do; here the link to it on the service's PATH is deleted): each reply fails
    with an error nobody planned for, reported as Error("Stage") while the service keeps
    listening, and answers again once the program is back. Five such failures in a row mean
    something is broken for good: the service exits non-zero so that systemd restarts it
    afresh. A success in between resets the count."""
    tools = tmp_path / "bin"
    tools.mkdir()
    program = tools / "espeak-ng"
    real = shutil.which("espeak-ng")
    assert real, "espeak-ng is not installed (make setup)"
    program.symlink_to(real)
    bus = start_private_bus(tmp_path / "bus")
    service = start_live_service(pulse, bus, service_files, tmp_path / "svc",
                                 extra_config="tts:\n  engine: espeak\n", path_first=tools)
    client: BusThread | None = None
    try:
        client = BusThread(bus.address)
        wait_until(lambda: client.get("State") == "listening", 60, "the service listening")

        def fail() -> None:
            with pytest.raises(DBusError) as err:
                client.call("Say", "s", ["Hello there."])
            assert err.value.type == ERROR_PREFIX + "Stage", err.value

        program.unlink()
        mark = client.mark()
        fail()
        code, message = client.wait("Error", after=mark, timeout=10)
        assert code == "Stage" and "still listening" in message and "FileNotFoundError" in message
        client.wait_state("listening", mark, 30)
        assert service.proc.poll() is None
        program.symlink_to(real)
        heard, reply, sources = ask_aloud(pulse, client, spoken(FLASH_Q))
        assert reply.strip() and "skerrimore_lighthouse.md" in sources, (heard, reply, sources)

        program.unlink()
        for _ in range(4):
            fail()
        program.symlink_to(real)
        client.call("Say", "s", ["Hello."])         # a success: the failures are no longer in a row
        program.unlink()
        for _ in range(4):
            fail()
        assert service.proc.poll() is None          # four in a row: still serving
        with pytest.raises(Exception):     # the fifth: an error, or the bus connection gone
            client.call("Say", "s", ["Hello there."], timeout=30)
        code = service.proc.wait(30)
    finally:
        if client is not None:
            client.close()
        service.kill()
        bus.stop()
    assert code == EXIT_FAILURE, service.tail()
    assert "unrecoverable failure, exiting so the service manager restarts it" in service.text()


def test_sigterm_stops_within_3_seconds(live: LiveService, idle: BusThread) -> None:
    code, took = live.signal_and_wait(signal.SIGTERM)
    assert code == 0, live.tail()
    assert took < 3.0, took
    assert "SIGTERM: stopping" in live.text()

