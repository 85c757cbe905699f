"""thermal_depth over DDS: end-to-end latency minus engine time, and output rate / latency under 30 Hz + 20 Hz.

Run: .venv/bin/python bench/bench_ros_latency.py [--model DIR] [--size 640x512] [--frames 40] [--load-seconds 10]

The node runs in its own process (``python -m monother_ros.ros.depth_node``, the shipped Fast DDS
profile, ONNX Runtime); this process publishes thermal frames (mono16) + camera_info and receives the
outputs, so latency = receive time - publish time on one clock. The engine time is the node's own
(``/diagnostics`` "engine time": pre + network + post, per frame, over the same frames).

Sections (a fresh node each, so that the diagnostics cover only that section):
  1. latency, depth/image only: frames at a low rate (no queueing); overhead = latency p50 - engine p50.
     Goal: overhead <= max(10 % of the engine time, 5 ms).
  2. latency, every output subscribed (depth, confidence, camera_info, points): same measure.
  3. load: thermal 30 Hz + RGB 20 Hz (1280x720 rgb8, not used by a student-only node) for
     ``--load-seconds``. Goals: output rate = min(30 Hz, engine rate) within 10 %; p99 latency <
     2 x engine time + one frame period (33 ms).
  4. the same load with ``teacher.enabled`` (torch backend, a dual model of the default architecture:
     student + RGB teacher + confidence U-Net; untrained unless ``--dual-model``), static extrinsic on
     /tf_static: the engine time then mixes student-only and teacher frames. Skipped with ``--no-teacher``.
Model: ``--model`` or the demo's model (engines/default, else the untrained placeholder with the default
architecture: its speed is the real one).
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
S = 1_000_000_000


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("ROS_DOMAIN_ID", str(150 + os.getpid() % 60))
    env["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    env.setdefault("FASTDDS_DEFAULT_PROFILES_FILE", str(ROOT / "config" / "fastdds.xml"))
    env.setdefault("ROS_LOG_DIR", tempfile.mkdtemp(prefix="monother_bench_log_"))
    return env


os.environ.update(_env())  # before rclpy is imported: this process joins the same domain


class NodeProcess:
    def __init__(self, params: dict[str, str], log: Path) -> None:
        args = [sys.executable, "-m", "monother_ros.ros.depth_node", "--ros-args"]
        for k, v in params.items():
            args += ["-p", f"{k}:={v}"]
        self.log = open(log, "wb")
        self.proc = subprocess.Popen(args, cwd=ROOT, env=os.environ.copy(), stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=True)

    def stop(self) -> None:
        import signal

        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGINT)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
        self.log.close()


class Client:
    """Publisher of thermal/RGB/camera_info and receiver of the outputs and /diagnostics."""

    def __init__(self, context, size: tuple[int, int]) -> None:
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.node import Node
        from sensor_msgs.msg import CameraInfo, Image, PointCloud2

        from monother_ros.core.camera import PinholeCamera
        from monother_ros.ros import qos

        self.node = Node("bench_client", context=context)
        self.w, self.h = size
        self.camera = PinholeCamera.from_hfov(self.w, self.h, 50.0)
        self.pub = self.node.create_publisher(Image, "thermal/image_raw", qos.SENSOR)
        self.pub_info = self.node.create_publisher(CameraInfo, "thermal/camera_info", qos.SENSOR)
        self.pub_rgb = self.node.create_publisher(Image, "rgb/image_raw", qos.SENSOR)
        self.pub_rgb_info = self.node.create_publisher(CameraInfo, "rgb/camera_info", qos.SENSOR)
        self.rgb_camera = PinholeCamera.from_hfov(1280, 720, 70.0)
        self.lock = threading.Lock()
        self.sent: dict[int, float] = {}
        self.received: dict[str, dict[int, float]] = {}
        self.diagnostics: list = []
        self.subs = []
        self._types = {"depth/image": Image, "depth/confidence": Image, "depth/camera_info": CameraInfo,
                       "depth/points": PointCloud2}
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diag, qos.DIAGNOSTICS)
        rng = np.random.default_rng(0)
        yy, xx = np.mgrid[0 : self.h, 0 : self.w]
        self.frames = [(20000 + 8 * yy + 900 * np.sin(xx / (9.0 + k)) + rng.normal(0, 40, (self.h, self.w)))
                       .astype(np.uint16) for k in range(4)]
        self.rgb = rng.integers(0, 255, (720, 1280, 3)).astype(np.uint8)

    def subscribe(self, topics) -> None:
        from monother_ros.ros import qos

        for topic in topics:
            self.received[topic] = {}
            self.subs.append(self.node.create_subscription(self._types[topic], topic, self._on_output(topic),
                                                           qos.SENSOR, raw=True))

    def unsubscribe(self) -> None:
        for sub in self.subs:
            self.node.destroy_subscription(sub)
        self.subs = []

    def _on_output(self, topic):
        import struct

        def callback(raw: bytes) -> None:
            now = time.monotonic()
            sec, nanosec = struct.unpack_from("<iI", raw, 4)
            with self.lock:
                self.received[topic][sec * S + nanosec] = now
        return callback

    def _on_diag(self, msg) -> None:
        for status in msg.status:
            if status.name.startswith("thermal_depth"):
                with self.lock:
                    self.diagnostics.append({kv.key: kv.value for kv in status.values})

    def send(self, k: int, stamp_ns: int) -> None:
        from monother_ros.ros.convert import array_to_image, camera_to_info

        msg = array_to_image(self.frames[k % len(self.frames)], encoding="mono16", stamp_ns=stamp_ns,
                             frame_id="thermal_optical_frame")
        info = camera_to_info(self.camera, stamp_ns=stamp_ns, frame_id="thermal_optical_frame")
        self.pub_info.publish(info)
        t = time.monotonic()
        self.pub.publish(msg)
        with self.lock:
            self.sent[stamp_ns] = t

    def send_rgb(self, stamp_ns: int) -> None:
        from monother_ros.ros.convert import array_to_image, camera_to_info

        self.pub_rgb_info.publish(camera_to_info(self.rgb_camera, stamp_ns=stamp_ns, frame_id="rgb_optical_frame"))
        self.pub_rgb.publish(array_to_image(self.rgb, encoding="rgb8", stamp_ns=stamp_ns, frame_id="rgb_optical_frame"))

    def send_extrinsic(self) -> None:
        """Static thermal -> RGB transform (5 cm baseline) on /tf_static, latched."""
        from monother_ros.ros.tf import StaticTransformBroadcaster, transform_to_msg

        T = np.eye(4)
        T[0, 3] = -0.05
        self._static = StaticTransformBroadcaster(self.node)
        self._static.send(transform_to_msg("rgb_optical_frame", "thermal_optical_frame", 0, T))

    def latencies(self, topic: str = "depth/image") -> np.ndarray:
        with self.lock:
            return np.array([self.received[topic][s] - self.sent[s] for s in self.received[topic] if s in self.sent])

    def last_diag(self) -> dict[str, str]:
        with self.lock:
            return dict(self.diagnostics[-1]) if self.diagnostics else {}

    def reset(self) -> None:
        with self.lock:
            self.sent.clear()
            for topic in self.received:
                self.received[topic].clear()
            self.diagnostics.clear()


def _wait(pred, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.01)
    return bool(pred())


def _start_node(client: Client, params: dict[str, str], log: Path, topics) -> NodeProcess:
    node = NodeProcess(params, log)
    client.subscribe(topics)
    if not _wait(lambda: client.node.count_subscribers("thermal/image_raw") >= 1, 120):
        node.stop()
        raise SystemExit(f"the depth node did not start; log: {log}\n{log.read_text()[-2000:]}")
    # Prime: one frame through, so discovery of every output is done before measuring.
    stamp = 10 * S
    for _ in range(100):
        client.send(0, stamp)
        if _wait(lambda: all(len(client.received[t]) for t in topics), 0.5):
            break
        stamp += S // 100
    client.reset()
    return node


def latency_section(client: Client, params, log, topics, frames: int, rate_hz: float) -> dict[str, float]:
    node = _start_node(client, params, log, topics)
    try:
        stamp = 100 * S
        for k in range(frames):
            client.send(k, stamp + k * S // 30)
            time.sleep(1.0 / rate_hz)
        _wait(lambda: len(client.received["depth/image"]) >= frames, 5)
        _wait(lambda: client.last_diag().get("frames published", "0") != "0", 3)
        time.sleep(1.2)  # one more diagnostics period covering every frame
        lat = client.latencies()
        diag = client.last_diag()
    finally:
        node.stop()
        client.unsubscribe()
    engine_p50 = float(diag.get("engine time p50 (ms)", "nan"))
    return {"frames": float(len(lat)), "latency_p50": float(np.median(lat) * 1e3) if len(lat) else float("nan"),
            "latency_p99": float(np.percentile(lat, 99) * 1e3) if len(lat) else float("nan"),
            "engine_p50": engine_p50, "engine_mean": float(diag.get("engine time mean (ms)", "nan")),
            "in_node_p50": float(diag.get("latency receive->publish p50 (ms)", "nan")),
            "dropped": float(diag.get("frames dropped (worker busy)", "nan"))}


def load_section(client: Client, params, log, seconds: float) -> dict[str, float]:
    node = _start_node(client, params, log, ["depth/image"])
    try:
        t0 = time.monotonic()
        stamp0 = 1000 * S
        next_t, next_r = t0, t0
        k = 0
        while time.monotonic() - t0 < seconds:
            now = time.monotonic()
            if now >= next_t:
                client.send(k, stamp0 + int((next_t - t0) * S))
                k += 1
                next_t += 1 / 30.0
            if now >= next_r:
                client.send_rgb(stamp0 + int((next_r - t0) * S))
                next_r += 1 / 20.0
            time.sleep(max(0.0, min(next_t, next_r) - time.monotonic()))
        elapsed = time.monotonic() - t0
        time.sleep(1.2)
        lat = client.latencies()
        diag = client.last_diag()
        with client.lock:
            recv = sorted(client.received["depth/image"].values())
    finally:
        node.stop()
        client.unsubscribe()
    out_rate = (len(recv) - 1) / (recv[-1] - recv[0]) if len(recv) > 1 else 0.0
    return {"sent": float(k), "input_rate": k / elapsed, "output_rate": out_rate,
            "engine_mean": float(diag.get("engine time mean (ms)", "nan")),
            "engine_p50": float(diag.get("engine time p50 (ms)", "nan")),
            "latency_p50": float(np.median(lat) * 1e3), "latency_p99": float(np.percentile(lat, 99) * 1e3),
            "dropped": float(diag.get("frames dropped (worker busy)", "nan")),
            "teacher_runs": float(diag.get("frames teacher_runs", "nan")),
            "student_only": float(diag.get("frames student_only", "nan"))}


def _dual_model(path: str) -> Path:
    """``path``, or an untrained dual model of the default architecture built once into engines/cache."""
    if path:
        return Path(path)
    from monother_ros.paths import engines_dir

    target = engines_dir() / "cache" / "untrained-dual-placeholder"
    if not (target / "config.json").is_file():
        import torch

        from monother_ros.model.checkpoints import save_model
        from monother_ros.model.dual import MonotherDual
        from monother_ros.model.variants import get_preset

        torch.manual_seed(0)
        config = get_preset("monother-default")
        save_model(MonotherDual(config).eval(), config, target, kind=MonotherDual.checkpoint_kind,
                   metadata={"note": "UNTRAINED dual placeholder for benchmarks"})
    return target


def _print_load(title: str, c: dict[str, float], seconds: float) -> None:
    engine_rate = 1000.0 / c["engine_mean"]
    expected = min(c["input_rate"], engine_rate)
    rate_ratio = c["output_rate"] / expected
    p99_goal = 2 * c["engine_mean"] + 1000.0 / 30
    print()
    print(f"{title}: thermal {c['input_rate']:.1f} Hz + RGB 20 Hz for {seconds:g} s ({c['sent']:.0f} frames; "
          f"teacher runs {c['teacher_runs']:.0f}, student only {c['student_only']:.0f})")
    print(f"   output rate {c['output_rate']:.2f} Hz vs min(input {c['input_rate']:.1f}, engine {engine_rate:.1f}) = "
          f"{expected:.2f} Hz: ratio {rate_ratio:.3f} -> {'met' if abs(rate_ratio - 1) <= 0.1 else 'NOT met'} (within 10 %)")
    print(f"   latency p50 {c['latency_p50']:.1f} ms, p99 {c['latency_p99']:.1f} ms vs 2 x engine {c['engine_mean']:.1f} "
          f"+ 33.3 = {p99_goal:.1f} ms: ratio {c['latency_p99'] / p99_goal:.2f} -> "
          f"{'met' if c['latency_p99'] < p99_goal else 'NOT met'}; dropped (latest-only) {c['dropped']:.0f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="", help="model folder or .onnx (default: the demo's model)")
    parser.add_argument("--size", default="640x512", help="thermal WxH")
    parser.add_argument("--frames", type=int, default=40, help="frames per latency section")
    parser.add_argument("--rate", type=float, default=4.0, help="frame rate of the latency sections (Hz)")
    parser.add_argument("--load-seconds", type=float, default=10.0)
    parser.add_argument("--threads", type=int, default=0, help="engine CPU threads (0 = backend default)")
    parser.add_argument("--no-teacher", action="store_true", help="skip section 4 (teacher enabled)")
    parser.add_argument("--dual-model", default="", help="dual model for section 4 (default: untrained placeholder)")
    args = parser.parse_args()
    import rclpy
    from rclpy.context import Context
    from rclpy.executors import SingleThreadedExecutor

    from monother_ros.demo import demo_model

    model, placeholder = demo_model(args.model or None)
    w, h = (int(v) for v in args.size.lower().split("x"))
    params = {"model": str(model), "backend": "onnxruntime", "num_threads": str(args.threads),
              "diagnostics_period_s": "0.5"}
    logdir = Path(tempfile.mkdtemp(prefix="monother_bench_"))
    context = Context()
    rclpy.init(context=context)
    client = Client(context, (w, h))
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(client.node)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    d = None
    try:
        print(f"model {model}{' (UNTRAINED placeholder: speed only)' if placeholder else ''}, thermal {w}x{h}, "
              f"node in another process, ONNX Runtime, {os.cpu_count()} CPUs")
        a = latency_section(client, params, logdir / "a.log", ["depth/image"], args.frames, args.rate)
        b = latency_section(client, params, logdir / "b.log",
                            ["depth/image", "depth/confidence", "depth/camera_info", "depth/points"], args.frames,
                            args.rate)
        c = load_section(client, params, logdir / "c.log", args.load_seconds)
        if not args.no_teacher:
            client.send_extrinsic()
            teacher_params = {**params, "model": str(_dual_model(args.dual_model)), "backend": "torch",
                              "teacher.enabled": "true", "fusion.enabled": "true"}
            d = load_section(client, teacher_params, logdir / "d.log", args.load_seconds)
    finally:
        executor.shutdown(timeout_sec=2)
        spinner.join(timeout=5)
        client.node.destroy_node()
        context.try_shutdown()

    print()
    print(f"{'latency (publish -> receive), ms':44s} {'p50':>8s} {'p99':>8s} {'engine p50':>11s} {'overhead':>9s} "
          f"{'goal':>7s} {'ratio':>6s}  (in node: receive->publish p50)")
    for name, r in (("1. depth/image only", a), ("2. all outputs (+ 5 MB cloud)", b)):
        overhead = r["latency_p50"] - r["engine_p50"]
        goal = max(0.1 * r["engine_p50"], 5.0)
        print(f"{name:44s} {r['latency_p50']:8.2f} {r['latency_p99']:8.2f} {r['engine_p50']:11.2f} {overhead:9.2f} "
              f"{goal:7.2f} {overhead / goal:6.2f}  {'met' if overhead <= goal else 'NOT met'}  "
              f"({r['frames']:.0f} frames; in node {r['in_node_p50']:.2f})")
    _print_load("3. load, student only", c, args.load_seconds)
    if d is not None:
        _print_load("4. load, teacher + fusion (torch)", d, args.load_seconds)
    print(f"load average during the run: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs (shared machine)")
    print(f"node logs: {logdir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
