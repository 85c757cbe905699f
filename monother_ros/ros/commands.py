"""``monother rig``: the node graph of ``launch/rig.launch.py`` in one process over the wheel rclpy.

    monother rig [--sim] [--adapt] [--config FILE] [--model DIR] [--backend B] [--namespace NS]
                 [--duration S]

The nodes come from ``monother_ros.ros.graph`` (the same list the launch file uses); each gets
``--ros-args --params-file <config>`` (plus ``-p model:=... -p backend:=...`` from the options) as
its ``cli_args``, so rclpy applies the params file's ``/**/<node>`` sections and the namespace exactly as
on a ROS install. All nodes share one single-threaded executor (FACTS.md §1); the depth node infers in
its own worker thread and the simulated rig renders in its own threads.
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any, Optional, Sequence

from monother_ros.errors import ConfigError

__all__ = ["add_commands", "RigOptions", "run_rig", "start_rig"]


def add_commands(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Register ``rig``."""
    p = subparsers.add_parser(
        "rig", help="run the ROS node graph (thermal_depth [+ sim_rig]) in one process",
        description="Start the same node graph as `ros2 launch monother_ros rig.launch.py`, in one process, "
                    "with parameters from config/rig.yaml. Stop with Ctrl-C.")
    p.add_argument("--sim", action="store_true", help="also start the simulated rig (sim_rig)")
    p.add_argument("--adapt", action="store_true", help="also start online_adaptation")
    p.add_argument("--config", default=None, help="params file (default: the shipped config/rig.yaml)")
    p.add_argument("--model", default="", help="model folder or .onnx for thermal_depth (default: the params file's)")
    p.add_argument("--backend", default="", choices=["", "auto", "tensorrt", "onnxruntime", "torch"],
                   help="inference backend (default: the params file's)")
    p.add_argument("--namespace", default="", help="ROS namespace of every node")
    p.add_argument("--duration", type=float, default=0.0, help="stop after this many seconds (0 = until Ctrl-C)")
    p.set_defaults(handler=_rig)


class RigOptions:
    """What ``monother rig`` was asked for (also used by ``monother demo``)."""

    def __init__(self, *, sim: bool = False, adapt: bool = False, config: Optional[str | Path] = None,
                 model: str = "", backend: str = "", namespace: str = "",
                 extra_overrides: Optional[dict[str, dict[str, str]]] = None) -> None:
        self.sim, self.adapt = sim, adapt
        self.config = Path(config) if config else None
        self.model, self.backend, self.namespace = str(model or ""), backend or "", namespace or ""
        self.extra_overrides = extra_overrides or {}


def _params_file(options: RigOptions) -> Path:
    from monother_ros.paths import config_path
    from monother_ros.ros.graph import PARAMS_FILE

    path = options.config or config_path(PARAMS_FILE)
    if not path.is_file():
        raise ConfigError(f"params file {path} does not exist")
    return path.resolve()


def _use_shipped_dds_profile() -> None:
    """As the launch file: point Fast DDS at the shipped SHM profile unless the user chose one."""
    from monother_ros.paths import config_path
    from monother_ros.ros.graph import FASTDDS_PROFILE

    profile = config_path(FASTDDS_PROFILE)
    if "FASTDDS_DEFAULT_PROFILES_FILE" not in os.environ and profile.is_file():
        os.environ["FASTDDS_DEFAULT_PROFILES_FILE"] = str(profile)


def start_rig(options: RigOptions, context: Any) -> list[Any]:
    """Create the graph's nodes in ``context`` (an initialised rclpy Context); returns them in start order.

    Raises:
        ConfigError: a missing params file, an unavailable node (``online_adaptation``), bad parameters.
        MonotherError: a node failed to start (e.g. no model); nodes already made are destroyed.
    """
    from monother_ros.ros.graph import graph_nodes, node_class, params_file_args, require_available

    params_file = _params_file(options)
    specs = graph_nodes(use_sim=options.sim, adapt=options.adapt)
    for spec in specs:
        require_available(spec)  # before starting anything: "online_adaptation is not available yet"
    values = {"model": options.model, "backend": options.backend}
    nodes: list[Any] = []
    try:
        for spec in specs:
            overrides = {param: values[arg] for param, arg in spec.parameter_arguments if values.get(arg)}
            overrides.update(options.extra_overrides.get(spec.name, {}))
            cls = node_class(spec)
            nodes.append(cls(context=context, namespace=options.namespace or None,
                             cli_args=params_file_args(params_file, overrides)))
    except BaseException:
        for node in reversed(nodes):
            node.destroy_node()
        raise
    return nodes


def run_rig(options: RigOptions, *, duration_s: float = 0.0, on_started=None) -> int:
    """Run the graph until Ctrl-C (or ``duration_s`` > 0 seconds); returns the exit code."""
    _use_shipped_dds_profile()
    import rclpy
    from rclpy.context import Context
    from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor

    context = Context()
    rclpy.init(context=context)
    nodes: list[Any] = []
    try:
        nodes = start_rig(options, context)
        executor = SingleThreadedExecutor(context=context)
        for node in nodes:
            executor.add_node(node)
        print(f"monother rig: running {', '.join(n.get_fully_qualified_name() for n in nodes)}"
              + (f" for {duration_s:g} s" if duration_s > 0 else " (Ctrl-C to stop)"), flush=True)
        if on_started is not None:
            on_started(nodes)
        deadline = time.monotonic() + duration_s if duration_s > 0 else None
        try:
            while context.ok() and (deadline is None or time.monotonic() < deadline):
                executor.spin_once(timeout_sec=0.1)
        except (KeyboardInterrupt, ExternalShutdownException):
            pass
        executor.shutdown(timeout_sec=2.0)
    finally:
        for node in reversed(nodes):
            node.destroy_node()
        context.try_shutdown()
    return 0


def _rig(args: argparse.Namespace) -> int:
    options = RigOptions(sim=args.sim, adapt=args.adapt, config=args.config, model=args.model,
                         backend=args.backend, namespace=args.namespace)
    return run_rig(options, duration_s=args.duration)
