"""The thermal_depth node's backend choice over real rclpy/DDS: ``backend: auto`` falls through an
unusable TensorRT (import failing, JetPack 5's 8.5) and an unusable GPU to ONNX Runtime, keeps running,
and says so in /diagnostics (a WARN when the CPU runs while a GPU is visible); an explicitly requested
backend or device that cannot run, or a malformed device, stops the node at start with the reason."""
from __future__ import annotations

import sys

import numpy as np
import pytest

pytestmark = pytest.mark.ros


def _make_node(context, **params):
    from rclpy.parameter import Parameter

    from monother_ros.ros.depth_node import ThermalDepthNode
    from tiny_models import tiny_student_dir

    params.setdefault("model", str(tiny_student_dir()))
    params.setdefault("num_threads", 1)
    params.setdefault("diagnostics_period_s", 0.2)
    return ThermalDepthNode(context=context, parameter_overrides=[Parameter(k, value=v) for k, v in params.items()])


def _run_and_collect(node, context):
    """Spin the node, send one thermal frame, return (its depth message, the node's DiagnosticStatus)."""
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.node import Node
    from sensor_msgs.msg import Image

    from monother_ros.ros import qos
    from monother_ros.ros.convert import array_to_image
    from ros_harness import Collector, Spinner, wait_for_subscribers

    client = Node("backend_client", context=context)
    diagnostics = Collector(client, DiagnosticArray, "/diagnostics", qos.DIAGNOSTICS)
    depth = Collector(client, Image, "depth/image", qos.SENSOR)
    pub = client.create_publisher(Image, "thermal/image_raw", qos.SENSOR)
    with Spinner(context, node, client):
        assert wait_for_subscribers(client, "thermal/image_raw")
        frame = (20000 + np.arange(48 * 64, dtype=np.uint32).reshape(48, 64) % 5000).astype(np.uint16)
        pub.publish(array_to_image(frame, encoding="mono16", stamp_ns=1_000_000_000, frame_id="thermal"))
        depth_msgs = depth.wait_for_count(1)
        arrays = diagnostics.wait_for_count(2)
    client.destroy_node()
    assert depth_msgs, "the node published no depth"
    status = next(s for s in arrays[-1].status if "thermal depth" in s.name)
    return depth_msgs[0], status


@pytest.mark.parametrize("tensorrt_module", ["import_fails", "jetpack5_8_5"])
def test_auto_falls_through_unusable_tensorrt_and_reports_why(monkeypatch, tensorrt_module):
    from diagnostic_msgs.msg import DiagnosticStatus

    from fake_tensorrt import make_fake_tensorrt
    from ros_harness import ros_context

    if tensorrt_module == "import_fails":
        monkeypatch.setitem(sys.modules, "tensorrt", None)  # `import tensorrt` raises ImportError
        expected = "the tensorrt Python package is not importable"
    else:
        monkeypatch.setitem(sys.modules, "tensorrt", make_fake_tensorrt("8.6", version="8.5.2.2"))
        expected = "TensorRT 8.5.2.2 is too old: >= 8.6 is needed"
    with ros_context() as context:
        node = _make_node(context, backend="auto", device="auto")
        try:
            assert node.engine.info.backend == "onnxruntime"
            msg, status = _run_and_collect(node, context)
        finally:
            node.destroy_node()
    assert msg.encoding == "32FC1" and (msg.height, msg.width) == (48, 64)
    values = {kv.key: kv.value for kv in status.values}
    assert values["backend requested"] == "auto" and values["backend chosen"] == "onnxruntime"
    assert values["device"] == "cpu" and values["gpu visible"] == "no"
    assert expected in values["backend tensorrt not used"]
    assert "no CUDA GPU visible" in values["backend torch not used"]
    assert status.level == DiagnosticStatus.OK  # no GPU here: the CPU is the right place


def test_gpu_visible_but_unusable_falls_through_with_a_warning(monkeypatch):
    """A machine whose torch sees a GPU but where TensorRT and torch-on-CUDA both fail to start: the node
    still starts (ONNX Runtime on the CPU) and /diagnostics WARNs, never a silent CPU fallback."""
    import monother_ros.runtime.device as device_module
    from diagnostic_msgs.msg import DiagnosticStatus
    from monother_ros.runtime import selection

    from ros_harness import ros_context

    monkeypatch.setitem(selection.PROBES, "torch_cuda", lambda: (True, ""))
    monkeypatch.setitem(selection.PROBES, "tensorrt", lambda: (True, ""))
    monkeypatch.setattr(device_module, "cuda_device_count", lambda: 1)
    # TensorRT's own check inside the build still finds no usable tensorrt; torch cannot move the model
    # to a CUDA device this CPU-only torch does not have: both are failures of present backends.
    with ros_context() as context:
        node = _make_node(context, backend="auto", device="auto")
        try:
            assert node.engine.info.backend == "onnxruntime"
            _, status = _run_and_collect(node, context)
        finally:
            node.destroy_node()
    values = {kv.key: kv.value for kv in status.values}
    assert values["gpu visible"] == "yes" and values["backend chosen"] == "onnxruntime"
    assert values["backend tensorrt not used"].startswith("failed: BackendUnavailableError")
    assert values["backend torch not used"].startswith("failed: ")
    assert status.level == DiagnosticStatus.WARN
    assert "a CUDA GPU is visible but onnxruntime runs on the CPU" in status.message
    assert "tensorrt failed" in status.message


def test_explicit_backend_or_device_that_cannot_run_stops_the_node_with_the_reason(monkeypatch):
    from monother_ros.errors import BackendUnavailableError, ConfigError
    from ros_harness import ros_context

    monkeypatch.setitem(sys.modules, "tensorrt", None)
    with ros_context() as context:
        with pytest.raises(BackendUnavailableError, match=r"backend tensorrt is unavailable: .*not importable"
                                                          r".*install TensorRT >= 8.6"):
            _make_node(context, backend="tensorrt")
        with pytest.raises(BackendUnavailableError, match="device cuda:1 asked for, but torch sees no CUDA GPU"):
            _make_node(context, backend="torch", device="cuda:1")
        with pytest.raises(ConfigError, match=r"device = 'gpu'.*auto \(a CUDA GPU"):
            _make_node(context, device="gpu")
        with pytest.raises(ConfigError, match="teacher.device = 'cuda:x'"):
            _make_node(context, **{"teacher.device": "cuda:x"})
