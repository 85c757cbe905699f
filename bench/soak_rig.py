"""Soak: `monother rig --sim` without and with `--adapt`, one after the other in one run, printed as ratios.

Run: .venv/bin/python bench/soak_rig.py [--minutes 10] [--baseline-minutes 2] [--phases both|plain|adapt]
         [--every 10] [--warmup 30] [--model DIR] [--render-scale 0.5]

Each phase runs the rig (simulated rig + thermal_depth, plus online_adaptation in the ``adapt`` phase: one
process, as ``monother rig --sim [--adapt]``) as a subprocess. This process subscribes to every depth
output (depth/image, depth/confidence, depth/camera_info, depth/points: the node computes everything),
to thermal/image_raw (the input frame period) and to adaptation/status, and samples the rig's resident
memory (VmRSS) every ``--every`` seconds. The first ``--warmup`` seconds after the first depth image are
not scored. Per phase:

* depth output rate (depth/image messages per second);
* longest gap between two depth images, in input frame periods (median thermal/image_raw interval);
* RSS slope over the last half of the phase (least squares), MB/min: "flat" below 8 MB/min.

Then the ratios: depth rate with adaptation / without (goal >= 0.80), longest gap with adaptation
(goal <= 3 frame periods), RSS slope with adaptation (goal flat), and what the learner did (rounds,
accepted, swaps, checkpoints), since a ratio means nothing if adaptation never ran. The adapt phase
writes its checkpoints into the run's temporary folder (no resume from an earlier run).
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parent.parent

os.environ.setdefault("ROS_DOMAIN_ID", str(150 + os.getpid() % 60))
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ.setdefault("FASTDDS_DEFAULT_PROFILES_FILE", str(ROOT / "config" / "fastdds.xml"))
os.environ.setdefault("ROS_LOG_DIR", tempfile.mkdtemp(prefix="monother_soak_log_"))

FLAT_MB_PER_MIN = 8.0
RATE_GOAL = 0.80
GAP_GOAL_FRAMES = 3.0
DEPTH_TOPICS = ("depth/image", "depth/confidence", "depth/camera_info", "depth/points")


def rss_mb(pid: int) -> float:
    """Resident memory of a process in MB (VmRSS)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return float("nan")


def slope_mb_per_min(samples: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, MB) samples, MB per minute; NaN with fewer than 3 samples."""
    pts = np.array([(t, r) for t, r in samples if np.isfinite(r)], dtype=np.float64)
    if len(pts) < 3:
        return float("nan")
    return float(np.polyfit(pts[:, 0], pts[:, 1], 1)[0] * 60.0)


@dataclass
class PhaseResult:
    """What one phase measured (times in seconds, rates in Hz)."""

    name: str
    scored_s: float = float("nan")
    depth_rate_hz: float = float("nan")
    frame_period_s: float = float("nan")
    longest_gap_s: float = float("nan")
    longest_gap_frames: float = float("nan")
    rss_start_mb: float = float("nan")
    rss_end_mb: float = float("nan")
    rss_slope_mb_min: float = float("nan")
    exit_code: Optional[int] = None
    stop_s: float = float("nan")
    adaptation: dict[str, Any] = field(default_factory=dict)
    error: str = ""


class Listener:
    """Receive times of the depth outputs and the thermal input, and the last adaptation status."""

    def __init__(self) -> None:
        import rclpy
        from rclpy.context import Context
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.node import Node
        from sensor_msgs.msg import CameraInfo, Image, PointCloud2
        from std_msgs.msg import String

        from monother_ros.ros import qos

        self.context = Context()
        rclpy.init(context=self.context)
        self.node = Node("soak_listener", context=self.context)
        self.lock = threading.Lock()
        self.times: dict[str, list[float]] = {}
        self.status: Optional[dict[str, Any]] = None
        types = {"depth/image": Image, "depth/confidence": Image, "depth/camera_info": CameraInfo,
                 "depth/points": PointCloud2, "thermal/image_raw": Image}
        for topic, msg_type in types.items():
            self.node.create_subscription(msg_type, topic, self._stamp(topic), qos.SENSOR, raw=True)
        self.node.create_subscription(String, "adaptation/status", self._on_status, qos.TF_STATIC_PUBLISHER)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.thread = threading.Thread(target=self.executor.spin, daemon=True)
        self.thread.start()
        self.reset()

    def _stamp(self, topic: str):
        def callback(_raw) -> None:
            now = time.monotonic()
            with self.lock:
                self.times[topic].append(now)
        return callback

    def _on_status(self, msg) -> None:
        try:
            status = json.loads(msg.data)
        except ValueError:
            return
        with self.lock:
            self.status = status

    def reset(self) -> None:
        with self.lock:
            self.times = {t: [] for t in (*DEPTH_TOPICS, "thermal/image_raw")}
            self.status = None

    def snapshot(self) -> tuple[dict[str, np.ndarray], Optional[dict[str, Any]]]:
        with self.lock:
            return {k: np.array(v) for k, v in self.times.items()}, self.status

    def close(self) -> None:
        self.executor.shutdown(timeout_sec=2)
        self.thread.join(timeout=5)
        self.node.destroy_node()
        self.context.try_shutdown()


def _write_config(work: Path, args) -> Path:
    config = yaml.safe_load((ROOT / "config" / "rig.yaml").read_text())
    config["/**/sim_rig"]["ros__parameters"].update(render_scale=args.render_scale, publish_lidar=False)
    adapt = config["/**/online_adaptation"]["ros__parameters"]
    adapt["checkpoint"].update(dir=str(work / "adapt_checkpoints"), resume=False)
    path = work / "rig.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _stop(proc: subprocess.Popen, work: Path) -> float:
    """SIGINT the rig's process group (Ctrl-C); seconds it took to exit (NaN when it had to be killed)."""
    if proc.poll() is not None:
        return float("nan")
    t0 = time.monotonic()
    os.killpg(proc.pid, signal.SIGINT)
    try:
        proc.wait(30)
        return time.monotonic() - t0
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGUSR1)  # the rig prints every thread's stack (faulthandler)
        time.sleep(1.0)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        print(f"the rig did not stop within 30 s of SIGINT: killed; stacks in {work}")
        return float("nan")


def run_phase(name: str, adapt: bool, minutes: float, args, model: Path, config: Path, work: Path,
              listener: Listener) -> PhaseResult:
    """One rig run of ``minutes`` (after its first depth image), scored after ``args.warmup`` seconds."""
    result = PhaseResult(name)
    log_path = work / f"rig_{name}.log"
    command = [sys.executable, "-m", "monother_ros.cli", "rig", "--sim", "--config", str(config), "--model", str(model),
               "--backend", args.backend] + (["--adapt"] if adapt else [])
    listener.reset()
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(command, cwd=ROOT, env=os.environ.copy(), stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        try:
            deadline = time.monotonic() + 300
            while not len(listener.snapshot()[0]["depth/image"]) and time.monotonic() < deadline:
                if proc.poll() is not None:
                    break
                time.sleep(0.2)
            if proc.poll() is not None or not len(listener.snapshot()[0]["depth/image"]):
                result.error = f"no depth image (exit code {proc.poll()}); see {log_path}"
                return result
            t0 = time.monotonic()
            score_from = t0 + args.warmup
            samples: list[tuple[float, float]] = []
            last = 0
            print(f"\n[{name}] {' '.join(command[2:])}; rig pid {proc.pid}; log {log_path}")
            print(f"{'t (s)':>7s} {'RSS (MB)':>9s} {'depth msgs':>11s} {'clouds':>7s} {'rate (Hz)':>10s}"
                  + (f" {'rounds':>7s} {'accepted':>9s} {'swaps':>6s}" if adapt else ""))
            end = t0 + minutes * 60.0
            while time.monotonic() < end:
                time.sleep(min(args.every, max(0.0, end - time.monotonic())))
                if proc.poll() is not None:
                    result.error = f"the rig exited with code {proc.returncode}; see {log_path}"
                    break
                t = time.monotonic() - t0
                rss = rss_mb(proc.pid)
                samples.append((t, rss))
                times, status = listener.snapshot()
                depth, clouds = len(times["depth/image"]), len(times["depth/points"])
                line = f"{t:7.0f} {rss:9.1f} {depth:11d} {clouds:7d} {(depth - last) / args.every:10.2f}"
                if adapt:
                    s = status or {}
                    swaps = sum((s.get("swaps") or {}).get(k, 0) for k in ("in_process", "topic"))
                    line += f" {s.get('rounds', 0):7d} {s.get('accepted', 0):9d} {swaps:6d}"
                print(line, flush=True)
                last = depth
            times, status = listener.snapshot()
        finally:
            result.stop_s = _stop(proc, work)
            result.exit_code = proc.returncode
    t_end = time.monotonic() if not samples else t0 + samples[-1][0]
    depth_t = times["depth/image"]
    scored = depth_t[(depth_t >= score_from) & (depth_t <= t_end)]
    thermal_t = times["thermal/image_raw"]
    thermal_t = thermal_t[(thermal_t >= score_from) & (thermal_t <= t_end)]
    result.scored_s = max(0.0, t_end - score_from)
    if result.scored_s > 0 and len(scored) >= 2:
        result.depth_rate_hz = len(scored) / result.scored_s
        # Gaps include the edges of the scored window (a stall at its end counts too).
        edges = np.concatenate([[score_from], scored, [t_end]])
        result.longest_gap_s = float(np.max(np.diff(edges)))
    if len(thermal_t) >= 3:
        result.frame_period_s = float(np.median(np.diff(thermal_t)))
        result.longest_gap_frames = result.longest_gap_s / result.frame_period_s
    if samples:
        result.rss_start_mb, result.rss_end_mb = samples[0][1], samples[-1][1]
        half = samples[0][0] + (samples[-1][0] - samples[0][0]) / 2
        result.rss_slope_mb_min = slope_mb_per_min([s for s in samples if s[0] >= half])
    if adapt and status:
        result.adaptation = {k: status.get(k) for k in ("rounds", "steps", "accepted", "rejected", "rollbacks",
                                                        "checkpoints", "checkpoint_errors", "update_errors",
                                                        "swaps", "duty_cycle_used", "state", "buffer", "held_out",
                                                        "keyframes", "decisions")}
    return result


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def report(results: dict[str, PhaseResult]) -> int:
    """Print the phase table and the ratios; 0 when every goal measured is met, 1 otherwise."""
    print(f"\n{'phase':<8s} {'scored s':>8s} {'depth Hz':>9s} {'frame ms':>9s} {'longest gap':>12s} {'(frames)':>9s} "
          f"{'RSS start':>10s} {'RSS end':>8s} {'slope MB/min':>13s} {'exit':>5s} {'stop s':>7s}")
    for r in results.values():
        print(f"{r.name:<8s} {r.scored_s:8.0f} {r.depth_rate_hz:9.2f} {1000 * r.frame_period_s:9.1f} "
              f"{r.longest_gap_s:11.2f}s {r.longest_gap_frames:9.1f} {r.rss_start_mb:10.1f} {r.rss_end_mb:8.1f} "
              f"{r.rss_slope_mb_min:+13.2f} {str(r.exit_code):>5s} {r.stop_s:7.1f}" + (f"  {r.error}" if r.error else ""))
    ok = all(not r.error for r in results.values())
    plain, adapt = results.get("plain"), results.get("adapt")
    if plain is not None and adapt is not None:
        ratio = adapt.depth_rate_hz / plain.depth_rate_hz
        ok &= ratio >= RATE_GOAL
        print(f"depth rate with / without adaptation: {ratio:.3f} (goal >= {RATE_GOAL:.2f}) {_verdict(ratio >= RATE_GOAL)}")
    for r in results.values():
        gap_ok = r.longest_gap_frames <= GAP_GOAL_FRAMES
        flat = abs(r.rss_slope_mb_min) < FLAT_MB_PER_MIN
        if r.name == "adapt":
            ok &= gap_ok and flat
        print(f"[{r.name}] longest gap {r.longest_gap_frames:.1f} frame periods (goal <= {GAP_GOAL_FRAMES:g}) "
              f"{_verdict(gap_ok)}; RSS slope over the last half {r.rss_slope_mb_min:+.2f} MB/min "
              f"({'flat' if flat else 'growing'}, flat < {FLAT_MB_PER_MIN:g}); clean exit "
              f"{_verdict(r.exit_code == 0)}")
    if adapt is not None:
        a = adapt.adaptation
        print(f"[adapt] learner: {json.dumps(a, sort_keys=True)}")
        if not a.get("rounds"):
            print("[adapt] WARNING: no training round ran: the ratios do not measure adaptation's cost")
    return 0 if ok else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="length of the phase with adaptation")
    parser.add_argument("--baseline-minutes", type=float, default=2.0, help="length of the phase without it")
    parser.add_argument("--phases", choices=["both", "plain", "adapt"], default="both")
    parser.add_argument("--every", type=float, default=10.0, help="seconds between RSS samples")
    parser.add_argument("--warmup", type=float, default=30.0, help="seconds after the first depth image not scored")
    parser.add_argument("--model", default="", help="model folder or .onnx (default: the demo's model)")
    parser.add_argument("--backend", default="onnxruntime", choices=["auto", "tensorrt", "onnxruntime", "torch"])
    parser.add_argument("--render-scale", type=float, default=0.5)
    args = parser.parse_args()

    from monother_ros.demo import demo_model

    model, placeholder = demo_model(args.model or None)
    work = Path(tempfile.mkdtemp(prefix="monother_soak_"))
    config = _write_config(work, args)
    print(f"soak: monother rig --sim (render scale {args.render_scale}, {args.backend}), model {model}"
          f"{' (UNTRAINED placeholder)' if placeholder else ''}; without adaptation {args.baseline_minutes:g} min, "
          f"with {args.minutes:g} min; warm-up {args.warmup:g} s; work folder {work}")
    phases = {"both": (("plain", False, args.baseline_minutes), ("adapt", True, args.minutes)),
              "plain": (("plain", False, args.minutes),), "adapt": (("adapt", True, args.minutes),)}[args.phases]
    listener = Listener()
    results: dict[str, PhaseResult] = {}
    try:
        for name, adapt, minutes in phases:
            results[name] = run_phase(name, adapt, minutes, args, model, config, work, listener)
    finally:
        listener.close()
    return report(results)


if __name__ == "__main__":
    raise SystemExit(main())
