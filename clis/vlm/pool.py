"""A fixed pool of daemon threads for requests to served models.

``concurrent.futures.ThreadPoolExecutor`` joins its worker threads when the interpreter exits,
so a run interrupted with Ctrl-C would wait for every request in flight, up to the request
timeout (two minutes by default), before it could exit. Requests hold no state worth
finishing, so these workers are daemon threads that die with the process.

Example:
    >>> pool = DaemonPool(2, "example")
    >>> pool.map(lambda x: x * x, [1, 2, 3])
    [1, 4, 9]
    >>> pool.shutdown()
"""

from __future__ import annotations

import queue
import threading
from concurrent.futures import Future
from typing import Any, Callable, Iterable


class DaemonPool:
    """``submit(fn, *args) -> Future`` on ``workers`` daemon threads; ``shutdown()`` never waits."""

    def __init__(self, workers: int, name: str):
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._workers = max(1, int(workers))
        for index in range(self._workers):
            threading.Thread(target=self._work, name=f"{name}-{index}", daemon=True).start()

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            future, fn, args = item
            if not future.set_running_or_notify_cancel():
                continue  # cancelled while it waited in the queue
            try:
                result = fn(*args)
            except BaseException as exc:  # noqa: BLE001 -- handed to whoever waits on the future
                future.set_exception(exc)
            else:
                future.set_result(result)

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future:
        future: Future = Future()
        self._queue.put((future, fn, args))
        return future

    def map(self, fn: Callable[[Any], Any], items: Iterable[Any]) -> list[Any]:
        """``[fn(item) for item in items]``, run on the pool, in order; the first exception is raised."""
        futures = [self.submit(fn, item) for item in items]
        try:
            return [future.result() for future in futures]
        finally:
            for future in futures:
                future.cancel()

    def shutdown(self) -> None:
        """Let the workers end once they are idle; requests still queued are dropped by their callers."""
        for _ in range(self._workers):
            self._queue.put(None)
