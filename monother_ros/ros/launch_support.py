"""The decisions of ``launch/rig.launch.py``, as plain Python (no ``launch`` import) so tests can run them.

:func:`plan_launch` turns the launch arguments' text into a :class:`LaunchPlan` (which nodes, their
parameter overrides, RViz or not) or refuses them all at once, before anything starts:

* boolean arguments (``use_sim``, ``rviz``, ``adapt``) take ``true``/``false``, ``1``/``0``,
  ``yes``/``no``, ``on``/``off`` (any case); ``use_sim:=ture`` is an error, not a silent false;
* ``frame_prefix`` must be empty or like ``robot1/``;
* ``rviz:=true`` needs rviz2 installed: checked first, with the command that installs it (otherwise
  launch starts the other nodes, then fails on rviz2 and leaves them running: ros2/launch#747).

:func:`node_exit_error` decides what a node's exit means: a required node (``thermal_depth``) leaving
while the launch is not shutting down ends the launch with a non-zero exit code.
"""
from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Optional

from monother_ros.errors import ConfigError
from monother_ros.ros.frames import frame_prefix_error, normalise_prefix
from monother_ros.ros.graph import LAUNCH_ARGUMENTS, NodeSpec, graph_nodes, is_available

__all__ = ["BOOLEAN_ARGUMENTS", "REQUIRED_NODES", "LaunchPlan", "PlannedNode", "parse_bool", "plan_launch",
           "rviz_installed", "rviz_install_hint", "node_exit_error"]

BOOLEAN_ARGUMENTS = ("use_sim", "rviz", "adapt")
REQUIRED_NODES = ("thermal_depth",)  # when one of these exits, the whole launch stops (non-zero)
RVIZ_PACKAGE = "rviz2"
_TRUE = ("true", "1", "yes", "on")
_FALSE = ("false", "0", "no", "off")


def parse_bool(name: str, text: str) -> bool:
    """A boolean launch argument's value.

    Raises:
        ConfigError: the text is not one of true/false, 1/0, yes/no, on/off (any case).
    """
    value = str(text).strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ConfigError(f"launch argument {name}:={text!r} is not a boolean: use true or false "
                      f"(also 1/0, yes/no, on/off)")


@dataclass(frozen=True)
class PlannedNode:
    """One node to start: its graph entry, parameter overrides (name -> text) and whether its exit ends
    the launch."""

    spec: NodeSpec
    overrides: dict[str, str]
    required: bool


@dataclass(frozen=True)
class LaunchPlan:
    """What the launch file starts."""

    nodes: list[PlannedNode]
    namespace: str
    rviz: bool
    unavailable: list[str] = field(default_factory=list)  # nodes missing from this install


def rviz_installed() -> bool:
    """Whether ``rviz2`` can be started: its package in the ament index (``AMENT_PREFIX_PATH``) with its
    executable under ``lib/rviz2/``, where launch_ros looks it up; an ``rviz2`` on PATH where
    ament_index_python itself is missing."""
    try:
        from ament_index_python.packages import PackageNotFoundError, get_package_prefix
    except ImportError:
        return shutil.which(RVIZ_PACKAGE) is not None
    try:
        prefix = get_package_prefix(RVIZ_PACKAGE)
    except (PackageNotFoundError, EnvironmentError):  # not installed, or no ROS environment sourced
        return False
    return os.access(Path(prefix) / "lib" / RVIZ_PACKAGE / RVIZ_PACKAGE, os.X_OK)


def rviz_install_hint() -> str:
    """The command that installs rviz2 for this ROS distribution."""
    distro = os.environ.get("ROS_DISTRO") or "<distro>"
    return f"sudo apt install ros-{distro}-rviz2"


def plan_launch(values: Mapping[str, str], *, rviz_available: Callable[[], bool] = rviz_installed) -> LaunchPlan:
    """Validate the launch arguments and choose the nodes.

    Args:
        values: launch argument name -> text (every name of ``LAUNCH_ARGUMENTS``; missing ones take
            their defaults).
        rviz_available: tells whether rviz2 is installed (asked only with ``rviz:=true``).

    Raises:
        ConfigError: every invalid argument, one per line, or rviz2 missing with ``rviz:=true``.
    """
    text = {name: default for name, default, _ in LAUNCH_ARGUMENTS}
    text.update({k: str(v) for k, v in values.items()})
    errors: list[str] = []
    known = {name for name, _, _ in LAUNCH_ARGUMENTS}
    unknown = sorted(set(values) - known)
    errors += [f"unknown launch argument {name}" for name in unknown]
    flags: dict[str, bool] = {}
    for name in BOOLEAN_ARGUMENTS:
        try:
            flags[name] = parse_bool(name, text[name])
        except ConfigError as exc:
            errors.append(str(exc))
    prefix = text.get("frame_prefix", "").strip()
    problem = frame_prefix_error(prefix)
    if problem:
        errors.append(f"launch argument frame_prefix:={prefix!r} {problem}")
    if not errors and flags["rviz"] and not rviz_available():
        errors.append(f"rviz:=true but rviz2 is not installed: {rviz_install_hint()} (or launch without "
                      f"rviz:=true); nothing was started")
    if errors:
        raise ConfigError("refusing to launch:\n" + "\n".join(f"  {e}" for e in errors))
    text["frame_prefix"] = normalise_prefix(prefix)
    nodes, unavailable = [], []
    for spec in graph_nodes(use_sim=flags["use_sim"], adapt=flags["adapt"]):
        if not is_available(spec):
            unavailable.append(spec.name)
            continue
        overrides = {parameter: text[argument] for parameter, argument in spec.parameter_arguments if text[argument]}
        nodes.append(PlannedNode(spec, overrides, spec.name in REQUIRED_NODES))
    return LaunchPlan(nodes, text["namespace"], flags["rviz"], unavailable)


def node_exit_error(name: str, returncode: Optional[int], shutting_down: bool) -> Optional[str]:
    """Why the launch must stop with an error because node ``name`` exited, or None (an exit during
    shutdown, or of a node that is not required)."""
    if shutting_down or name not in REQUIRED_NODES:
        return None
    return (f"{name} exited (exit code {returncode}) while the launch was running: shutting the launch down "
            f"(see the node's output above)")
