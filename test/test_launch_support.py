"""launch/rig.launch.py's decisions (monother_ros.ros.launch_support): boolean arguments are validated,
rviz:=true without rviz2 is refused before anything starts, thermal_depth's exit ends the launch with an
error. `launch` is not installable here, so the launch file's own wiring is checked on its syntax tree and
its exit handler is run from the file's source."""
from __future__ import annotations

import ast
import stat

import pytest

from monother_ros.errors import ConfigError
from monother_ros.ros.launch_support import (
    node_exit_error,
    parse_bool,
    plan_launch,
    rviz_install_hint,
    rviz_installed,
)
from ros_harness import REPO_ROOT

LAUNCH_FILE = REPO_ROOT / "launch" / "rig.launch.py"


def _never_asked():
    raise AssertionError("rviz2 availability must only be checked with rviz:=true")


@pytest.mark.parametrize("text,value", [("true", True), ("True", True), ("1", True), ("yes", True), (" on ", True),
                                        ("false", False), ("FALSE", False), ("0", False), ("no", False),
                                        ("off", False)])
def test_boolean_arguments_accept_the_usual_spellings(text, value):
    assert parse_bool("use_sim", text) is value


@pytest.mark.parametrize("text", ["ture", "", "2", "flase", "y", "truee"])
def test_a_boolean_argument_with_a_typo_is_refused_with_its_name_and_value(text):
    with pytest.raises(ConfigError) as info:
        plan_launch({"use_sim": text}, rviz_available=_never_asked)
    message = str(info.value)
    assert f"use_sim:={text!r} is not a boolean" in message
    assert "true or false" in message


def test_every_bad_argument_is_listed_at_once():
    with pytest.raises(ConfigError) as info:
        plan_launch({"use_sim": "ture", "adapt": "maybe", "rviz": "nope", "frame_prefix": "/robot1"},
                    rviz_available=_never_asked)
    lines = str(info.value).splitlines()
    assert lines[0] == "refusing to launch:"
    assert len(lines) == 5
    assert any("adapt:='maybe'" in line for line in lines) and any("rviz:='nope'" in line for line in lines)
    assert any("frame_prefix:='/robot1'" in line for line in lines)


def test_rviz_without_rviz2_is_refused_before_any_node_with_the_install_command(monkeypatch):
    monkeypatch.setenv("ROS_DISTRO", "jazzy")
    with pytest.raises(ConfigError) as info:
        plan_launch({"rviz": "true", "use_sim": "true"}, rviz_available=lambda: False)
    assert "sudo apt install ros-jazzy-rviz2" in str(info.value)
    assert "nothing was started" in str(info.value)
    assert rviz_install_hint() == "sudo apt install ros-jazzy-rviz2"
    plan = plan_launch({"rviz": "true"}, rviz_available=lambda: True)
    assert plan.rviz is True


def test_rviz_is_found_through_the_ament_index_as_launch_ros_finds_it(tmp_path, monkeypatch):
    monkeypatch.setenv("AMENT_PREFIX_PATH", str(tmp_path))
    assert rviz_installed() is False
    marker = tmp_path / "share" / "ament_index" / "resource_index" / "packages" / "rviz2"
    marker.parent.mkdir(parents=True)
    marker.write_text("")
    assert rviz_installed() is False  # the package is indexed but has no executable
    exe = tmp_path / "lib" / "rviz2" / "rviz2"
    exe.parent.mkdir(parents=True)
    exe.write_text("#!/bin/sh\n")
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    assert rviz_installed() is True
    monkeypatch.delenv("AMENT_PREFIX_PATH")
    assert rviz_installed() is False  # no ROS environment sourced


def test_the_plan_chooses_the_graph_nodes_and_their_overrides():
    plan = plan_launch({}, rviz_available=_never_asked)
    assert [n.spec.name for n in plan.nodes] == ["thermal_depth"] and plan.rviz is False
    assert plan.nodes[0].overrides == {} and plan.nodes[0].required
    plan = plan_launch({"use_sim": "1", "model": "/m", "namespace": "robot1", "frame_prefix": "robot1"},
                       rviz_available=_never_asked)
    assert [n.spec.name for n in plan.nodes] == ["sim_rig", "thermal_depth"]
    by_name = {n.spec.name: n for n in plan.nodes}
    assert by_name["thermal_depth"].overrides == {"model": "/m", "frame_prefix": "robot1/"}
    assert by_name["sim_rig"].overrides == {"frame_prefix": "robot1/"}
    assert not by_name["sim_rig"].required and by_name["thermal_depth"].required
    assert plan.namespace == "robot1"


def test_only_a_required_node_leaving_a_running_launch_is_an_error():
    reason = node_exit_error("thermal_depth", 2, shutting_down=False)
    assert reason is not None and "thermal_depth exited (exit code 2)" in reason
    assert node_exit_error("thermal_depth", 0, shutting_down=False) is not None  # it must not just stop
    assert node_exit_error("thermal_depth", -2, shutting_down=True) is None      # Ctrl-C
    assert node_exit_error("sim_rig", 1, shutting_down=False) is None


def _function(tree: ast.Module, name: str) -> ast.FunctionDef:
    return next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == name)


def test_launch_file_plans_before_starting_and_stops_non_zero_when_thermal_depth_exits():
    tree = ast.parse(LAUNCH_FILE.read_text())
    graph = _function(tree, "_graph")
    calls = [n for n in ast.walk(graph) if isinstance(n, ast.Call)]
    plan_lines = [c.lineno for c in calls if getattr(c.func, "id", None) == "plan_launch"]
    node_lines = [c.lineno for c in calls if getattr(c.func, "id", None) == "Node"]
    assert len(plan_lines) == 1 and node_lines and plan_lines[0] < min(node_lines)
    # An OnProcessExit handler on each required node.
    handlers = [c for c in calls if getattr(c.func, "id", None) == "OnProcessExit"]
    assert len(handlers) == 1
    kwargs = {kw.arg: ast.unparse(kw.value) for kw in handlers[0].keywords}
    assert kwargs == {"target_action": "node", "on_exit": "_on_required_exit(spec.name)"}

    # Run the file's handler: an exception in the launch event loop makes `ros2 launch` shut down and
    # return 1 (launch's LaunchService.run_async); during shutdown the exit is not an error.
    namespace = {"node_exit_error": node_exit_error}
    module = ast.Module(body=[n for n in tree.body if isinstance(n, (ast.ClassDef, ast.FunctionDef))
                              and n.name in ("NodeExitedError", "_on_required_exit")], type_ignores=[])
    exec(compile(module, str(LAUNCH_FILE), "exec"), namespace)

    class Event:
        returncode = 2

    class Context:
        is_shutdown = False

    handler = namespace["_on_required_exit"]("thermal_depth")
    with pytest.raises(RuntimeError, match="thermal_depth exited"):
        handler(Event(), Context())
    Context.is_shutdown = True
    assert handler(Event(), Context()) is None


def test_launch_support_imports_neither_launch_nor_rclpy():
    import subprocess
    import sys

    code = ("import sys, monother_ros.ros.launch_support; "
            "print(sorted(m for m in ('rclpy', 'launch', 'launch_ros', 'numpy', 'torch') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
