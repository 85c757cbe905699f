"""Issue 7's domain-shift evidence through the node, over real rclpy/DDS, at tiny scale.

The same experiment as ``test_adapt_domain_shift.py``'s foggy day (scripts/adaptation_experiment.py), but the
stream reaches the learner the way it does on the robot: an ``online_adaptation`` node subscribed to
thermal/RGB images, camera_info and the static extrinsic, published by the test over DDS. The deployed
(accepted) weights after 150 steps are scored on held-out clear-day frames of the target (campus) and source
(urban) families, once with the confidence-weighted loss and once without.

Measured (this machine, seed 0, 42x56, ~60 s): full: campus -18.6 %, urban -2.0 %; no confidence: campus
-3.1 %, urban +12.0 % (the offline learner gives -20.1 % / -1.8 % and -3.0 % / +13.7 %).
"""
from __future__ import annotations

import copy
from pathlib import Path

import pytest

from ros_harness import Spinner, ros_context, wait_for, wait_for_subscribers
from test_adapt_domain_shift import load_adaptation_experiment

pytestmark = [pytest.mark.ros]
HW = (42, 56)
STEPS = 150


def _node_parameters(model_dir: Path, checkpoint_dir: Path, distillation: str):
    """The experiment's learner settings (``run_experiment``'s base config) as node parameters."""
    from rclpy.parameter import Parameter

    values = {
        "model": str(model_dir), "handover": "none", "status_period_s": 0.2,
        "buffer.size": 64, "buffer.holdout_every": 4, "buffer.holdout_size": 8,
        # Training starts once the whole stream is in (12 training + 4 held-out pairs), as offline.
        "buffer.min_pairs": 12, "buffer.min_holdout": 4,
        "keyframe.min_confidence": 0.002, "keyframe.min_mask_fraction": 0.01, "keyframe.min_image_change": 0.0,
        "keyframe.min_translation_m": 0.0, "keyframe.min_rotation_deg": 0.0,
        "keyframe.confidence_gate": distillation == "full",
        "train.distillation": distillation, "train.batch_size": 2, "train.lr": 5e-5, "train.encoder_lr_factor": 0.1,
        "train.steps_per_round": 10, "train.max_steps_per_second": 0.0, "train.duty_cycle": 1.0,
        "train.num_threads": 1, "guard.reject_threshold": 0.02, "guard.max_rejections": 3,
        "checkpoint.dir": str(checkpoint_dir), "checkpoint.resume": False,
    }
    return [Parameter(name, value=value) for name, value in values.items()]


def _adapt_over_dds(context, model_dir: Path, checkpoint_dir: Path, distillation: str, frames) -> tuple[dict, dict]:
    """Run one node on the stream until STEPS steps; returns (deployed student state, node status)."""
    from rclpy.node import Node
    from sensor_msgs.msg import CameraInfo, Image

    from monother_ros.ros import qos
    from monother_ros.ros.adaptation_node import OnlineAdaptationNode
    from monother_ros.ros.convert import array_to_image, camera_to_info
    from monother_ros.ros.tf import StaticTransformBroadcaster, transform_to_msg

    node = OnlineAdaptationNode(f"adapt_{distillation}", context=context,
                                parameter_overrides=_node_parameters(model_dir, checkpoint_dir, distillation))
    feeder = Node(f"feeder_{distillation}", context=context)
    pubs = {name: feeder.create_publisher(t, topic, qos.SENSOR) for name, t, topic in (
        ("thermal", Image, "thermal/image_raw"), ("rgb", Image, "rgb/image_raw"),
        ("thermal_info", CameraInfo, "thermal/camera_info"), ("rgb_info", CameraInfo, "rgb/camera_info"))}
    tf = StaticTransformBroadcaster(feeder)
    tf.send(transform_to_msg("rgb_optical_frame", "thermal_optical_frame", 0, frames[0].T_rgb_thermal))
    spinner = Spinner(context, node, feeder).start()
    try:
        assert wait_for_subscribers(feeder, "thermal/image_raw", 1) and wait_for_subscribers(feeder, "rgb/image_raw", 1)
        assert wait_for(lambda: node.count_publishers("thermal/camera_info") >= 1, 10)
        for f in frames:
            done = node.counters["pairs"]
            # One pair at a time: the node keeps only the latest pair while it works on one (never queues).
            for _ in range(50):
                pubs["thermal_info"].publish(camera_to_info(f.cam_thermal, stamp_ns=f.stamp_ns, frame_id="thermal_optical_frame"))
                pubs["rgb_info"].publish(camera_to_info(f.cam_rgb, stamp_ns=f.stamp_ns, frame_id="rgb_optical_frame"))
                pubs["thermal"].publish(array_to_image(f.thermal_counts, encoding="mono16", stamp_ns=f.stamp_ns,
                                                       frame_id="thermal_optical_frame"))
                pubs["rgb"].publish(array_to_image(f.rgb, encoding="rgb8", stamp_ns=f.stamp_ns, frame_id="rgb_optical_frame"))
                if wait_for(lambda: node.counters["pairs"] > done, 0.5):
                    break
            assert node.counters["pairs"] == done + 1, node.counters
        # Every round of 10 steps decided (accepted or rejected), as offline after STEPS steps.
        decided = lambda: node.learner.counters["accepted"] + node.learner.counters["rejected"] >= STEPS // 10  # noqa: E731
        assert wait_for(decided, 240, interval=0.001), node.learner.status()
        node.learner.pause()
        state = {k: v.clone() for k, v in node.learner.running_state.items()}
        return state, node.learner.status()
    finally:
        spinner.stop()
        node.destroy_node()
        feeder.destroy_node()


@pytest.mark.slow
def test_adaptation_node_over_dds_gains_on_a_foggy_day_keeps_the_source_and_beats_the_unweighted_loss(tmp_path):
    import torch

    from monother_ros.model.checkpoints import save_model

    ax = load_adaptation_experiment()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        dual = ax.standin_source_model("urban", "campus", preset="test-tiny", hw=HW, n_stream=16, steps=200,
                                       confidence_steps=12, seed=0, log=None)
        model_dir = save_model(dual, dual.student.config, tmp_path / "source", kind="monother_dual")
        stream = ax.render_frames("campus", "fog", 11, ax.stream_times(16), HW)
        evals = {"target_day": ax.render_samples("campus", "day", 101, ax.eval_times(6), HW),
                 "source_day": ax.render_samples("urban", "day", 102, ax.eval_times(6), HW)}
        max_depth = float(dual.student.config.max_depth_m)
        before = {k: ax.absrel(dual.student, v, max_depth) for k, v in evals.items()}
        after, status = {}, {}
        with ros_context() as context:
            for arm in ("full", "no_confidence"):
                state, status[arm] = _adapt_over_dds(context, model_dir, tmp_path / f"ckpt_{arm}", arm, stream)
                student = copy.deepcopy(dual.student)
                student.load_state_dict(state)
                after[arm] = {k: ax.absrel(student, v, max_depth) for k, v in evals.items()}
    finally:
        torch.set_num_threads(threads)
    for arm in after:
        print(f"\n{arm}: " + ", ".join(f"{k} {before[k]:.4f} -> {after[arm][k]:.4f} ({(after[arm][k] / before[k] - 1) * 100:+.1f} %)"
                                       for k in before) + f"; admitted {status[arm]['keyframes']['admitted']} / "
              f"{status[arm]['keyframes']['offered']}, steps {status[arm]['steps']}, accepted {status[arm]['accepted']}")

    def gain(arm, key):
        return 1.0 - after[arm][key] / before[key]

    for arm in after:
        assert status[arm]["keyframes"]["offered"] == 16 and status[arm]["steps"] >= STEPS
        assert status[arm]["accepted"] >= 1
    assert gain("full", "target_day") >= 0.15
    assert after["full"]["source_day"] <= 1.05 * before["source_day"]
    assert gain("no_confidence", "target_day") < gain("full", "target_day")
