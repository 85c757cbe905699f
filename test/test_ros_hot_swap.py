"""Hot swaps over real DDS, in other processes: Ctrl-C during a swap ends ``monother rig --sim`` cleanly (exit
0, no traceback, no C++ ``terminate``), and a swap costs the depth stream at most about one frame.

The depth node swaps through ``runtime.engine_holder.EngineHolder``: the model folder is exported (child
process) and loaded off the inference thread and swapped in between two frames."""
from __future__ import annotations

import random
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from ros_harness import REPO_ROOT, Collector, NodeProcess, Spinner, ros_context, wait_for, wait_for_publishers
from tiny_models import tiny_student_dir

pytestmark = [pytest.mark.ros, pytest.mark.slow]

S = 1_000_000_000


def _adapted_folders(root: Path, n: int) -> list[Path]:
    """``n`` student folders with different weights (what online_adaptation writes: no ONNX inside)."""
    import torch

    from monother_ros.model.checkpoints import load_model, save_model

    model, config = load_model(tiny_student_dir())
    folders = []
    for k in range(n):
        with torch.no_grad():
            for p in model.parameters():
                p.mul_(1.0 + 0.02 * (k + 1))
        folders.append(save_model(model, config, root / f"adapt-{k + 1:06d}"))
    return folders


def _clean_exit(proc: NodeProcess, rc: int) -> None:
    out = proc.output()
    assert rc == 0, f"exit code {rc}\n{out[-3000:]}"
    for bad in ("Traceback", "terminate called", "Segmentation fault", "Aborted"):
        assert bad not in out, f"{bad!r} in the output\n{out[-3000:]}"


def test_ctrl_c_during_hot_swaps_exits_cleanly(tmp_path):
    from rclpy.node import Node
    from sensor_msgs.msg import Image
    from std_msgs.msg import String

    from monother_ros.ros import qos

    config = yaml.safe_load((REPO_ROOT / "config" / "rig.yaml").read_text())
    config["/**/sim_rig"]["ros__parameters"].update(render_scale=0.2)  # renders fast enough on 2 cores
    config["/**/thermal_depth"]["ros__parameters"].update(num_threads=1, cache_dir=str(tmp_path / "cache"))
    params = tmp_path / "rig.yaml"
    params.write_text(yaml.safe_dump(config))
    args = ["rig", "--sim", "--config", str(params), "--model", str(tiny_student_dir()), "--backend", "onnxruntime"]
    folders = _adapted_folders(tmp_path, 4)
    rng = random.Random(13)
    # Interrupt at once after the request, while the export child runs, and after a finished swap while
    # the next one loads.
    plans = [("soon", 0.05), ("exporting", rng.uniform(1.0, 4.0)), ("after_a_swap", rng.uniform(0.2, 2.0))]
    for run, (phase, delay) in enumerate(plans):
        with NodeProcess("monother_ros.cli", args, log_dir=tmp_path) as proc, ros_context() as context:
            node = Node("swap_client", context=context)
            depth = Collector(node, Image, "depth/image", qos.SENSOR)
            model_pub = node.create_publisher(String, "adaptation/model_path", qos.TF_STATIC_PUBLISHER)
            with Spinner(context, node):
                assert wait_for_publishers(node, "depth/image", timeout=60.0), proc.output()
                assert depth.wait_for_count(3, timeout=60.0), proc.output()
                if phase == "after_a_swap":
                    model_pub.publish(String(data=str(folders[-1])))
                    assert wait_for(lambda: "hot-swapped the model" in proc.output(), 120.0), proc.output()[-3000:]
                    n = len(depth)
                    assert depth.wait_for_count(n + 3, timeout=30.0), "no depth after the swap"
                model_pub.publish(String(data=str(folders[run])))
                time.sleep(delay)
                assert proc.running(), proc.output()[-3000:]
            t0 = time.monotonic()
            rc = proc.stop(timeout=30.0)  # SIGINT to the process group, as a terminal's Ctrl-C
            _clean_exit(proc, rc)
            assert time.monotonic() - t0 < 25.0, f"{phase}: shutdown took {time.monotonic() - t0:.1f} s"


def test_ctrl_c_during_in_process_swaps_of_rig_adapt_exits_cleanly(tmp_path):
    """``monother rig --sim --adapt``: online_adaptation accepts every round (tiny models, huge reject
    threshold) and hands each checkpoint folder to the depth node in-process; Ctrl-C at random moments
    while swaps keep coming (training, checkpoint writes, exports and swaps in flight)."""
    from rclpy.node import Node
    from sensor_msgs.msg import Image

    from monother_ros.ros import qos
    from tiny_models import tiny_dual_dir

    config = yaml.safe_load((REPO_ROOT / "config" / "rig.yaml").read_text())
    config["/**/sim_rig"]["ros__parameters"].update(render_scale=0.2)
    config["/**/thermal_depth"]["ros__parameters"].update(num_threads=1, cache_dir=str(tmp_path / "cache"))
    adapt = config["/**/online_adaptation"]["ros__parameters"]
    adapt.update(model=str(tiny_dual_dir()), status_period_s=0.5)
    adapt["checkpoint"].update(dir=str(tmp_path / "ckpt"))
    adapt["keyframe"].update(min_confidence=0.0, min_mask_fraction=0.0, min_rgb_contrast=0.0, min_image_change=0.0,
                             max_rate_hz=0.0)
    adapt["buffer"].update(min_pairs=2, min_holdout=1, holdout_every=3)
    adapt["train"].update(batch_size=1, steps_per_round=1, max_steps_per_second=0.0, duty_cycle=1.0)
    adapt["guard"].update(reject_threshold=1000.0)
    params = tmp_path / "rig.yaml"
    params.write_text(yaml.safe_dump(config))
    args = ["rig", "--sim", "--adapt", "--config", str(params), "--model", str(tiny_student_dir()), "--backend",
            "onnxruntime"]
    rng = random.Random(29)
    for run in range(2):
        with NodeProcess("monother_ros.cli", args, log_dir=tmp_path) as proc, ros_context() as context:
            node = Node("swap_client", context=context)
            depth = Collector(node, Image, "depth/image", qos.SENSOR)
            with Spinner(context, node):
                assert wait_for_publishers(node, "depth/image", timeout=90.0), proc.output()
                assert depth.wait_for_count(3, timeout=60.0), proc.output()
                assert wait_for(lambda: "hot-swapped the model" in proc.output(), 180.0), proc.output()[-3000:]
                time.sleep(rng.uniform(0.0, 3.0))
                assert proc.running(), proc.output()[-3000:]
            t0 = time.monotonic()
            rc = proc.stop(timeout=30.0)
            _clean_exit(proc, rc)
            assert time.monotonic() - t0 < 25.0, f"run {run}: shutdown took {time.monotonic() - t0:.1f} s"


def test_a_swap_costs_the_depth_stream_at_most_one_frame(tmp_path):
    """Thermal frames at a steady 10 Hz into a thermal_depth process; model folders arrive on the model
    topic. Around each swap, the gap between two depth outputs stays within about two frame periods
    (one frame lost at most), with a margin for this loaded 2-core machine."""
    from rclpy.node import Node
    from sensor_msgs.msg import Image
    from std_msgs.msg import String

    from monother_ros.ros import qos
    from monother_ros.ros.convert import array_to_image, image_to_array

    period = 0.1
    folders = _adapted_folders(tmp_path, 3)
    args = ["--ros-args", "-p", f"model:={tiny_student_dir()}", "-p", "backend:=onnxruntime", "-p", "num_threads:=1",
            "-p", "lazy:=false", "-p", f"cache_dir:={tmp_path / 'cache'}"]
    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[0:120, 0:160]
    image = (20000 + 60 * yy + 900 * np.sin(xx / 5.0) + rng.normal(0, 50, (120, 160))).astype(np.uint16)
    # Two frames alternating: a driver repeating one frame exactly is reported frozen and gets no depth.
    images = [image, np.ascontiguousarray(image[::-1])]
    with NodeProcess("monother_ros.ros.depth_node", args, log_dir=tmp_path) as proc, ros_context() as context:
        node = Node("swap_stream", context=context)
        depth = Collector(node, Image, "depth/image", qos.SENSOR)
        pub = node.create_publisher(Image, "thermal/image_raw", qos.SENSOR)
        model_pub = node.create_publisher(String, "adaptation/model_path", qos.TF_STATIC_PUBLISHER)
        with Spinner(context, node):
            assert wait_for_publishers(node, "depth/image", timeout=60.0), proc.output()
            k, start = 0, time.monotonic()
            sent: list[int] = []
            swap_requests: list[float] = []
            landed: list[float] = []

            def tick() -> None:
                nonlocal k
                k += 1
                stamp = k * S // 10
                sent.append(stamp)
                pub.publish(array_to_image(images[k % 2], encoding="mono16", stamp_ns=stamp, frame_id="thermal"))
                # Steady rate: sleep to the next slot of the 10 Hz grid.
                time.sleep(max(0.0, start + k * period - time.monotonic()))

            while len(depth) < 10 and time.monotonic() - start < 60:
                tick()
            assert len(depth) >= 10, proc.output()[-3000:]
            def latest(parity):
                for m in reversed(depth.messages):
                    if (m.header.stamp.sec * S + m.header.stamp.nanosec) // (S // 10) % 2 == parity:
                        return np.nan_to_num(image_to_array(m))
                return None

            swaps_seen = 0
            for folder in folders:
                baseline = [latest(0).copy(), latest(1).copy()]
                swap_requests.append(time.monotonic())
                model_pub.publish(String(data=str(folder)))
                deadline = time.monotonic() + 120
                # Until the output changes (the new weights run), then two more seconds.
                changed_at = None
                while time.monotonic() < deadline:
                    tick()
                    if changed_at is None and any(not np.allclose(latest(q), baseline[q]) for q in (0, 1)):
                        changed_at = time.monotonic()
                    if changed_at is not None and time.monotonic() - changed_at > 2.0:
                        break
                assert changed_at is not None, f"swap to {folder} never landed\n{proc.output()[-3000:]}"
                landed.append(changed_at)
                swaps_seen += 1
            times = np.asarray(depth.receive_times)
        assert proc.running(), proc.output()[-3000:]
        _clean_exit(proc, proc.stop(timeout=30.0))
    assert swaps_seen == 3
    # Every swap window: from the request to the end of the stream segment after it.
    window = times[times >= swap_requests[0]]
    gaps = np.diff(window)
    worst = float(gaps.max())
    before = np.diff(times[times < swap_requests[0]])
    near = [float(np.diff(times[(times > t - 1.5) & (times < t + 0.5)]).max()) for t in landed]
    print(f"\nbefore any swap: max gap {before.max() * 1e3:.0f} ms over {len(before)}; max gap within 1.5 s before "
          f"each landing: {', '.join(f'{g * 1e3:.0f}' for g in near)} ms")
    print(f"hot-swap stream: {len(gaps)} gaps after the first request, median {np.median(gaps) * 1e3:.0f} ms, "
          f"p99 {np.percentile(gaps, 99) * 1e3:.0f} ms, max {worst * 1e3:.0f} ms (period {period * 1e3:.0f} ms)")
    # The swap itself (the new engine's last loading steps, warm-up and the reference swap: the 1.5 s before
    # its output appears): two frame periods (one frame lost at most) plus 100 ms of scheduling slack.
    assert max(near) <= 2 * period + 0.1, f"gap around a swap landing {max(near) * 1e3:.0f} ms"
    # Everything after the first request, exports in the child process included: the machine is loaded
    # (other test processes share its 2 cores), so 250 ms of slack; an in-thread export gave 1.2 s here.
    assert worst <= 2 * period + 0.25, (f"largest depth gap around swaps {worst * 1e3:.0f} ms "
                                        f"(p99 {np.percentile(gaps, 99) * 1e3:.0f} ms, {len(gaps)} gaps)")
    received = len(window)
    expected = (times[-1] - swap_requests[0]) / period
    assert received >= 0.9 * expected, f"{received} depth images for ~{expected:.0f} frames sent"
