"""Helpers for tests over real rclpy and DDS (no mocks).

* :func:`ros_context`: a fresh ``rclpy`` context per test (init, always shut down), so tests share no
  global state; every node and executor of the test is created in it.
* :class:`Spinner`: spins nodes in a background thread with a ``SingleThreadedExecutor``.
* :func:`wait_for`, :func:`wait_for_subscribers`, :func:`wait_for_publishers`: poll a condition with a
  timeout (discovery usually takes 50-80 ms but sometimes 2-2.7 s: checked on the wheel build), never a fixed sleep.
* :class:`Collector`: a subscription storing messages with their receive times.
* :class:`NodeProcess`: run a node in another process (``python -m module``) and stop it cleanly.

The DDS isolation (own ``ROS_DOMAIN_ID``, ``ROS_LOG_DIR``, localhost discovery, the SHM profile) comes
from ``test/conftest.py``; subprocesses inherit it.
"""
from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Sequence

import rclpy
from rclpy.context import Context
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_TIMEOUT_S = 10.0


@contextlib.contextmanager
def ros_context(args: Optional[Sequence[str]] = None) -> Iterator[Context]:
    """A fresh, initialised rclpy context, shut down on exit."""
    context = Context()
    rclpy.init(args=list(args) if args is not None else None, context=context)
    try:
        yield context
    finally:
        context.try_shutdown()


def wait_for(predicate: Callable[[], Any], timeout: float = DEFAULT_TIMEOUT_S, interval: float = 0.005) -> bool:
    """Poll ``predicate`` until truthy or ``timeout`` seconds pass; returns its last truth value."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return bool(predicate())
        time.sleep(interval)


def wait_for_subscribers(node: Node, topic: str, count: int = 1, timeout: float = DEFAULT_TIMEOUT_S) -> bool:
    """Wait until ``topic`` has at least ``count`` subscriptions in the graph."""
    return wait_for(lambda: node.count_subscribers(topic) >= count, timeout)


def wait_for_publishers(node: Node, topic: str, count: int = 1, timeout: float = DEFAULT_TIMEOUT_S) -> bool:
    """Wait until ``topic`` has at least ``count`` publishers in the graph."""
    return wait_for(lambda: node.count_publishers(topic) >= count, timeout)


class Spinner:
    """Spin nodes with a ``SingleThreadedExecutor`` in a daemon thread; use as a context manager."""

    def __init__(self, context: Context, *nodes: Node) -> None:
        self.executor = SingleThreadedExecutor(context=context)
        for node in nodes:
            self.executor.add_node(node)
        self._thread = threading.Thread(target=self._spin, name="test-spinner", daemon=True)
        self.error: Optional[BaseException] = None

    def _spin(self) -> None:
        try:
            self.executor.spin()
        except ExternalShutdownException:
            pass
        except BaseException as exc:  # surfaced by stop()
            self.error = exc

    def add_node(self, node: Node) -> None:
        self.executor.add_node(node)

    def start(self) -> "Spinner":
        self._thread.start()
        return self

    def stop(self) -> None:
        self.executor.shutdown(timeout_sec=5.0)
        self._thread.join(timeout=5.0)
        if self.error is not None:
            raise self.error

    def __enter__(self) -> "Spinner":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class Collector:
    """Subscribe to ``topic`` and keep every message with its receive time (``time.monotonic``)."""

    def __init__(self, node: Node, msg_type: Any, topic: str, qos: Any, *, raw: bool = False) -> None:
        self.node = node
        self.topic = topic
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self.messages: list[Any] = []
        self.receive_times: list[float] = []
        self.subscription = node.create_subscription(msg_type, topic, self._on_message, qos, raw=raw)

    def _on_message(self, msg: Any) -> None:
        with self._cond:
            self.messages.append(msg)
            self.receive_times.append(time.monotonic())
            self._cond.notify_all()

    def __len__(self) -> int:
        with self._lock:
            return len(self.messages)

    def wait_for_count(self, count: int, timeout: float = DEFAULT_TIMEOUT_S) -> list[Any]:
        """Wait for at least ``count`` messages; returns a copy of all received so far (maybe fewer)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self.messages) < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            return list(self.messages)

    def clear(self) -> None:
        with self._lock:
            self.messages.clear()
            self.receive_times.clear()


class NodeProcess:
    """A node running in a subprocess: ``.venv/bin/python -m <module> [args]``.

    Output goes to a log file (``log_path``), shown by :meth:`output` for failure messages. Stop it with
    :meth:`stop` (SIGINT first, as Ctrl-C, then SIGTERM/SIGKILL); also a context manager.
    """

    def __init__(self, module: str, args: Sequence[str] = (), *, log_dir: Optional[Path] = None, env: Optional[dict] = None) -> None:
        log_dir = Path(log_dir or os.environ.get("ROS_LOG_DIR", "/tmp"))
        log_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = log_dir / f"{module.rsplit('.', 1)[-1]}_{os.getpid()}_{time.monotonic_ns()}.log"
        self._log = open(self.log_path, "wb")
        full_env = dict(os.environ)
        full_env.update(env or {})
        full_env.setdefault("PYTHONUNBUFFERED", "1")
        self.process = subprocess.Popen(
            [sys.executable, "-m", module, *args],
            cwd=str(REPO_ROOT),
            env=full_env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: signals reach its children too
        )

    def running(self) -> bool:
        return self.process.poll() is None

    def output(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 10.0) -> int:
        """Interrupt and wait; escalates to SIGTERM, then SIGKILL. Returns the exit code."""
        if self.process.poll() is None:
            for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGKILL):
                try:
                    os.killpg(self.process.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    self.process.wait(timeout=timeout if sig != signal.SIGKILL else None)
                    break
                except subprocess.TimeoutExpired:
                    continue
        self._log.close()
        return self.process.returncode

    def __enter__(self) -> "NodeProcess":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
