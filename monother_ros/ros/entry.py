"""The shared console entry of every node: init, spin one node on a single-threaded executor, shut down.

Single-threaded on purpose (checked on the wheel build: a MultiThreadedExecutor with images on 2 cores falls to 7-15 Hz);
nodes run their heavy work in their own worker threads. try/finally rather than ``with rclpy.init()``: the
context manager does not exist on Humble.

Signals: rclpy's own handler is off; :class:`~monother_ros.ros.shutdown.StopSignals` stops the spin loop on
the first SIGINT/SIGTERM and ignores repeats, so the double SIGINT of ``ros2 launch`` + terminal ends
with a clean ``destroy_node`` and exit code 0.
"""
from __future__ import annotations

from typing import Callable, Optional, Sequence

import rclpy
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node

from monother_ros.errors import MonotherError
from monother_ros.ros.shutdown import StopSignals

_SPIN_PERIOD_S = 0.1  # how often the spin loop looks at the stop flag


def run_node(make_node: Callable[[], Node], executable: str, args: Optional[Sequence[str]] = None) -> int:
    """Run the node built by ``make_node`` until Ctrl-C / SIGTERM or shutdown.

    Returns:
        0 on a normal stop (however many signals came); 2 after one line ``<executable>: error: ...``
        when the node refuses its configuration or model (a ``MonotherError`` from its constructor or
        while spinning).
    """
    from rclpy.signals import SignalHandlerOptions

    signals = StopSignals().install()
    node: Optional[Node] = None
    try:
        rclpy.init(args=list(args) if args is not None else None, signal_handler_options=SignalHandlerOptions.NO)
        node = make_node()
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        signals.running()
        while rclpy.ok() and not signals.stop.is_set():
            executor.spin_once(timeout_sec=_SPIN_PERIOD_S)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except MonotherError as exc:
        reason = "; ".join(line.strip() for line in str(exc).splitlines())
        print(f"{executable}: error: {reason}", flush=True)
        return 2
    finally:
        signals.closing()  # from here on no signal interrupts the clean-up
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
        # No restore: this is the process's entry and it exits now; a late repeat stays ignored.
    return 0
