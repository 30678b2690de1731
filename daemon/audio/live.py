"""What the live microphone and speaker share: open, watch, and reconnect when the device goes.

A missing or vanished device is never fatal. :class:`LiveDevice` reports it once through
``on_error(message)`` (the message names the device), closes the stream, and retries every
``audio.reconnect_s`` seconds; when the device is back it calls ``on_recovered(message)``.

Loss is noticed three ways: PortAudio ending the stream on its own (the ALSA device or the
sound server went away), the callbacks stalling, and, for a named PulseAudio device, the
server reporting its removal (PulseAudio would otherwise move the stream elsewhere silently).

Every callback into the owner runs on the event loop; PortAudio's threads reach it only
through ``loop.call_soon_threadsafe`` (:meth:`LiveDevice.post`).
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from typing import Any, Callable

from daemon.audio import portaudio
from daemon.audio.portaudio import DeviceChoice, Direction
from daemon.audio.pulse import PulseWatch
from daemon.errors import NoDeviceError

_LOGGER = logging.getLogger(__name__)

MessageCallback = Callable[[str], None]
_SWITCH_INTERVAL = 0.001        # seconds; see LiveDevice.start


class LiveDevice:
    """Base of :class:`~daemon.audio.mic.Microphone` and :class:`~daemon.audio.speaker.Speaker`.

    Subclasses implement :meth:`_open` (runs in a worker thread, returns a started stream)
    and mark liveness with ``self._alive_at = time.monotonic()`` from their callback.
    """

    role = "audio device"

    def __init__(self, query: str, direction: Direction, reconnect_s: float,
                 on_error: MessageCallback | None, on_recovered: MessageCallback | None,
                 stall_s: float) -> None:
        self.query = query
        self._direction: Direction = direction
        self.reconnect_s = reconnect_s
        self._on_error = on_error
        self._on_recovered = on_recovered
        self._stall_s = stall_s
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stream: Any = None
        self._choice: DeviceChoice | None = None
        self._generation = 0            # bumped on every close: late callbacks are ignored
        self._alive_at = 0.0
        self._running = False
        self._error: str = ""
        self._tasks: set[asyncio.Task[None]] = set()
        self._watch: PulseWatch | None = None

    # ------------------------------------------------------------ public
    @property
    def connected(self) -> bool:
        """True while a stream is open on the device."""
        return self._stream is not None

    @property
    def error(self) -> str:
        """The last error message while disconnected ("" when connected)."""
        return self._error

    @property
    def device_label(self) -> str:
        """The device as messages name it."""
        return self._choice.label if self._choice else repr(self.query)

    async def start(self) -> None:
        """Open the device; when it is missing, report it and keep retrying in the background.

        Also shortens the interpreter's GIL switch interval to 1 ms (process-wide): PortAudio
        callbacks are Python and wait for the GIL, and with the default 5 ms a busy
        pure-Python worker thread starves them into underruns (measured: 0.8 s of a 3 s
        reply heard with two such threads; all of it at 1 ms).
        """
        if sys.getswitchinterval() > _SWITCH_INTERVAL:
            _LOGGER.debug("GIL switch interval %.4f s -> %.4f s", sys.getswitchinterval(), _SWITCH_INTERVAL)
            sys.setswitchinterval(_SWITCH_INTERVAL)
        self._loop = asyncio.get_running_loop()
        self._running = True
        try:
            await self._connect()
        except NoDeviceError as exc:
            self._fail(str(exc))

    async def stop(self) -> None:
        """Close the stream and stop reconnecting."""
        self._running = False
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._disconnect()

    # ------------------------------------------------------------ for subclasses
    def post(self, fn: Callable[..., None], *args: Any) -> None:
        """Run ``fn(*args)`` on the event loop (from a PortAudio thread); drop it when closed."""
        loop = self._loop
        if loop is None:
            return
        try:
            loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:      # the loop is closed: shutting down
            pass

    def _open(self, choice: DeviceChoice) -> Any:
        raise NotImplementedError

    def _on_closed(self) -> None:
        """Called on the loop after the stream closed (subclasses drop state)."""

    def _finished(self, generation: int) -> None:
        """PortAudio's finished_callback (its thread): the stream ended."""
        self.post(self._check_ended, generation)

    def _check_ended(self, generation: int) -> None:
        stream = self._stream
        # A stream closed on purpose is no longer self._stream by now.
        if stream is not None and not stream.active:
            self._lost(generation, "the audio stream ended")

    # ------------------------------------------------------------ internals
    async def _connect(self) -> None:
        choice = await asyncio.to_thread(portaudio.resolve, self.query, self._direction)
        self._generation += 1
        stream = await self._open_safely(choice)
        self._stream, self._choice = stream, choice
        self._alive_at = time.monotonic()
        _LOGGER.info("%s open: %s", self.role, choice.label)
        generation = self._generation
        self._spawn(self._watch_stall(generation), f"{self.role}-stall")
        if choice.pulse_name:
            kind = "source" if self._direction == "input" else "sink"
            self._watch = PulseWatch(kind, choice.pulse_name, lambda r: self._lost(generation, r))
            await self._watch.start()

    async def _open_safely(self, choice: DeviceChoice) -> Any:
        """Open in a worker thread; if cancelled meanwhile, close what it opened."""
        opening = asyncio.ensure_future(asyncio.to_thread(self._open_checked, choice))
        try:
            return await asyncio.shield(opening)
        except asyncio.CancelledError:
            done = await asyncio.gather(opening, return_exceptions=True)
            if not isinstance(done[0], BaseException):
                await asyncio.to_thread(portaudio.close_stream, done[0])
            raise

    def _open_checked(self, choice: DeviceChoice) -> Any:
        try:
            return self._open(choice)
        except NoDeviceError:
            raise
        except Exception as exc:  # noqa: BLE001 - PortAudio errors are untyped to us
            raise NoDeviceError(f"cannot start {self.role} {choice.label}: {exc}") from None

    async def _disconnect(self) -> None:
        self._generation += 1
        watch, self._watch = self._watch, None
        if watch is not None:
            await watch.stop()
        stream, self._stream = self._stream, None
        if stream is not None:
            await asyncio.to_thread(portaudio.close_stream, stream)
        self._on_closed()

    async def _watch_stall(self, generation: int) -> None:
        tick = max(0.1, self._stall_s / 4)
        while generation == self._generation:
            await asyncio.sleep(tick)
            if generation != self._generation:
                return
            if time.monotonic() - self._alive_at > self._stall_s:
                self._lost(generation, f"no audio callbacks for {self._stall_s:g} s")
                return

    def _lost(self, generation: int, reason: str) -> None:
        if generation != self._generation or not self._running:
            return
        self._generation += 1           # later reports of the same loss are ignored
        label = self.device_label
        self._spawn(self._recover(f"{self.role} {label} lost: {reason}"), f"{self.role}-reconnect")

    async def _recover(self, message: str) -> None:
        await self._disconnect()
        self._fail(message)

    def _fail(self, message: str) -> None:
        full = f"{message}; retrying every {self.reconnect_s:g} s"
        self._error = full
        _LOGGER.warning("%s", full)
        if self._on_error is not None:
            self._on_error(full)
        self._spawn(self._reconnect_loop(), f"{self.role}-reconnect")

    async def _reconnect_loop(self) -> None:
        last = self._error
        while self._running:
            await asyncio.sleep(self.reconnect_s)
            try:
                await self._connect()
            except NoDeviceError as exc:
                if str(exc) != last:
                    _LOGGER.info("%s still unavailable: %s", self.role, exc)
                    last = str(exc)
                continue
            self._error = ""
            message = f"{self.role} {self.device_label} is back"
            _LOGGER.info("%s", message)
            if self._on_recovered is not None:
                self._on_recovered(message)
            return

    def _spawn(self, coro: Any, name: str) -> None:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            _LOGGER.error("%s task %s failed", self.role, task.get_name(), exc_info=task.exception())
