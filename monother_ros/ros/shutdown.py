"""SIGINT/SIGTERM handling for node processes: stop on the first signal, ignore repeated SIGINTs.

Under ``ros2 launch`` a Ctrl-C reaches each node twice: once from the terminal (the whole process group)
and once from launch, which forwards SIGINT to its children. With rclpy's default handler the second
signal raises ``KeyboardInterrupt`` inside ``destroy_node`` (traceback, exit code -2). Here the first
signal only sets a flag that the spin loop checks; later ones are ignored, so shutdown runs to the end.

Once shutdown begins (:meth:`StopSignals.closing`) SIGINT is ignored outright, through interpreter exit,
and SIGTERM (launch's escalation when a clean-up hangs) terminates at once. A signal that arrives while
the node is still being built (model loading, a TensorRT build) aborts the start-up with
``KeyboardInterrupt`` (the caller catches it); later signals are ignored as well.
"""
from __future__ import annotations

import signal
import threading
from typing import Any, Optional

__all__ = ["StopSignals"]

_SIGNALS = tuple(s for s in (getattr(signal, "SIGINT", None), getattr(signal, "SIGTERM", None)) if s is not None)


class StopSignals:
    """Installs SIGINT/SIGTERM handlers (main thread only; elsewhere it does nothing).

    Args:
        interrupt_startup: raise ``KeyboardInterrupt`` on the first signal until :meth:`running` is called.

    Attributes:
        stop: set by the first signal (or by :meth:`request_stop`).
    """

    def __init__(self, *, interrupt_startup: bool = True) -> None:
        self.stop = threading.Event()
        self._interrupt_startup = interrupt_startup
        self._running = False
        self._signalled = False
        self._previous: dict[int, Any] = {}

    def install(self) -> "StopSignals":
        if threading.current_thread() is threading.main_thread():
            for signum in _SIGNALS:
                self._previous[signum] = signal.signal(signum, self._on_signal)
        return self

    def running(self) -> None:
        """The start-up is over: from now on the first signal only sets :attr:`stop`."""
        self._running = True

    def closing(self) -> None:
        """Shutdown has begun: from now on SIGINT is ignored (SIG_IGN, which, unlike a Python handler,
        stays in force while the interpreter finalises; Python resets its own handlers to the default
        then, and a late SIGINT would kill the process with exit code -2). SIGTERM gets its default
        action back: ``ros2 launch`` escalates to it only when the clean-up takes too long."""
        self._running = True
        self.stop.set()
        for signum in self._previous:
            signal.signal(signum, signal.SIG_IGN if signum == signal.SIGINT else signal.SIG_DFL)

    def _on_signal(self, signum: int, _frame: Optional[Any]) -> None:
        first = not self._signalled
        self._signalled = True
        self.stop.set()
        if first and self._interrupt_startup and not self._running:
            raise KeyboardInterrupt  # abort a long start-up; repeats fall through (ignored)

    def restore(self) -> None:
        """Put the previous handlers back, unless a signal came: then the process is on its way out and a
        late repeat must still be ignored. Process entries that exit right after do not call this."""
        if self._signalled:
            return
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()
