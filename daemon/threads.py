"""The bridge between worker threads and the event loop for inference.

Model inference (LLM tokens, TTS chunks, STT) runs in a worker thread, the whole job
inside the thread; results reach the loop only through ``call_soon_threadsafe``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from typing import AsyncIterator, Callable, Iterator, TypeVar

T = TypeVar("T")
_END = object()

_EXECUTOR = None


def executor() -> concurrent.futures.ThreadPoolExecutor:
    global _EXECUTOR
    if _EXECUTOR is None:
        _EXECUTOR = concurrent.futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="infer")
    return _EXECUTOR


async def run_blocking(fn: Callable[..., T], *args: object) -> T:
    return await asyncio.get_running_loop().run_in_executor(executor(), fn, *args)


async def iterate_in_thread(make: Callable[[], Iterator[T]]) -> AsyncIterator[T]:
    """Run the generator ``make()`` in a worker thread, yielding its items on the loop.

    If the consumer stops early, the generator is closed in its thread at the next item.
    """
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[object] = asyncio.Queue()
    stop = False

    def work() -> None:
        try:
            gen = make()
            try:
                for item in gen:
                    loop.call_soon_threadsafe(queue.put_nowait, item)
                    if stop:
                        break
            finally:
                close = getattr(gen, "close", None)
                if close:
                    close()
        except BaseException as exc:  # handed to the consumer
            loop.call_soon_threadsafe(queue.put_nowait, _Failure(exc))
        finally:
            loop.call_soon_threadsafe(queue.put_nowait, _END)

    future = loop.run_in_executor(executor(), work)
    try:
        while True:
            item = await queue.get()
            if item is _END:
                break
            if isinstance(item, _Failure):
                raise item.exc
            yield item  # type: ignore[misc]
    finally:
        stop = True
        if not future.done():
            # don't await the thread on cancellation; it finishes its current chunk alone
            future.add_done_callback(lambda f: f.exception())


class _Failure:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc
