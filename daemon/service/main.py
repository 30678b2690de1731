"""`sottovoced`: the always-on service. One asyncio program; models load once and stay warm."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from typing import Any, Sequence

from daemon import __version__
from daemon.config import Config, load_config
from daemon.errors import (
    EXIT_CONFIG, EXIT_FAILURE, EXIT_OK, AlreadyRunningError, ConfigError, SottovoceError,
)

_LOGGER = logging.getLogger(__name__)
STOP_TIMEOUT_S = 2.5


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


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    args = build_parser().parse_args(argv)
    try:
        cfg = load_config(args.config)
    except ConfigError as exc:
        print(f"sottovoced: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    if args.kb:
        cfg = cfg.replace("rag", knowledge_base=os.path.abspath(os.path.expanduser(args.kb)))
    from daemon.service.logsetup import setup_logging

    setup_logging(cfg.service.log_level)
    try:
        return asyncio.run(Service(cfg, args).run())
    except AlreadyRunningError as exc:
        print(f"sottovoced: {exc}", file=sys.stderr)
        return exc.exit_code
    except SottovoceError as exc:
        print(f"sottovoced: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return EXIT_OK


class Service:
    def __init__(self, cfg: Config, args: argparse.Namespace) -> None:
        self.cfg = cfg
        self.args = args
        self.stop = asyncio.Event()
        self.exit_code = EXIT_OK

    async def run(self) -> int:
        from daemon.service.controller import AssistantController
        from daemon.service.devices import open_input, open_output
        from daemon.service.notify import Notifier

        notifier = Notifier()
        notifier.status("starting")
        ctl = AssistantController(self.cfg, None, on_fatal=self._fatal)  # type: ignore[arg-type]
        ctl.config_path = self.args.config  # type: ignore[attr-defined]
        output = ctl.output = open_output(self.cfg, self.args.output, ctl)
        await output.start()
        bus = await self._export(ctl)
        self._install_signals(ctl)
        tasks = [asyncio.create_task(notifier.watchdog_loop(), name="watchdog")] \
            if self.cfg.service.watchdog else []
        ctl.subscribe(lambda ev: _status_line(notifier, ctl, ev))
        mic = None
        try:
            pipe = await self._load(ctl, notifier)
            if pipe is not None:
                if self.args.reset:
                    pipe.history.clear()
                ctl.attach(pipe)
                mic = open_input(self.cfg, self.args.input, ctl)
                await mic.start()
            notifier.ready()
            notifier.status(f"ready: {ctl.state}")
            await self.stop.wait()
        finally:
            notifier.stopping()
            await self._shutdown(ctl, mic, output, bus, tasks)
        return self.exit_code

    async def _export(self, ctl: Any) -> Any:
        from daemon.service.dbus_service import export_on_bus

        try:
            return await export_on_bus(ctl)
        except AlreadyRunningError:
            raise
        except Exception as exc:   # no session bus: keep working, just without remote control
            _LOGGER.warning("no D-Bus session bus (%s); running without remote control", exc)
            return None

    async def _load(self, ctl: Any, notifier: Any) -> Any:
        from daemon.pipeline import build_pipeline
        from daemon.threads import run_blocking

        def progress(msg: str) -> None:
            notifier.status(msg)
            _LOGGER.info("%s", msg)

        try:
            return await run_blocking(lambda: build_pipeline(self.cfg, progress=progress))
        except SottovoceError as exc:
            # The service keeps serving D-Bus so the user can see why; no listening.
            ctl.report_error(exc.code, str(exc))
            ctl._set_state("error")
            return None

    def _install_signals(self, ctl: Any) -> None:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self.stop.set)
        loop.add_signal_handler(signal.SIGINT, self.stop.set)
        loop.add_signal_handler(signal.SIGHUP, lambda: asyncio.ensure_future(_reload(ctl)))

    def _fatal(self, exc: BaseException) -> None:
        _LOGGER.error("unrecoverable failure: %s", exc)
        self.exit_code = EXIT_FAILURE
        self.stop.set()

    async def _shutdown(self, ctl: Any, mic: Any, output: Any, bus: Any, tasks: list[Any]) -> None:
        async def steps() -> None:
            if mic is not None:
                await mic.stop()
            await ctl.close()
            await output.stop()
            if bus is not None:
                await bus.close()

        for task in tasks:
            task.cancel()
        try:
            await asyncio.wait_for(steps(), STOP_TIMEOUT_S)
        except (asyncio.TimeoutError, Exception):
            _LOGGER.warning("clean shutdown took too long or failed", exc_info=True)
        if ctl.hearing is not None:
            ctl.hearing.close()
        from daemon.threads import executor

        executor().shutdown(wait=False, cancel_futures=True)


async def _reload(ctl: Any) -> None:
    try:
        await ctl.reload()
    except SottovoceError:
        pass   # already reported as an Error event and logged


def _status_line(notifier: Any, ctl: Any, event: Any) -> None:
    from daemon.messages import StateChanged

    if isinstance(event, StateChanged):
        notifier.status(f"state: {event.state}")


if __name__ == "__main__":   # pragma: no cover
    sys.exit(main())
