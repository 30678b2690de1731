"""Reload the config in place (D-Bus Reload(), SIGHUP): swap only what changed."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from daemon.config import Config, load_config
from daemon.errors import SottovoceError
from daemon.history import ConversationHistory
from daemon.threads import run_blocking

if TYPE_CHECKING:
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


async def reload_config(ctl: "AssistantController") -> None:
    """Read the config again; rebuild only the stages whose section changed. On a bad file
    or a stage that fails to load, report it and keep everything as it was."""
    from daemon.pipeline import build_pipeline
    from daemon.service.hearing import Hearing

    try:
        new = load_config(getattr(ctl, "config_path", None))
    except SottovoceError as exc:
        ctl.report_error(exc.code, f"reload refused, keeping the running config: {exc}")
        raise
    pipe = ctl.pipe
    stages = changed_stages(ctl.cfg, new)
    if new.audio != ctl.cfg.audio:
        _LOGGER.warning("reload: audio device settings take effect when the service restarts")
    if pipe is not None and stages:
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
    old, ctl.cfg = ctl.cfg, new
    if pipe is not None:
        pipe.cfg = new
        from daemon.stages.prompt import PromptBuilder

        pipe.prompts = PromptBuilder(new)
        if old.conversation != new.conversation:   # the new one reloads the saved turns
            pipe.history = ConversationHistory(new.conversation.max_turns, new.conversation.max_tokens,
                                               path=new.conversation.history_file or None)
        if ctl.hearing is not None:
            ctl.hearing.close()
        ctl.hearing = Hearing(new.vad, pipe, ctl)
        ctl.hearing.assistant_speaking(ctl.state in ("thinking", "speaking"))
    if ctl.emotion.name not in new.emotion.styles:
        await ctl.set_emotion(new.emotion.default, new.emotion.intensity)
    _LOGGER.info("config reloaded from %s", ", ".join(new.sources))
