"""online_adaptation killed at random moments while it saves checkpoints, as a real process over DDS.

The node runs in a subprocess (``python -m monother_ros.ros.adaptation_node``) with a tiny random dual
model; the test calls ``adaptation/save`` back to back and:

* sends SIGKILL at random moments (and right when a write's temporary appears), several times: each
  restart resumes from the newest valid checkpoint that was on disk, keeps at most ``checkpoint.keep``
  folders and leaves no temporaries;
* sends SIGINT at random moments: the process exits 0 within seconds, with no traceback or C++ abort;
* points ``checkpoint.dir`` at a path that cannot be a folder (a file is in the way): /diagnostics says
  ERROR until the path is usable again, and the node writes the checkpoint by itself then.
"""
from __future__ import annotations

import json
import os
import random
import signal
import time
from pathlib import Path

import pytest

from ros_harness import Collector, NodeProcess, Spinner, ros_context, wait_for
from tiny_models import tiny_dual_dir

pytestmark = [pytest.mark.ros, pytest.mark.slow]

KEEP = 2
MODULE = "monother_ros.ros.adaptation_node"


def _params(tmp_path: Path, ckpt: Path) -> Path:
    import yaml

    from monother_ros.paths import config_path

    params = yaml.safe_load(config_path("rig.yaml").read_text())
    section = params["/**/online_adaptation"]["ros__parameters"]
    section.update(model=str(tiny_dual_dir()), status_period_s=0.2, handover="none", start_paused=True)
    section["checkpoint"].update(dir=str(ckpt), keep=KEEP)
    if "export_onnx" in section["checkpoint"]:  # checkpoint folders only (ONNX exports are not the learner's job)
        section["checkpoint"]["export_onnx"] = False
    path = tmp_path / "adapt.yaml"
    path.write_text(yaml.safe_dump({"/**/online_adaptation": params["/**/online_adaptation"]}))
    return path


class _Client:
    """Test-side node: status and diagnostics subscriptions, the save service."""

    def __init__(self, context) -> None:
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.node import Node
        from std_msgs.msg import String
        from std_srvs.srv import Trigger

        from monother_ros.ros import qos

        self.node = Node("crash_test_client", context=context)
        self.status = Collector(self.node, String, "adaptation/status", qos.TF_STATIC_PUBLISHER)
        self.diagnostics = Collector(self.node, DiagnosticArray, "/diagnostics", qos.DIAGNOSTICS)
        self.save = self.node.create_client(Trigger, "adaptation/save")
        self._request = Trigger.Request()

    def last_status(self) -> dict | None:
        return json.loads(self.status.messages[-1].data) if len(self.status) else None

    def last_level(self) -> int | None:
        for msg in reversed(self.diagnostics.messages):
            for st in msg.status:
                if "online adaptation" in st.name:
                    return int.from_bytes(st.level, "little") if isinstance(st.level, bytes) else int(st.level)
        return None

    def fire_saves(self, seconds: float, stop_when=lambda: False) -> int:
        """Request saves back to back (without waiting for replies) for ``seconds``; how many."""
        n = 0
        deadline = time.monotonic() + seconds
        next_request = 0.0
        while time.monotonic() < deadline and not stop_when():
            if time.monotonic() >= next_request:
                self.save.call_async(self._request)
                n += 1
                next_request = time.monotonic() + 0.02
            time.sleep(0.0005)  # stop_when is polled often: a write lasts milliseconds
        return n


def _start(params: Path, client: _Client) -> NodeProcess:
    client.status.clear()
    proc = NodeProcess(MODULE, ["--ros-args", "--params-file", str(params)])
    assert wait_for(lambda: client.last_status() is not None or not proc.running(), 120), proc.output()
    assert proc.running(), proc.output()
    assert client.save.wait_for_service(timeout_sec=30), proc.output()
    return proc


def _visible(ckpt: Path) -> list[str]:
    return sorted(p.name for p in ckpt.iterdir()) if ckpt.is_dir() else []


def test_sigkill_during_saves_resumes_from_newest_valid_and_keeps_the_folder_clean(tmp_path):
    from monother_ros.adapt import CheckpointStore

    ckpt = tmp_path / "ckpt"
    params = _params(tmp_path, ckpt)
    rng = random.Random(13)
    kills_mid_write = 0
    with ros_context() as context:
        client = _Client(context)
        with Spinner(context, client.node):
            proc = _start(params, client)
            for cycle in range(5):
                if cycle % 2 == 0:
                    # A random moment while saves are being requested.
                    client.fire_saves(rng.uniform(0.3, 2.0))
                else:
                    # The moment a write's temporary folder appears: certainly mid-write.
                    def writing() -> bool:
                        return any(n.startswith(".") for n in _visible(ckpt))
                    client.fire_saves(20.0, stop_when=writing)
                    kills_mid_write += int(writing())
                os.killpg(proc.process.pid, signal.SIGKILL)
                assert proc.stop() == -signal.SIGKILL
                # What a restart must resume from: the newest folder that reads back whole, judged before it
                # touches anything (read-only: no clean-up, no removal).
                newest = CheckpointStore(ckpt, keep=KEEP).latest_valid() if ckpt.is_dir() else None
                proc = _start(params, client)
                status = client.last_status()
                names = _visible(ckpt)
                if newest is None:
                    assert status["resumed_from"] is None
                else:
                    assert status["resumed_from"] == str(newest[0]), (cycle, names)
                assert not [n for n in names if n.startswith(".")], (cycle, names)
                assert len([n for n in names if n.startswith("adapt-")]) <= KEEP, (cycle, names)
                for name in names:  # no temporaries inside the folders either
                    assert not [p.name for p in (ckpt / name).iterdir() if p.name.startswith(".")], name
            assert proc.stop() == 0, proc.output()
    assert kills_mid_write >= 1  # at least one kill landed inside a write
    assert status["resumed_from"] is not None


def test_sigint_at_random_moments_exits_cleanly(tmp_path):
    ckpt = tmp_path / "ckpt"
    params = _params(tmp_path, ckpt)
    rng = random.Random(7)
    with ros_context() as context:
        client = _Client(context)
        with Spinner(context, client.node):
            for cycle in range(4):
                proc = _start(params, client)
                client.fire_saves(rng.uniform(0.05, 1.5))
                t0 = time.monotonic()
                os.killpg(proc.process.pid, signal.SIGINT)
                try:
                    proc.process.wait(timeout=20)
                except Exception:  # noqa: BLE001 - reported below with the output
                    pass
                took = time.monotonic() - t0
                code = proc.stop()
                out = proc.output()
                assert code == 0, (cycle, code, out[-3000:])
                assert took < 20 and "Traceback" not in out and "terminate called" not in out, (cycle, out[-3000:])


def test_unwritable_checkpoint_folder_reports_error_until_it_is_usable_again(tmp_path):
    ckpt = tmp_path / "ckpt"
    ckpt.write_text("a file where the checkpoint folder should be")
    params = _params(tmp_path, ckpt)
    with ros_context() as context:
        client = _Client(context)
        with Spinner(context, client.node):
            proc = _start(params, client)
            try:
                client.fire_saves(0.05)
                assert wait_for(lambda: (s := client.last_status()) and s["checkpoint_error"], 20), proc.output()
                assert wait_for(lambda: client.last_level() == 2, 10)  # ERROR in /diagnostics
                ckpt.unlink()  # space is back: the node's own retry writes the checkpoint
                assert wait_for(lambda: (s := client.last_status()) and s["checkpoint_error"] is None, 30), \
                    client.last_status()
                assert wait_for(lambda: client.last_level() in (0, 1), 10)  # no ERROR left
                assert [n for n in _visible(ckpt) if n.startswith("adapt-")] == ["adapt-000001"]
            finally:
                assert proc.stop() == 0, proc.output()
