"""The shared console entry of every node: init, spin one node on a single-threaded executor, shut down.

Single-threaded on purpose (FACTS.md §1: a MultiThreadedExecutor with images on 2 cores falls to 7-15 Hz);
nodes run their heavy work in their own worker threads. try/finally rather than ``with rclpy.init()``: the
context manager does not exist on Humble.
"""
from __future__ import annotations

from typing import Callable, Optional, Sequence

import rclpy
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node

from monother_ros.errors import MonotherError


def run_node(make_node: Callable[[], Node], executable: str, args: Optional[Sequence[str]] = None) -> int:
    """Run the node built by ``make_node`` until Ctrl-C or shutdown.

    Returns:
        0 on a normal stop; 2 after one line ``<executable>: error: ...`` when the node refuses its
        configuration or model (a ``MonotherError`` from its constructor or while spinning).
    """
    rclpy.init(args=list(args) if args is not None else None)
    node: Optional[Node] = None
    try:
        node = make_node()
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except MonotherError as exc:
        reason = "; ".join(line.strip() for line in str(exc).splitlines())
        print(f"{executable}: error: {reason}", flush=True)
        return 2
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    return 0
