"""Soak: `monother rig --sim` for a long time with every depth output subscribed, printing RSS over time.

Run: .venv/bin/python bench/soak_rig.py [--minutes 10] [--every 10] [--model DIR] [--render-scale 0.5]

The rig (simulated rig + thermal_depth, one process) runs as a subprocess; this process subscribes to
depth/image, depth/confidence, depth/camera_info and depth/points (so the node computes everything) and
samples the rig's resident memory (VmRSS from /proc) every ``--every`` seconds. At the end it compares
the mean RSS of the last quarter with that of the second quarter (after warm-up): growth above 5 % (or
above 50 MB) is reported as a possible leak. Also printed: output messages received per interval.
"""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent

os.environ.setdefault("ROS_DOMAIN_ID", str(150 + os.getpid() % 60))
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ.setdefault("FASTDDS_DEFAULT_PROFILES_FILE", str(ROOT / "config" / "fastdds.xml"))
os.environ.setdefault("ROS_LOG_DIR", tempfile.mkdtemp(prefix="monother_soak_log_"))


def rss_mb(pid: int) -> float:
    """Resident memory of a process in MB (VmRSS)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return float("nan")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--every", type=float, default=10.0, help="seconds between RSS samples")
    parser.add_argument("--model", default="", help="model folder or .onnx (default: the demo's model)")
    parser.add_argument("--render-scale", type=float, default=0.5)
    args = parser.parse_args()

    import rclpy
    from rclpy.context import Context
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node
    from sensor_msgs.msg import CameraInfo, Image, PointCloud2

    from monother_ros.demo import demo_model
    from monother_ros.ros import qos

    model, placeholder = demo_model(args.model or None)
    work = Path(tempfile.mkdtemp(prefix="monother_soak_"))
    config = yaml.safe_load((ROOT / "config" / "rig.yaml").read_text())
    config["/**/sim_rig"]["ros__parameters"].update(render_scale=args.render_scale, publish_lidar=False)
    (work / "rig.yaml").write_text(yaml.safe_dump(config))
    log = open(work / "rig.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "monother_ros.cli", "rig", "--sim", "--config", str(work / "rig.yaml"),
                             "--model", str(model), "--backend", "onnxruntime"], cwd=ROOT, env=os.environ.copy(),
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    context = Context()
    rclpy.init(context=context)
    node = Node("soak_listener", context=context)
    counts = {"depth/image": 0, "depth/confidence": 0, "depth/camera_info": 0, "depth/points": 0}
    lock = threading.Lock()

    def counter(topic):
        def cb(_raw) -> None:
            with lock:
                counts[topic] += 1
        return cb

    types = {"depth/image": Image, "depth/confidence": Image, "depth/camera_info": CameraInfo, "depth/points": PointCloud2}
    for topic, msg_type in types.items():
        node.create_subscription(msg_type, topic, counter(topic), qos.SENSOR, raw=True)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()

    print(f"soak {args.minutes:g} min: monother rig --sim (render scale {args.render_scale}), model {model}"
          f"{' (UNTRAINED placeholder)' if placeholder else ''}; rig pid {proc.pid}; log {work / 'rig.log'}")
    print(f"{'t (s)':>7s} {'RSS (MB)':>9s} {'depth msgs':>11s} {'clouds':>7s} {'rate (Hz)':>10s}")
    samples: list[tuple[float, float]] = []
    t0 = time.monotonic()
    last_depth = 0
    try:
        while time.monotonic() - t0 < args.minutes * 60:
            time.sleep(args.every)
            if proc.poll() is not None:
                print(f"the rig exited with code {proc.returncode}; see {work / 'rig.log'}")
                return 1
            t = time.monotonic() - t0
            rss = rss_mb(proc.pid)
            with lock:
                depth, clouds = counts["depth/image"], counts["depth/points"]
            samples.append((t, rss))
            print(f"{t:7.0f} {rss:9.1f} {depth:11d} {clouds:7d} {(depth - last_depth) / args.every:10.2f}", flush=True)
            last_depth = depth
    finally:
        stop_s = float("nan")
        if proc.poll() is None:
            t_stop = time.monotonic()
            os.killpg(proc.pid, signal.SIGINT)
            try:
                proc.wait(30)
                stop_s = time.monotonic() - t_stop
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGUSR1)  # the rig prints every thread's stack (faulthandler)
                time.sleep(1.0)
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                print(f"the rig did not stop within 30 s of SIGINT: killed; stacks in {work / 'rig.log'}")
        executor.shutdown(timeout_sec=2)
        spinner.join(timeout=5)
        node.destroy_node()
        context.try_shutdown()
        log.close()
    n = len(samples)
    if n >= 4:
        q = n // 4
        second = sum(r for _, r in samples[q : 2 * q]) / q
        last = sum(r for _, r in samples[n - q :]) / q
        growth = last - second
        verdict = "possible leak" if growth > max(0.05 * second, 50.0) else "flat"
        print(f"RSS second quarter {second:.1f} MB, last quarter {last:.1f} MB: growth {growth:+.1f} MB "
              f"({100 * growth / second:+.1f} %) -> {verdict}; exit code {proc.returncode} after {stop_s:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
