"""A latest-only slot and the one worker thread that drains it (no rclpy here).

The depth node's executor callbacks only :meth:`LatestSlot.put` the newest frame; the worker thread
takes it and runs inference. A frame still in the slot when a newer one arrives is replaced and
counted as dropped: under load the node thins the stream instead of queueing (queued frames only add
latency, and stale depth is worthless). ``put`` never blocks beyond a short lock, so the executor
keeps serving camera_info, TF, timers and graph events while the engine runs.
"""
from __future__ import annotations

import logging
import threading
from typing import Callable, Generic, Optional, TypeVar

__all__ = ["LatestSlot", "Worker"]

_logger = logging.getLogger(__name__)

T = TypeVar("T")


class LatestSlot(Generic[T]):
    """Holds at most one item; a new item replaces (drops) the one not yet taken.

    Attributes:
        offered: items put.
        dropped: items replaced before a taker got them (or discarded by :meth:`clear`).
        taken: items handed to a taker.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._item: Optional[T] = None
        self._has_item = False
        self._closed = False
        self.offered = 0
        self.dropped = 0
        self.taken = 0

    def put(self, item: T) -> bool:
        """Store ``item``; returns True when it replaced an untaken one (that one is dropped)."""
        with self._cond:
            replaced = self._has_item
            if replaced:
                self.dropped += 1
            self._item, self._has_item = item, True
            self.offered += 1
            self._cond.notify()
            return replaced

    def take(self, timeout: Optional[float] = None) -> Optional[T]:
        """The newest item, waiting up to ``timeout`` seconds (None = forever); None on timeout or close."""
        with self._cond:
            if not self._has_item and not self._closed:
                self._cond.wait_for(lambda: self._has_item or self._closed, timeout)
            if not self._has_item:
                return None
            item, self._item, self._has_item = self._item, None, False
            self.taken += 1
            return item

    def clear(self) -> bool:
        """Discard a waiting item (counted as dropped); True when there was one."""
        with self._cond:
            had = self._has_item
            if had:
                self.dropped += 1
            self._item, self._has_item = None, False
            return had

    def close(self) -> None:
        """Wake every taker; later takes return None at once (after any item left is taken)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed


class Worker(Generic[T]):
    """One daemon thread calling ``handler(item)`` for every item taken from a :class:`LatestSlot`.

    An exception from ``handler`` is passed to ``on_error`` (default: logged) and the loop goes on: one
    bad frame never stops the worker.

    Args:
        slot: where the items come from.
        handler: processes one item (runs on the worker thread).
        name: thread name.
        on_error: called with the exception raised by ``handler``.
    """

    def __init__(self, slot: LatestSlot[T], handler: Callable[[T], None], *, name: str = "worker",
                 on_error: Optional[Callable[[BaseException], None]] = None) -> None:
        self.slot = slot
        self._handler = handler
        self._on_error = on_error or (lambda exc: _logger.exception("%s: handler failed", name, exc_info=exc))
        self._stop = threading.Event()
        self.busy = threading.Event()  # set while the handler runs (tests, diagnostics)
        self.processed = 0
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)

    def start(self) -> "Worker[T]":
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.is_set():
            item = self.slot.take(timeout=0.2)
            if item is None:
                if self.slot.closed:
                    return
                continue
            self.busy.set()
            try:
                self._handler(item)
            except Exception as exc:  # noqa: BLE001 - the boundary: report and keep going
                self._on_error(exc)
            finally:
                self.busy.clear()
                self.processed += 1

    def stop(self, timeout: float = 5.0) -> bool:
        """Stop after the current item; returns True when the thread ended within ``timeout``."""
        self._stop.set()
        self.slot.close()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout)
        return not self._thread.is_alive()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()
