"""online_adaptation over real rclpy/DDS: built by the graph as `monother rig --adapt` builds it, fed with
simulated-rig frames, it trains, hot-swaps the depth node's weights, and obeys its services.

Small scale: tiny random models (test/tiny_models.py), 56x70 images rendered by the simulated rig and
published by the test (the live sim_rig node renders 640x512, too slow for a unit test).
"""
from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from ros_harness import Collector, Spinner, ros_context, wait_for, wait_for_subscribers
from tiny_models import tiny_dual_dir, tiny_student_dir

pytestmark = [pytest.mark.ros]


def test_parameters_table_matches_rig_yaml():
    import yaml

    from monother_ros.paths import config_path
    from monother_ros.ros.adaptation_node import ADAPTATION_PARAMETERS, learner_config_from_params

    section = yaml.safe_load(config_path("rig.yaml").read_text())["/**/online_adaptation"]["ros__parameters"]

    def flat(d, prefix=""):
        for k, v in d.items():
            yield from (flat(v, f"{prefix}{k}.") if isinstance(v, dict) else [(prefix + k, v)])

    values = dict(flat(section))
    assert set(values) == set(ADAPTATION_PARAMETERS.defaults())
    assert values == ADAPTATION_PARAMETERS.defaults()  # (approx cannot compare the list-valued thermal.crop)
    config = learner_config_from_params(ADAPTATION_PARAMETERS.validate(values), "/tmp/x")
    assert config.keyframe.min_rgb_contrast == 0.1 and config.holdout_every == 5


class _Feeder:
    """Publishes simulated thermal/RGB pairs (same stamp), camera_info and the static extrinsic."""

    def __init__(self, context, hw=(56, 70)):
        from rclpy.node import Node
        from sensor_msgs.msg import CameraInfo, Image

        from monother_ros.ros import qos
        from monother_ros.ros.tf import StaticTransformBroadcaster, transform_to_msg
        from monother_ros.sim import SimRig

        self.rig = SimRig(seed=4, scenario="day", family="campus")
        h, w = hw
        self.cam_t = self.rig.thermal_camera.resized(w, h)
        self.cam_r = self.rig.rgb_camera.resized(w, h)
        self.node = Node("adapt_test_feeder", context=context)
        self.pubs = {name: self.node.create_publisher(t, topic, qos.SENSOR) for name, t, topic in (
            ("thermal", Image, "thermal/image_raw"), ("rgb", Image, "rgb/image_raw"),
            ("thermal_info", CameraInfo, "thermal/camera_info"), ("rgb_info", CameraInfo, "rgb/camera_info"))}
        self.tf = StaticTransformBroadcaster(self.node)
        self.tf.send(transform_to_msg("rgb_optical_frame", "thermal_optical_frame", 0, self.rig.T_rgb_thermal))
        self.frames = [(self.rig.render_thermal(t, self.cam_t).counts, self.rig.render_rgb(t, self.cam_r).rgb)
                       for t in np.arange(12) * 0.8 + 1.0]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self):
        from monother_ros.ros.convert import array_to_image, camera_to_info

        k = 0
        while not self._stop.is_set():
            counts, rgb = self.frames[k % len(self.frames)]
            stamp = 1_000_000_000 + k * 100_000_000
            self.pubs["thermal_info"].publish(camera_to_info(self.cam_t, stamp_ns=stamp, frame_id="thermal_optical_frame"))
            self.pubs["rgb_info"].publish(camera_to_info(self.cam_r, stamp_ns=stamp, frame_id="rgb_optical_frame"))
            self.pubs["thermal"].publish(array_to_image(counts, encoding="mono16", stamp_ns=stamp, frame_id="thermal_optical_frame"))
            self.pubs["rgb"].publish(array_to_image(rgb, encoding="rgb8", stamp_ns=stamp, frame_id="rgb_optical_frame"))
            k += 1
            self._stop.wait(0.1)

    def start(self):
        self._thread.start()
        return self

    def stop(self):
        self._stop.set()
        self._thread.join(2.0)


def _status(collector):
    return json.loads(collector.messages[-1].data) if len(collector) else None


def _steps_settle(learner, quiet_s=1.0, timeout=20.0):
    """True once the step counter has not moved for ``quiet_s`` seconds (within ``timeout``)."""
    deadline = time.monotonic() + timeout
    last, since = learner.counters["steps"], time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.05)
        now = learner.counters["steps"]
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet_s:
            return True
    return False


def _call(node, srv_type, name, request=None, timeout=10.0):
    client = node.create_client(srv_type, name)
    assert client.wait_for_service(timeout_sec=timeout), name
    future = client.call_async(request or srv_type.Request())
    assert wait_for(future.done, timeout), name
    return future.result()


@pytest.mark.slow
def test_adapt_graph_trains_swaps_and_obeys_services_over_dds(tmp_path):
    import torch
    import yaml
    from std_msgs.msg import String
    from std_srvs.srv import SetBool, Trigger

    from monother_ros.model.checkpoints import read_model_dir
    from monother_ros.paths import config_path
    from monother_ros.ros import qos
    from monother_ros.ros.commands import RigOptions, start_rig

    dual_dir, student_dir = tiny_dual_dir(), tiny_student_dir()
    shipped = {k[len("student."):]: v for k, v in read_model_dir(dual_dir)[0].items() if k.startswith("student.")}
    ckpt = tmp_path / "ckpt"
    # A params file of our own (as test_ros_graph does): in rclpy a `-p` override lands in the `/**`
    # section, which the file's node sections win over.
    params = yaml.safe_load(config_path("rig.yaml").read_text())
    params["/**/thermal_depth"]["ros__parameters"].update(model=str(student_dir), backend="torch", lazy=False)
    adapt_params = params["/**/online_adaptation"]["ros__parameters"]
    adapt_params.update(model=str(dual_dir), status_period_s=0.2)
    adapt_params["checkpoint"].update(dir=str(ckpt))
    adapt_params["keyframe"].update(min_confidence=0.0, min_mask_fraction=0.0, min_rgb_contrast=0.0, min_image_change=0.0,
                                    max_rate_hz=0.0)
    adapt_params["buffer"].update(min_pairs=2, min_holdout=1, holdout_every=3)
    adapt_params["train"].update(batch_size=1, steps_per_round=2, max_steps_per_second=0.0, duty_cycle=1.0, num_threads=0)
    adapt_params["guard"].update(reject_threshold=1000.0)
    params_file = tmp_path / "rig.yaml"
    params_file.write_text(yaml.safe_dump(params))
    options = RigOptions(adapt=True, config=params_file)
    with ros_context() as context:
        nodes = start_rig(options, context)
        assert [n.get_name() for n in nodes] == ["thermal_depth", "online_adaptation"]
        depth, adapt = nodes
        feeder = _Feeder(context)
        status = Collector(feeder.node, String, "adaptation/status", qos.TF_STATIC_PUBLISHER)
        paths = Collector(feeder.node, String, "adaptation/model_path", qos.TF_STATIC_PUBLISHER)
        spinner = Spinner(context, *nodes, feeder.node).start()
        try:
            assert wait_for_subscribers(feeder.node, "thermal/image_raw", 2)
            engine_before = {k: v.clone() for k, v in depth.engine.model.state_dict().items()}
            feeder.start()
            # Trains, accepts (threshold huge), and hands the checkpoint folder to the depth node in-process;
            # its engine holder loads it off the inference thread and swaps it in.
            assert wait_for(lambda: (s := _status(status)) and s["swaps"]["in_process"] >= 1 and s["steps"] >= 2, 60), \
                _status(status)
            assert wait_for(lambda: depth.counters["model_swaps"] >= 1, 30), depth.problems.active()
            assert depth.model_path.parent == ckpt
            swapped = depth.engine.model.state_dict()
            assert not all(torch.equal(engine_before[k], swapped[k]) for k in swapped)
            s = _status(status)
            assert s["swaps"]["topic"] == 0 and len(paths) == 0  # in-process only: no second, slower swap
            assert (Path(s["last_checkpoint"]) / "model.safetensors").is_file()
            assert s["keyframes"]["admitted"] >= 3 and s["held_out"] >= 1 and s["accepted"] >= 1
            assert depth.counters["published"] > 0  # inference kept running meanwhile

            # pause: training and admission stop.
            assert _call(feeder.node, Trigger, "adaptation/pause").success
            assert wait_for(lambda: _status(status)["state"] == "paused", 5)
            assert _steps_settle(adapt.learner)  # at most the step in flight finishes
            steps = adapt.learner.counters["steps"]
            # enable (SetBool true) resumes.
            assert _call(feeder.node, SetBool, "adaptation/enable", SetBool.Request(data=True)).success
            assert wait_for(lambda: adapt.learner.counters["steps"] > steps, 30)

            # reset: the depth engine runs the shipped student again.
            assert _call(feeder.node, Trigger, "adaptation/pause").success
            assert _call(feeder.node, Trigger, "adaptation/reset").success
            assert wait_for(lambda: adapt.learner.counters["resets"] == 1, 20)
            assert wait_for(lambda: all(torch.equal(depth.engine.model.state_dict()[k], shipped[k]) for k in shipped),
                            30), depth.problems.active()

            # save: one more checkpoint folder.
            before = adapt.learner.counters["checkpoints"]
            assert _call(feeder.node, Trigger, "adaptation/save").success
            assert wait_for(lambda: adapt.learner.counters["checkpoints"] == before + 1, 20)
            assert 1 <= len(list(ckpt.glob("adapt-*"))) <= 3  # rotation keeps 3
        finally:
            feeder.stop()
            spinner.stop()
            for node in reversed(nodes):
                node.destroy_node()
            feeder.node.destroy_node()


@pytest.mark.slow
def test_accepted_checkpoints_reach_a_depth_node_of_another_participant_over_the_topic(tmp_path):
    """No depth node in this node's executor (as across processes): handover auto publishes the checkpoint
    folder on adaptation/model_path, and a thermal_depth node of another DDS participant hot-swaps it."""
    from rclpy.parameter import Parameter

    from monother_ros.ros.adaptation_node import OnlineAdaptationNode
    from monother_ros.ros.depth_node import ThermalDepthNode

    overrides = {"model": str(tiny_dual_dir()), "checkpoint.dir": str(tmp_path / "ckpt"),
                 "keyframe.min_confidence": 0.0, "keyframe.min_mask_fraction": 0.0, "keyframe.min_rgb_contrast": 0.0,
                 "keyframe.min_image_change": 0.0, "keyframe.max_rate_hz": 0.0, "buffer.min_pairs": 2, "buffer.min_holdout": 1,
                 "buffer.holdout_every": 3, "train.batch_size": 1, "train.steps_per_round": 2,
                 "train.max_steps_per_second": 0.0, "train.duty_cycle": 1.0, "train.num_threads": 0,
                 "guard.reject_threshold": 1000.0}
    with ros_context() as robot, ros_context() as other:
        adapt = OnlineAdaptationNode(context=robot, parameter_overrides=[Parameter(k, value=v) for k, v in overrides.items()])
        feeder = _Feeder(robot)
        depth = ThermalDepthNode(context=other, parameter_overrides=[
            Parameter("model", value=str(tiny_student_dir())), Parameter("backend", value="torch"),
            Parameter("num_threads", value=1)])
        first_model = depth.model_path
        spin_robot = Spinner(robot, adapt, feeder.node).start()
        spin_other = Spinner(other, depth).start()
        try:
            assert wait_for_subscribers(feeder.node, "thermal/image_raw", 1)
            feeder.start()
            assert wait_for(lambda: adapt.swaps["topic"] >= 1, 60), adapt.status()
            assert adapt.swaps["in_process"] == 0
            assert wait_for(lambda: depth.counters.get("model_swaps", 0) >= 1, 30), depth.problems.active()
            assert depth.model_path != first_model and depth.model_path.parent == tmp_path / "ckpt"
            assert (depth.model_path / "model.safetensors").is_file()
        finally:
            feeder.stop()
            spin_robot.stop()
            spin_other.stop()
            for node in (adapt, feeder.node, depth):
                node.destroy_node()
