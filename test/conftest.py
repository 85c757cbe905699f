"""Session-wide isolation for DDS: own domain id, own log dir, localhost discovery, the SHM profile.

Set before anything imports rclpy; subprocesses started by tests inherit the environment.
"""
from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent


def _isolate_dds() -> None:
    # Domain ids 0..101 are safe everywhere with Fast DDS port rules; spread sessions by pid.
    os.environ.setdefault("ROS_DOMAIN_ID", str(1 + os.getpid() % 100))
    os.environ["ROS_LOG_DIR"] = tempfile.mkdtemp(prefix="monother_roslog_")
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    os.environ["RMW_IMPLEMENTATION"] = "rmw_fastrtps_cpp"
    os.environ["FASTDDS_DEFAULT_PROFILES_FILE"] = str(REPO_ROOT / "config" / "fastdds.xml")
    # Torch on 2 cores: keep tests from oversubscribing when several processes run.
    os.environ.setdefault("OMP_NUM_THREADS", "2")


_isolate_dds()


@pytest.fixture(autouse=True)
def _autograd_enabled_at_test_start():
    """Every test starts with autograd on: a module that switches it off at import must not leak that
    into later tests (gradient tests then fail far from the cause)."""
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_grad_enabled(True)
    yield
