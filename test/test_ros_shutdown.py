"""Ctrl-C under ``ros2 launch``: every node process gets SIGINT twice (terminal + launch). Each entry point
must stop cleanly on the first and ignore the second, at any timing: exit code 0, no traceback.

Real processes, real signals: the node entry points (``thermal_depth``, ``sim_rig``, ``online_adaptation``
mains and ``monother rig --sim``) with two SIGINTs at several gaps, and ``run_node`` with a node whose
clean-up takes a second, so that the second signal lands inside ``destroy_node`` (or inside the start-up).
"""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from ros_harness import REPO_ROOT

pytestmark = pytest.mark.ros

_BAD = ("Traceback", "KeyboardInterrupt", "exit code -2")


def _start(argv: list[str], log_dir: Path, tag: str) -> tuple[subprocess.Popen, Path, Path]:
    out_path, err_path = log_dir / f"{tag}.out", log_dir / f"{tag}.err"
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, *argv], cwd=str(REPO_ROOT), env=env, stdout=open(out_path, "wb"),
                            stderr=open(err_path, "wb"))
    return proc, out_path, err_path


def _both(out_path: Path, err_path: Path) -> str:
    return out_path.read_text(errors="replace") + err_path.read_text(errors="replace")


def _double_sigint(argv: list[str], ready: str, gap_s: float, log_dir: Path, tag: str, *,
                   settle_s: float = 0.5, start_timeout_s: float = 120.0) -> tuple[int, str, str]:
    """Start ``python argv``, wait for ``ready`` (regex) in its output, then SIGINT, sleep gap, SIGINT.

    Returns:
        (exit code, stderr, stdout + stderr).
    """
    proc, out_path, err_path = _start(argv, log_dir, tag)
    try:
        deadline = time.monotonic() + start_timeout_s
        while not re.search(ready, _both(out_path, err_path)):
            assert proc.poll() is None, f"{tag} exited before it was ready:\n{_both(out_path, err_path)}"
            assert time.monotonic() < deadline, f"{tag} never became ready:\n{_both(out_path, err_path)}"
            time.sleep(0.05)
        time.sleep(settle_s)
        proc.send_signal(signal.SIGINT)
        time.sleep(gap_s)
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return code, err_path.read_text(errors="replace"), _both(out_path, err_path)


def _assert_clean(tag: str, code: int, stderr: str, output: str) -> None:
    assert code == 0, f"{tag}: exit code {code}\n{output}"
    for bad in _BAD:
        assert bad not in stderr, f"{tag}: {bad!r} in stderr\n{output}"


_SLOW_NODE = textwrap.dedent("""
    import sys, time
    from rclpy.node import Node
    from monother_ros.ros.entry import run_node

    START_S, STOP_S = float(sys.argv[1]), float(sys.argv[2])

    class SlowNode(Node):
        def __init__(self):
            super().__init__("slow_node")
            print("building", flush=True)
            time.sleep(START_S)  # a model load / engine build
            self.create_timer(0.05, lambda: None)
            print("ready", flush=True)

        def destroy_node(self):
            print("destroying", flush=True)
            time.sleep(STOP_S)  # worker join, engine release
            super().destroy_node()
            print("destroyed", flush=True)

    raise SystemExit(run_node(SlowNode, "slow_node"))
""")


@pytest.mark.parametrize("gap_s", [0.0, 0.02, 0.4, 1.2])
def test_run_node_second_sigint_never_interrupts_the_clean_up(tmp_path, gap_s):
    script = tmp_path / "slow_node.py"
    script.write_text(_SLOW_NODE)
    # destroy_node takes 1 s: gaps 0.02 and 0.4 land inside it, 1.2 after it (during interpreter exit).
    code, stderr, output = _double_sigint([str(script), "0", "1.0"], r"\bready\b", gap_s, tmp_path, "slow")
    _assert_clean("slow_node", code, stderr, output)
    assert "destroyed" in output, f"destroy_node did not finish:\n{output}"


def test_sigterm_during_a_hung_clean_up_ends_the_process(tmp_path):
    # ros2 launch escalates to SIGTERM when a node takes too long to stop: that one is obeyed at once.
    script = tmp_path / "slow_node.py"
    script.write_text(_SLOW_NODE)
    proc, out_path, err_path = _start([str(script), "0", "30"], tmp_path, "hung")
    try:
        deadline = time.monotonic() + 60
        while "ready" not in _both(out_path, err_path):
            assert proc.poll() is None and time.monotonic() < deadline, _both(out_path, err_path)
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        while "destroying" not in _both(out_path, err_path):
            assert time.monotonic() < deadline, _both(out_path, err_path)
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)  # ignored: the clean-up goes on
        time.sleep(0.3)
        assert proc.poll() is None
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == -signal.SIGTERM and time.monotonic() - started < 5
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "Traceback" not in err_path.read_text()


def test_run_node_sigints_during_start_up_stop_it_cleanly(tmp_path):
    script = tmp_path / "slow_node.py"
    script.write_text(_SLOW_NODE)
    # Both signals arrive while the node is still being built (3 s "model load").
    code, stderr, output = _double_sigint([str(script), "3", "0"], r"\bbuilding\b", 0.05, tmp_path, "startup",
                                          settle_s=0.3)
    _assert_clean("slow_node", code, stderr, output)
    assert "ready" not in output, "the start-up was not interrupted"


# (name, argv, regex printed once the node is built); every node runs in its own namespace.
_ENTRY_POINTS = {
    "thermal_depth": (["-m", "monother_ros.ros.depth_node", "--ros-args", "-p", "backend:=onnxruntime"],
                      r"thermal_depth\]: engine "),
    "sim_rig": (["-m", "monother_ros.ros.sim_node", "--ros-args", "-p", "render_scale:=0.1"],
                r"sim_rig\]: "),
    "online_adaptation": (["-m", "monother_ros.ros.adaptation_node"], r"online_adaptation\]: adapting "),
    "monother_rig": (["-m", "monother_ros.cli", "rig", "--sim", "--backend", "onnxruntime"],
                     r"monother rig: running"),
}
_GAPS_S = (0.0, 0.05, 0.3)


@pytest.mark.slow
def test_every_entry_point_exits_0_on_a_double_sigint(tmp_path):
    jobs = []
    for name, (argv, ready) in _ENTRY_POINTS.items():
        for k, gap in enumerate(_GAPS_S):
            namespace = f"sigint_{name}_{k}"
            if argv[1] == "monother_ros.cli":
                full = [*argv, "--namespace", namespace]
            else:
                full = [*argv, "-r", f"__ns:=/{namespace}"]
            jobs.append((f"{name}_gap{gap}", full, ready, gap))
    # Three at a time: each process loads the model (the CI machine has 2 cores).
    with ThreadPoolExecutor(max_workers=3) as pool:
        results = list(pool.map(lambda job: (job[0], *_double_sigint(job[1], job[2], job[3], tmp_path, job[0])),
                                jobs))
    for tag, code, stderr, output in results:
        _assert_clean(tag, code, stderr, output)
