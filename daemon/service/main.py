"""`sottovoced`: the always-on service. One asyncio program; models load once and stay warm."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from typing import Any, Coroutine, NoReturn, Sequence

from daemon import __version__
from daemon.config import Config, load_config
from daemon.errors import EXIT_CONFIG, EXIT_FAILURE, EXIT_OK, ConfigError, SottovoceError

_LOGGER = logging.getLogger(__name__)
STOP_TIMEOUT_S = 2.0
LEAVE_BUS_S = 0.5            # after a stuck shutdown step: time left to give the bus name back
CANCEL_TASKS_S = 0.5         # for tasks still running when the service returns
START_EXTEND_S = 120.0       # start-up time systemd grants after each step of the first indexing


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="sottovoced",
        description="Sottovoce service: listens on the microphone, answers out loud, and is "
        "controlled over D-Bus (org.sottovoce.Assistant). Normally started by systemd "
        "(systemctl --user start sottovoce).",
    )
    p.add_argument("--version", action="version", version=f"sottovoced {__version__}")
    p.add_argument("--config", metavar="PATH", help="config file (default ~/.config/sottovoce/config.yaml)")
    p.add_argument("--input", metavar="DEVICE|FILE.wav|none",
                   help="microphone: a device name/index, a WAV file read in real time, or 'none' "
                   "(default: audio.input from the config)")
    p.add_argument("--output", metavar="DEVICE|FILE.wav",
                   help="speaker: a device name/index, or a WAV file that receives what would "
                   "have been played (default: audio.output)")
    p.add_argument("--kb", metavar="DIR", help="knowledge-base folder (overrides rag.knowledge_base)")
    p.add_argument("--reset", action="store_true", help="forget the conversation history at start")
    return p


def command_line_overrides(args: argparse.Namespace) -> list[tuple[str, str]]:
    """The config keys the command line sets. The config keeps them, and a reload applies
    them again over the re-read file."""
    overrides: list[tuple[str, str]] = []
    if args.kb is not None:     # "" stays "": refused as an empty path, not read as the cwd
        kb = args.kb.strip() and os.path.abspath(os.path.expanduser(args.kb))
        overrides.append(("rag.knowledge_base", kb))
    if args.input is not None:
        overrides.append(("audio.input", args.input))
    if args.output is not None:
        overrides.append(("audio.output", args.output))
    return overrides


def _stop_early(signum: int, _frame: Any) -> None:
    """SIGTERM before the event loop took over: leave as cleanly as SIGINT does."""
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> NoReturn:
    signal.signal(signal.SIGTERM, _stop_early)
    # OpenMP (llama.cpp, CTranslate2, torch) spins idle threads by default. On a small CPU
    # shared with the audio threads that starves everyone: measured on 2 busy cores, the LLM's
    # first token came after ~3 s spinning and ~0.4 s passive. Read when the libraries load.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    args = build_parser().parse_args(argv)
    try:
        cfg = load_config(args.config, overrides=command_line_overrides(args))
    except ConfigError as exc:
        print(f"sottovoced: {exc}", file=sys.stderr)
        sys.exit(EXIT_CONFIG)
    from daemon.service.logsetup import setup_logging

    setup_logging(cfg.service.log_level)
    try:
        code = _run_loop(Service(cfg, args).run())
    except SottovoceError as exc:
        print(f"sottovoced: {exc}", file=sys.stderr)
        code = exc.exit_code
    except KeyboardInterrupt:
        code = EXIT_OK
    _exit(code)


def _run_loop(main_coro: Coroutine[Any, Any, int]) -> int:
    """``asyncio.run`` without its last step, which waits, with no limit, for every thread of
    the loop's default executor: one stuck in model code (a torch batch of the knowledge
    base) kept the service alive long after SIGTERM. Tasks still running are cancelled and
    given ``CANCEL_TASKS_S``; threads are left to :func:`_exit`."""
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        return loop.run_until_complete(main_coro)
    finally:
        try:
            leftover = [t for t in asyncio.all_tasks(loop) if not t.done()]
            for task in leftover:
                task.cancel()
            if leftover:
                loop.run_until_complete(asyncio.wait(leftover, timeout=CANCEL_TASKS_S))
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            asyncio.set_event_loop(None)
            loop.close()          # shuts the default executor down without waiting


def _exit(code: int) -> NoReturn:
    """Leave now. Model work in a worker thread cannot be cancelled and the interpreter would
    wait for it, then spend seconds in the native libraries' teardown (llama.cpp, CTranslate2,
    onnxruntime, torch); stopping within systemd's budget matters more. Everything that had to
    be saved or closed has been by now."""
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


class Service:
    """The running service: devices, D-Bus, models, signals, and an orderly stop."""

    def __init__(self, cfg: Config, args: argparse.Namespace) -> None:
        self.cfg = cfg
        self.args = args
        self.stop = asyncio.Event()
        self.exit_code = EXIT_OK
        self.mic: Any = None

    async def run(self) -> int:
        from daemon.service.controller import AssistantController
        from daemon.service.devices import open_output
        from daemon.service.notify import Notifier

        notifier = Notifier()
        notifier.status("starting")
        ctl = AssistantController(self.cfg, None, on_fatal=self._fatal)  # type: ignore[arg-type]
        ctl.config_path = self.args.config
        ctl.loader = lambda: self._load_again(ctl, notifier)
        self._install_signals(ctl)
        # The bus first: a second instance must be refused before it opens devices or loads models.
        bus = await self._export(ctl)
        await self._check_input_file()           # a typo in --input FILE: before the models load
        self._check_output_is_not_input()        # opening the output empties it
        output = ctl.output = open_output(self.cfg, self.args.output, ctl)
        tasks = [asyncio.create_task(notifier.watchdog_loop(), name="watchdog")] \
            if self.cfg.service.watchdog else []
        ctl.subscribe(lambda ev: _status_line(notifier, ev))
        try:
            await output.start()
            if self.args.reset:
                self._reset_history()
            try:
                pipe = await self._until_stopped(self._load(ctl, notifier))
            except SottovoceError:
                pipe = None      # the service keeps serving D-Bus so the user can see why; no listening
            if not self.stop.is_set():
                if pipe is not None:
                    self.mic = await self._listen(ctl, pipe)
                notifier.ready()
                notifier.status(f"ready: {ctl.state}")
            await self.stop.wait()
        finally:
            notifier.stopping()
            _LOGGER.info("stopping")
            await self._shutdown(ctl, output, bus, tasks)
        return self.exit_code

    async def _check_input_file(self) -> None:
        """``--input FILE`` (or audio.input) must be there and decode: found out now, not
        after every model has loaded (the file is small: it is played in real time)."""
        from daemon.audio.devices import is_file_spec
        from daemon.audio.fileio import load_audio
        from daemon.errors import BadAudioError
        from daemon.threads import run_blocking

        path = self.cfg.audio.input
        if not is_file_spec(path):
            return
        try:
            await run_blocking(load_audio, path)        # every read error is a BadAudioError
        except BadAudioError as exc:
            raise BadAudioError(f"--input {exc}") from None

    def _check_output_is_not_input(self) -> None:
        """``--output`` is emptied when it is opened: the recording ``--input`` names must
        not be the same file."""
        from daemon.audio.devices import is_file_spec
        from daemon.audio.filewrite import refuse_same_file

        audio = self.cfg.audio
        if is_file_spec(audio.input) and is_file_spec(audio.output):
            refuse_same_file(audio.input, audio.output, "--input", "--output")

    async def _load_again(self, ctl: Any, notifier: Any) -> None:
        """A reload after a failed start (``ctl.loader``): the models with the config now
        in force, then the microphone; a failure is raised (and shown, as at start)."""
        pipe = await self._load(ctl, notifier)
        if self.stop.is_set() or self.mic is not None:   # stopping meanwhile: nothing to start
            return
        self.mic = await self._listen(ctl, pipe)
        notifier.status(f"ready: {ctl.state}")

    async def _listen(self, ctl: Any, pipe: Any) -> Any:
        from daemon.service.devices import open_input

        ctl.attach(pipe)
        mic = open_input(self.cfg, self.args.input, ctl)
        await mic.start()
        return mic

    async def _until_stopped(self, coro: Any) -> Any:
        """Await ``coro`` unless a stop signal comes first (then None; the work is abandoned)."""
        work = asyncio.ensure_future(coro)
        stopped = asyncio.ensure_future(self.stop.wait())
        await asyncio.wait({work, stopped}, return_when=asyncio.FIRST_COMPLETED)
        stopped.cancel()
        if work.done():
            return work.result()
        work.cancel()
        return None

    def _reset_history(self) -> None:
        from daemon.history import ConversationHistory

        conv = self.cfg.conversation
        if conv.history_file:
            ConversationHistory(conv.max_turns, conv.max_tokens, path=conv.history_file).clear()
        _LOGGER.info("conversation history cleared (--reset)")

    async def _export(self, ctl: Any) -> Any:
        from daemon.errors import AlreadyRunningError
        from daemon.service.dbus_service import export_on_bus

        try:
            return await export_on_bus(ctl)
        except AlreadyRunningError:
            raise
        except Exception as exc:   # no session bus: keep working, just without remote control
            _LOGGER.warning("no D-Bus session bus (%s); running without remote control", exc)
            return None

    async def _load(self, ctl: Any, notifier: Any) -> Any:
        """The pipeline for ``ctl.cfg``, loaded off the event loop; when it cannot be loaded
        the controller says why (State 'error', Problems 'startup') and the error is raised."""
        from daemon.pipeline import build_pipeline
        from daemon.threads import run_blocking

        def progress(msg: str) -> None:
            notifier.status(msg)
            _LOGGER.info("%s", msg)

        def indexing() -> None:
            # Embedding a large folder can outlast TimeoutStartSec: while it makes progress,
            # each step gives systemd another START_EXTEND_S (a stalled one still times out).
            notifier.notify(f"EXTEND_TIMEOUT_USEC={int(START_EXTEND_S * 1_000_000)}")
            line = ctl.knowledge_base_info().get("indexing", "")
            if line:
                notifier.status(f"indexing {line}")

        on_kb = ctl.first_indexing_follower(indexing)
        cfg = ctl.cfg
        try:
            return await run_blocking(lambda: build_pipeline(cfg, progress=progress, on_kb=on_kb))
        except SottovoceError as exc:
            ctl.startup_failed(exc.code, str(exc))
            raise

    def _install_signals(self, ctl: Any) -> None:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self._stop_signal, "SIGTERM")
        loop.add_signal_handler(signal.SIGINT, self._stop_signal, "SIGINT")
        loop.add_signal_handler(signal.SIGHUP, lambda: ctl.spawn(_reload(ctl), "reload"))

    def _stop_signal(self, name: str) -> None:
        _LOGGER.info("%s: stopping", name)
        self.stop.set()

    def _fatal(self, exc: BaseException) -> None:
        _LOGGER.error("unrecoverable failure, exiting so the service manager restarts it: %s", exc)
        self.exit_code = EXIT_FAILURE
        self.stop.set()

    async def _shutdown(self, ctl: Any, output: Any, bus: Any, tasks: list[Any]) -> None:
        step = "starting"

        async def steps() -> None:
            nonlocal step
            step = "closing the microphone"
            if self.mic is not None:
                await self.mic.stop()
            step = "stopping the controller and the knowledge base"
            await ctl.close()
            step = "closing the speaker"
            await output.stop()
            step = "leaving the bus"
            if bus is not None:
                await bus.close()
            step = "done"

        for task in tasks:
            task.cancel()
        try:
            await asyncio.wait_for(steps(), STOP_TIMEOUT_S)
        except asyncio.TimeoutError:
            _LOGGER.warning("clean shutdown took too long (over %.0f s while %s); exiting anyway",
                            STOP_TIMEOUT_S, step)
        except Exception as exc:
            _LOGGER.warning("clean shutdown failed while %s (%s); exiting anyway", step, exc, exc_info=True)
        if step != "done" and bus is not None:
            # Give the name back now: a restarted service must not find it taken.
            try:
                await asyncio.wait_for(bus.close(), LEAVE_BUS_S)
            except Exception:   # the process exits right after, which closes the connection anyway
                pass
        from daemon.threads import executor

        executor().shutdown(wait=False, cancel_futures=True)


async def _reload(ctl: Any) -> None:
    try:
        await ctl.reload()
    except SottovoceError:
        pass   # already reported as an Error event and logged


def _status_line(notifier: Any, event: Any) -> None:
    from daemon.messages import StateChanged

    if isinstance(event, StateChanged):
        notifier.status(f"state: {event.state}")


if __name__ == "__main__":   # pragma: no cover
    main()
