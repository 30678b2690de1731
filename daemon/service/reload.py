"""Reload the config in place (D-Bus Reload(), SIGHUP): swap only what changed."""

from __future__ import annotations

import logging
from dataclasses import fields
from typing import TYPE_CHECKING

from daemon.config import Config, load_config
from daemon.errors import ConfigError, NotReadyError, SottovoceError
from daemon.history import ConversationHistory
from daemon.messages import Emotion, ErrorEvent, PropertyChanged
from daemon.threads import run_blocking

if TYPE_CHECKING:
    from daemon.pipeline import Pipeline
    from daemon.service.controller import AssistantController

_LOGGER = logging.getLogger(__name__)


def changed_stages(old: Config, new: Config) -> list[str]:
    """Which stages must be rebuilt because their config section changed."""
    stages = []
    if old.vad.model != new.vad.model:
        stages.append("vad")
    if old.stt != new.stt:
        stages.append("stt")
    if old.llm != new.llm:
        stages.append("llm")
    if old.tts != new.tts:
        stages.append("tts")
    if old.rag != new.rag:
        stages.append("kb")
    return stages


def restart_needed(old: Config, new: Config) -> list[str]:
    """Changed keys that only a restart applies: the devices are opened once, at start, and
    the watchdog is set up with systemd then. ``old`` is the config the service started with."""
    keys = [f"audio.{f.name}" for f in fields(old.audio)
            if getattr(old.audio, f.name) != getattr(new.audio, f.name)]
    if old.service.watchdog != new.service.watchdog:
        keys.append("service.watchdog")
    return keys


async def reload_config(ctl: "AssistantController") -> None:
    """Read the config again, the command line's overrides (``--kb``, ``--input``, ``--output``)
    still applied; rebuild only the stages whose section changed. On a bad file or a stage that
    fails to load, report it and keep everything as it was. After a start that could not load
    the models, load them all again (a failure keeps the state 'error', with the new reason,
    and is raised). Changed keys that only a restart applies (compared with the config the
    service started with) are named in an ``Error`` event (code Config) before the call returns."""
    path, overrides = ctl.config_path, ctl.cfg.overrides
    try:        # off the event loop: a pathological file must not stop the service answering
        new = await run_blocking(lambda: load_config(path, overrides=overrides))
    except SottovoceError as exc:
        ctl.report_error(exc.code, f"reload refused, keeping the running config: {exc}")
        raise
    old = ctl.cfg
    if ctl.start_failed:        # nothing runs yet: start with the new config
        ctl.cfg = new
        await _adopt(ctl, old, new)
        await _start_again(ctl)
        return
    pipe = ctl.pipe
    stages = changed_stages(old, new)
    if pipe is not None and stages:
        await _rebuild(ctl, pipe, new, stages)
    ctl.cfg = new
    if pipe is not None:
        _swap_config(ctl, pipe, old, new)
    await _adopt(ctl, old, new)


async def _start_again(ctl: "AssistantController") -> None:
    """Load the models and listen, as at start; on failure the state stays 'error' with the
    new reason (the service's loader reports it) and its error is raised."""
    if ctl.loader is None:
        raise NotReadyError("the service cannot load its models again; restart it")
    _LOGGER.info("reload: loading the models again (they could not be loaded at start)")
    ctl.starting_again()
    try:
        await ctl.loader()
    finally:
        if ctl.pipe is None and not ctl.start_failed:     # not left in 'starting'
            ctl.startup_failed("Failed", "the models could not be loaded again; see the log")


async def _adopt(ctl: "AssistantController", old: Config, new: Config) -> None:
    """What follows the new config without loading anything: the emotion, the log level;
    and the note on what only a restart applies."""
    await _follow_emotion(ctl, old, new)
    if old.service.log_level != new.service.log_level:
        logging.getLogger().setLevel(new.service.log_level)
    _LOGGER.info("config reloaded from %s", ", ".join(new.sources))
    pending = restart_needed(ctl.started_with, new)
    if pending:
        message = (f"restart the service for {', '.join(pending)} to take effect (systemctl --user "
                   "restart sottovoce); the rest of the new configuration is in force")
        _LOGGER.warning("reload: %s", message)
        ctl.hub.publish(ErrorEvent(ConfigError.code, message))


async def _rebuild(ctl: "AssistantController", pipe: "Pipeline", new: Config, stages: list[str]) -> None:
    """Load the changed stages, then swap them in; on failure the running ones stay."""
    from daemon.pipeline import build_pipeline

    _LOGGER.info("reload: rebuilding %s", ", ".join(stages))
    try:
        fresh = await run_blocking(lambda: build_pipeline(new, stages=stages))
    except SottovoceError as exc:
        ctl.report_error(exc.code, f"reload failed, keeping the running models: {exc}")
        raise
    if "kb" in stages and pipe.kb is not None:
        pipe.kb.stop()
    for name, attr in (("vad", "vad_model"), ("stt", "stt"), ("llm", "llm"), ("tts", "tts"), ("kb", "kb")):
        if name in stages:
            setattr(pipe, attr, getattr(fresh, attr))
    if "kb" in stages and pipe.kb is not None:
        ctl.watch_kb(pipe.kb)
    ctl.hub.publish(PropertyChanged("Models"))
    if "tts" in stages:
        _note_tts_fallback(ctl, new, fresh.tts)


def _note_tts_fallback(ctl: "AssistantController", new: Config, tts: object) -> None:
    """The new voice could not be loaded and its fallback speaks instead: say so in an Error
    signal (code Config, which `sottovoce reload` prints), not only in the log."""
    speaking = str(getattr(tts, "name", new.tts.engine))
    if speaking == new.tts.engine:
        return
    message = (f"tts.engine {new.tts.engine} could not be loaded (the service log says why); "
               f"speaking with {speaking} (tts.fallback) until the config is fixed and reloaded")
    _LOGGER.warning("reload: %s", message)
    ctl.hub.publish(ErrorEvent(ConfigError.code, message))


def _swap_config(ctl: "AssistantController", pipe: "Pipeline", old: Config, new: Config) -> None:
    """The new config's prompts, history limits and VAD settings for the running pipeline."""
    from daemon.service.hearing import Hearing
    from daemon.stages.prompt import PromptBuilder

    pipe.cfg = new
    pipe.prompts = PromptBuilder(new)
    if old.conversation != new.conversation:   # the new one reloads the saved turns
        pipe.history = ConversationHistory(new.conversation.max_turns, new.conversation.max_tokens,
                                           path=new.conversation.history_file or None)
    if ctl.hearing is not None:
        ctl.hearing.close()
    ctl.hearing = Hearing(new.vad, pipe, ctl)
    ctl.hearing.assistant_speaking(ctl.state in ("thinking", "speaking"))


async def _follow_emotion(ctl: "AssistantController", old: Config, new: Config) -> None:
    """A changed ``emotion.default``/``intensity`` becomes the current emotion unless one was
    chosen over D-Bus (SetEmotion) since: the current one is then kept, if the new styles
    still have it."""
    current = ctl.emotion
    untouched = current == Emotion(old.emotion.default, old.emotion.intensity)
    if untouched or current.name not in new.emotion.styles:
        if current != Emotion(new.emotion.default, new.emotion.intensity):
            await ctl.set_emotion(new.emotion.default, new.emotion.intensity)
