"""Compressed inputs: decode cost versus the shipped model, and the depth node's output rate raw vs compressed.

Run: .venv/bin/python bench/bench_decode.py [--model DIR] [--seconds 30] [--repeats 40] [--threads 1]

1. Decode (``core.image_codec.decode_compressed_image``, Pillow), median of ``--repeats`` runs each: a 640x512 16-bit PNG thermal
   frame (a simulated frame, encoded by ``encode_compressed_image``: zlib level 1) and a 1280x720 JPEG RGB frame
   (quality 90), each as a share of the shipped model's frame time (ONNX Runtime, ``--threads`` CPU threads,
   ``engine.infer`` = pre + network + post, median).
2. Output rate of ``thermal_depth`` (own process, ONNX Runtime, ``num_threads`` = ``--threads``) under
   thermal 30 Hz + RGB 20 Hz for ``--seconds`` each, first raw (Image mono16 / rgb8), then compressed
   (``thermal.transport``/``rgb.transport`` compressed: 16-bit PNG / JPEG, pre-encoded by this process).
   Goal: compressed output rate within 10 % of the raw one. The student-only node does not subscribe to
   RGB, so RGB loads DDS only (as on a robot without the teacher).
"""
from __future__ import annotations

import argparse
import array
import sys
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_ros_latency import S, NodeProcess, _wait  # noqa: E402 - also joins the bench's DDS domain

W, H = 640, 512


def sim_frames(count: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """``count`` simulated thermal (512x640 uint16) and RGB (720x1280x3 uint8) frames."""
    from monother_ros.sim.rig import SimRig

    rig = SimRig(0, "day", "urban")
    thermal = [rig.render_thermal(1.0 + 0.4 * k, rig.thermal_camera).counts for k in range(count)]
    rgb = [rig.render_rgb(1.0 + 0.4 * k, rig.rgb_camera).rgb for k in range(count)]
    return thermal, rgb


def _interleaved_medians(fns: dict, repeats: int) -> dict[str, float]:
    """Median milliseconds of each function, run in turn ``repeats`` times (so that load from other
    processes hits every measurement alike: the ratios are what counts)."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for name, fn in fns.items():
        fn()  # warm
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return {name: float(np.median(v) * 1e3) for name, v in times.items()}


def decode_section(model: Path, thermal: np.ndarray, rgb: np.ndarray, repeats: int, threads: int) -> None:
    from monother_ros.core.image_codec import decode_compressed_image as decode_compressed
    from monother_ros.core.image_codec import encode_compressed_image as encode_compressed
    from monother_ros.runtime.engine import make_backend

    png, png_fmt = encode_compressed(thermal, "mono16", "png")
    jpeg, jpeg_fmt = encode_compressed(rgb, "rgb8", "jpeg", jpeg_quality=90)
    assert np.array_equal(decode_compressed(png, png_fmt), thermal)
    engine = make_backend(model, "onnxruntime", num_threads=threads)
    try:
        ms = _interleaved_medians({"png": lambda: decode_compressed(png, png_fmt),
                                   "jpeg": lambda: decode_compressed(jpeg, jpeg_fmt),
                                   "frame": lambda: engine.infer(thermal)}, repeats)
        name, hw = engine.info.model_name, engine.info.input_hw
    finally:
        engine.close()
    frame_ms, png_ms, jpeg_ms = ms["frame"], ms["png"], ms["jpeg"]
    print(f"1. decode vs the shipped model ({name}, input {hw[0]}x{hw[1]}, ONNX Runtime {threads} thread(s), "
          f"frame {W}x{H}): model frame time {frame_ms:.1f} ms (median of {repeats}, interleaved)")
    print(f"   16-bit PNG {W}x{H} ({len(png) / 1024:.0f} KiB): {png_ms:.2f} ms = {png_ms / frame_ms:.1%} of a frame")
    print(f"   JPEG 1280x720 q90 ({len(jpeg) / 1024:.0f} KiB): {jpeg_ms:.2f} ms = {jpeg_ms / frame_ms:.1%} of a frame")


class Feeder:
    """Publishes thermal at 30 Hz and RGB at 20 Hz (raw or pre-encoded compressed) and times depth/image."""

    def __init__(self, context, thermal: list[np.ndarray], rgb: list[np.ndarray]) -> None:
        from rclpy.node import Node
        from sensor_msgs.msg import CameraInfo, CompressedImage, Image

        from monother_ros.core.camera import PinholeCamera
        from monother_ros.core.image_codec import encode_compressed_image as encode_compressed
        from monother_ros.ros import qos
        from monother_ros.ros.convert import array_to_image

        self.node = Node("bench_decode_client", context=context)
        self.camera = PinholeCamera.from_hfov(W, H, 50.0)
        self.pubs = {
            "raw": (self.node.create_publisher(Image, "thermal/image_raw", qos.SENSOR),
                    self.node.create_publisher(Image, "rgb/image_raw", qos.SENSOR)),
            "compressed": (self.node.create_publisher(CompressedImage, "thermal/image_raw/compressed", qos.SENSOR),
                           self.node.create_publisher(CompressedImage, "rgb/image_raw/compressed", qos.SENSOR)),
        }
        self.pub_info = self.node.create_publisher(CameraInfo, "thermal/camera_info", qos.SENSOR)
        self.messages = {
            "raw": ([array_to_image(t, encoding="mono16", frame_id="thermal_optical_frame") for t in thermal],
                    [array_to_image(r, encoding="rgb8", frame_id="rgb_optical_frame") for r in rgb]),
            "compressed": ([self._compressed(*encode_compressed(t, "mono16", "png"),
                                             "thermal_optical_frame") for t in thermal],
                           [self._compressed(*encode_compressed(r, "rgb8", "jpeg"), "rgb_optical_frame") for r in rgb]),
        }
        self.lock = threading.Lock()
        self.received: list[float] = []
        self.node.create_subscription(Image, "depth/image", self._on_depth, qos.SENSOR, raw=True)

    @staticmethod
    def _compressed(payload: bytes, fmt: str, frame_id: str):
        from sensor_msgs.msg import CompressedImage

        msg = CompressedImage(format=fmt)
        msg.header.frame_id = frame_id
        buffer = array.array("B")
        buffer.frombytes(payload)
        msg.data = buffer
        return msg

    def _on_depth(self, _raw: bytes) -> None:
        with self.lock:
            self.received.append(time.monotonic())

    def run(self, transport: str, seconds: float) -> tuple[float, int]:
        """Publish for ``seconds``; returns (thermal input rate Hz, thermal frames sent)."""
        from monother_ros.ros.convert import camera_to_info, ns_to_stamp

        pub_t, pub_r = self.pubs[transport]
        thermal, rgb = self.messages[transport]
        t0 = time.monotonic()
        next_t, next_r, k, j = t0, t0, 0, 0
        while time.monotonic() - t0 < seconds:
            now = time.monotonic()
            if now >= next_t:
                stamp = ns_to_stamp(1000 * S + int((next_t - t0) * S))
                msg = thermal[k % len(thermal)]
                msg.header.stamp = stamp
                info = camera_to_info(self.camera, frame_id="thermal_optical_frame")
                info.header.stamp = stamp
                self.pub_info.publish(info)
                pub_t.publish(msg)
                k += 1
                next_t += 1 / 30.0
            if now >= next_r:
                msg = rgb[j % len(rgb)]
                msg.header.stamp = ns_to_stamp(1000 * S + int((next_r - t0) * S))
                pub_r.publish(msg)
                j += 1
                next_r += 1 / 20.0
            time.sleep(max(0.0, min(next_t, next_r) - time.monotonic()))
        return k / (time.monotonic() - t0), k

    def output_rate(self, since: float) -> tuple[float, int]:
        with self.lock:
            times = [t for t in self.received if t >= since]
        return ((len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 else 0.0), len(times)


def rate_section(feeder: Feeder, model: Path, transport: str, seconds: float, threads: int,
                 log: Path) -> tuple[float, int]:
    params = {"model": str(model), "backend": "onnxruntime", "num_threads": str(threads),
              "thermal.transport": transport, "rgb.transport": transport}
    node = NodeProcess(params, log)
    topic = "thermal/image_raw" + ("/compressed" if transport == "compressed" else "")
    try:
        if not _wait(lambda: feeder.node.count_subscribers(topic) >= 1, 120):
            raise SystemExit(f"the depth node did not subscribe to {topic}; log {log}:\n{log.read_text()[-2000:]}")
        feeder.run(transport, 2.0)  # warm-up: discovery, first frames
        start = time.monotonic()
        in_hz, sent = feeder.run(transport, seconds)
        time.sleep(0.5)
        out_hz, received = feeder.output_rate(start)
    finally:
        node.stop()
    print(f"   {transport:10s}: thermal in {in_hz:.1f} Hz ({sent} frames) + RGB 20 Hz -> depth out {out_hz:.2f} Hz "
          f"({received} frames)", flush=True)
    return out_hz, received


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="", help="model folder (default: the shipped engines/default)")
    parser.add_argument("--seconds", type=float, default=30.0, help="measured time per transport (split in rounds)")
    parser.add_argument("--rounds", type=int, default=3, help="raw/compressed alternations (each a fresh node), so "
                        "that load from other processes hits both alike")
    parser.add_argument("--repeats", type=int, default=40, help="decode repetitions (median)")
    parser.add_argument("--threads", type=int, default=1, help="engine CPU threads")
    parser.add_argument("--skip-rate", action="store_true", help="only the decode section")
    args = parser.parse_args()

    from monother_ros.paths import default_model_dir

    model = Path(args.model) if args.model else default_model_dir()
    thermal, rgb = sim_frames(4)
    decode_section(model, thermal[0], rgb[0], args.repeats, args.threads)
    if args.skip_rate:
        return 0
    import tempfile

    import rclpy
    from rclpy.context import Context
    from rclpy.executors import SingleThreadedExecutor

    context = Context()
    rclpy.init(context=context)
    feeder = Feeder(context, thermal, rgb)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(feeder.node)
    stop = threading.Event()

    def spin() -> None:
        while not stop.is_set():
            executor.spin_once(timeout_sec=0.05)

    spinner = threading.Thread(target=spin, daemon=True)
    spinner.start()
    logs = Path(tempfile.mkdtemp(prefix="bench_decode_"))
    print(f"2. thermal_depth output rate, thermal 30 Hz + RGB 20 Hz, {args.seconds:g} s each in {args.rounds} "
          f"alternating rounds (ONNX Runtime, {args.threads} thread(s)):", flush=True)
    chunk = args.seconds / args.rounds
    import os

    print(f"   load average before: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs (when the CPUs are saturated the "
          "node is CPU-bound and decoding costs its full share of the rate)", flush=True)
    totals = {"raw": [0.0, 0], "compressed": [0.0, 0]}  # frames received, seconds
    try:
        for k in range(args.rounds):
            for transport in ("raw", "compressed"):
                hz, n = rate_section(feeder, model, transport, chunk, args.threads, logs / f"{transport}{k}.log")
                totals[transport][0] += hz * chunk
                totals[transport][1] += 1
    finally:
        stop.set()
        spinner.join(5.0)
        executor.shutdown(timeout_sec=2.0)
        feeder.node.destroy_node()
        context.try_shutdown()
    raw, compressed = (totals[t][0] / (chunk * max(1, totals[t][1])) for t in ("raw", "compressed"))
    ratio = compressed / raw if raw > 0 else float("nan")
    print(f"   mean output rate: raw {raw:.2f} Hz, compressed {compressed:.2f} Hz; load average after "
          f"{os.getloadavg()[0]:.1f}")
    print(f"   compressed / raw output rate = {ratio:.3f} -> {'met' if ratio >= 0.9 else 'NOT met'} (within 10 %)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
