"""``monother sim`` / ``monother demo`` command lines: bad arguments fail cleanly, a good run writes a bag."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from monother_ros import cli

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--scenario", "dusk"], "unknown --scenario 'dusk'"),
        (["--family", "forest"], "unknown --family 'forest'"),
        (["--storage", "bag1"], "unknown --storage 'bag1'"),
        (["--seconds", "-2"], "--seconds must be a positive"),
        (["--seconds", "0"], "--seconds must be a positive"),
        (["--seconds", "ten"], "--seconds must be a number"),
        (["--seed", "1.5"], "--seed must be an integer"),
        (["--compress", "thermal"], "--compress expects STREAM=CODEC"),
        (["--compress", "thermal=jpeg"], "cannot compress stream 'thermal' as 'jpeg'"),
        (["--compress", "lidar=png"], "cannot compress stream 'lidar'"),
        (["--ros1", "copy.mcap"], "--ros1 names a ROS 1 bag file ending in .bag"),
    ],
)
def test_bad_arguments_one_line_nonzero_no_output(tmp_path: Path, capsys, extra: list[str], message: str) -> None:
    out = tmp_path / "bag"
    rc = cli.main(["sim", "--out", str(out), *extra])
    err = capsys.readouterr().err
    assert rc != 0
    assert err.count("\n") == 1 and message in err, err
    assert list(tmp_path.iterdir()) == []


def test_unwritable_or_existing_output(tmp_path: Path, capsys) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    for out, message in ((blocker / "bag", "is not a directory"), (tmp_path / "no" / "bag", "does not exist"),
                         (Path("/proc/monother_bag"), "not writable"), (blocker, "already exists")):
        rc = cli.main(["sim", "--out", str(out), "--seconds", "0.1"])
        err = capsys.readouterr().err
        assert rc != 0 and err.count("\n") == 1 and message in err, (out, err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_subprocess_exit_code_and_single_line(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "monother_ros.cli", "sim", "--out", str(tmp_path / "b"),
                           "--scenario", "noon"], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "unknown --scenario" in proc.stderr
    assert list(tmp_path.iterdir()) == []


def test_good_run_writes_bag_and_preview(tmp_path: Path, capsys) -> None:
    out = tmp_path / "fog_bag"
    rc = cli.main(["sim", "--out", str(out), "--seconds", "0.1", "--seed", "2", "--scenario", "fog",
                   "--family", "campus", "--storage", "sqlite3", "--workers", "0"])
    printed = capsys.readouterr().out
    assert rc == 0
    assert (out / "metadata.yaml").is_file() and list(out.glob("*.db3"))
    assert (tmp_path / "fog_bag_preview.png").is_file()
    assert str(out) in printed and "3 thermal" in printed


@pytest.mark.slow
def test_sigterm_leaves_no_partial_bag(tmp_path: Path) -> None:
    out = tmp_path / "long"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, "-m", "monother_ros.cli", "sim", "--out", str(out), "--seconds", "30"],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        # Wait until the writer has started (its hidden temporary folder exists) and written something.
        while time.monotonic() < deadline:
            partial = [p for p in tmp_path.iterdir() if p.name.startswith(".long.partial")]
            if partial and any(f.stat().st_size > 10_000_000 for f in partial[0].rglob("*") if f.is_file()):
                break
            time.sleep(0.2)
        else:
            pytest.fail("the writer never started")
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0
    assert "interrupted" in err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_demo_writes_bag_and_pictures(tmp_path: Path, capsys) -> None:
    from monother_ros.demo import run_demo

    result = run_demo(tmp_path / "demo", seconds=0.1, pipeline_seconds=0)  # the pipeline part: test_ros_graph.py
    assert result.bag.is_dir() and result.preview.is_file() and result.gallery.is_file()
    again = run_demo(tmp_path / "demo", seconds=0.1, pipeline_seconds=0)  # a second run replaces its own outputs
    assert again.bag == result.bag
    rc = cli.main(["demo", "--out", str(tmp_path / "file.txt")]) if (tmp_path / "file.txt").write_text("x") else 1
    assert rc == 2 and "not a folder" in capsys.readouterr().err


def test_compressed_recording_and_ros1_copy(tmp_path: Path, capsys) -> None:
    from monother_ros.eval.bag_reader import BagReader, image_to_numpy

    out, ros1 = tmp_path / "drive", tmp_path / "drive.bag"
    rc = cli.main(["sim", "--out", str(out), "--seconds", "0.1", "--workers", "0", "--compress", "thermal=png",
                   "--compress", "rgb=png", "--ros1", str(ros1)])
    assert rc == 0, capsys.readouterr().err
    assert "(ROS 1)" in capsys.readouterr().out
    for path in (out, ros1):
        with BagReader(path) as bag:
            topics = bag.topics
            assert "/thermal/image_raw" not in topics and "/rgb/image_raw" not in topics
            assert topics["/thermal/image_raw/compressed"].msgtype == "sensor_msgs/msg/CompressedImage"
            message = bag.first_message("/thermal/image_raw/compressed")
            assert message.msg.format == "mono16; png compressed"
            thermal = image_to_numpy(message.msg)
            assert thermal.dtype.name == "uint16" and thermal.shape == (512, 640) and thermal.std() > 0
            rgb = image_to_numpy(bag.first_message("/rgb/image_raw/compressed").msg)
            assert rgb.shape == (720, 1280, 3)
