"""The node graph: one description (ros/graph.py) feeding launch/rig.launch.py and `monother rig`; the
RViz config names the topics the nodes really publish; `monother rig --sim` runs end to end over DDS."""
from __future__ import annotations

import ast
import subprocess
import sys
import time

import pytest
import yaml

from ros_harness import REPO_ROOT

LAUNCH_FILE = REPO_ROOT / "launch" / "rig.launch.py"
RVIZ_FILE = REPO_ROOT / "config" / "monother.rviz"


def _calls(tree: ast.AST, name: str) -> list[ast.Call]:
    return [n for n in ast.walk(tree) if isinstance(n, ast.Call)
            and getattr(n.func, "id", getattr(n.func, "attr", None)) == name]


def test_launch_file_uses_the_graph_description_and_declares_the_arguments():
    from monother_ros.ros.graph import LAUNCH_ARGUMENTS

    tree = ast.parse(LAUNCH_FILE.read_text())
    imported = {alias.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)
                and n.module == "monother_ros.ros.graph" for alias in n.names}
    assert {"LAUNCH_ARGUMENTS", "PARAMS_FILE", "RVIZ_CONFIG", "FASTDDS_PROFILE"} <= imported
    # The decisions (validation, rviz check, node choice, required-node exits) are launch_support's.
    support = {alias.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)
               and n.module == "monother_ros.ros.launch_support" for alias in n.names}
    assert {"plan_launch", "node_exit_error"} <= support
    # No node list of its own: the only executables are the graph's and rviz2.
    node_calls = _calls(tree, "Node")
    executables = [ast.unparse(kw.value) for c in node_calls for kw in c.keywords if kw.arg == "executable"]
    assert sorted(executables) == ["'rviz2'", "spec.executable"]
    # Every declared argument comes from LAUNCH_ARGUMENTS, with a default and a description.
    declares = _calls(tree, "DeclareLaunchArgument")
    assert len(declares) == 1
    assert {kw.arg for kw in declares[0].keywords} == {"default_value", "description"}
    comprehension = next(n for n in ast.walk(tree) if isinstance(n, ast.ListComp) and n.elt is declares[0])
    assert ast.unparse(comprehension.generators[0].iter) == "LAUNCH_ARGUMENTS"
    assert [name for name, _, _ in LAUNCH_ARGUMENTS] == ["use_sim", "model", "backend", "device", "namespace", "rviz",
                                                         "adapt", "frame_prefix"]
    assert all(description for _, _, description in LAUNCH_ARGUMENTS)
    # The shipped DDS profile, unless the user set one.
    env = _calls(tree, "SetEnvironmentVariable")
    assert len(env) == 1 and ast.literal_eval(env[0].args[0]) == "FASTDDS_DEFAULT_PROFILES_FILE"
    guard = next(n for n in ast.walk(tree) if isinstance(n, ast.If) and env[0] in ast.walk(n))
    assert ast.unparse(guard.test) == "'FASTDDS_DEFAULT_PROFILES_FILE' not in os.environ"
    # Parameters from the params file for every node.
    assert "params_file" in ast.unparse(next(kw.value for c in node_calls for kw in c.keywords if kw.arg == "parameters"))
    compile(LAUNCH_FILE.read_text(), str(LAUNCH_FILE), "exec")


def test_graph_nodes_executables_classes_and_params_sections():
    import inspect
    import re

    from monother_ros.ros.graph import NODES, graph_nodes, is_available, node_class

    assert [s.name for s in graph_nodes()] == ["thermal_depth"]
    assert [s.name for s in graph_nodes(use_sim=True)] == ["sim_rig", "thermal_depth"]
    assert [s.name for s in graph_nodes(use_sim=True, adapt=True)] == ["sim_rig", "thermal_depth", "online_adaptation"]
    setup = (REPO_ROOT / "setup.py").read_text()
    sections = yaml.safe_load((REPO_ROOT / "config" / "rig.yaml").read_text())
    for spec in NODES:
        assert re.search(rf'"{spec.executable} = {re.escape(spec.module)}:main"', setup), spec.executable
        if not is_available(spec):
            continue
        cls = node_class(spec)
        assert inspect.signature(cls.__init__).parameters["node_name"].default == spec.name
        assert f"/**/{spec.name}" in sections


def test_rig_adapt_fails_clearly_until_the_node_exists():
    from monother_ros.ros.graph import NODES, is_available

    spec = next(s for s in NODES if s.name == "online_adaptation")
    if is_available(spec):
        pytest.skip("online_adaptation exists now")
    proc = subprocess.run([sys.executable, "-m", "monother_ros.cli", "rig", "--adapt", "--duration", "1"],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "monother rig: error: online_adaptation is not available yet (no module monother_ros.ros.adaptation_node "
        "in this install)"]


def _rviz_displays():
    config = yaml.safe_load(RVIZ_FILE.read_text())
    return config["Visualization Manager"]


@pytest.mark.ros
def test_rviz_topics_are_what_the_nodes_publish():
    from rclpy.node import Node

    from monother_ros.ros.depth_node import OUTPUT_TOPICS
    from ros_harness import Spinner, ros_context, wait_for
    from test_ros_depth_node import make_node

    manager = _rviz_displays()
    assert manager["Global Options"]["Fixed Frame"] == "base_link"
    classes = {d["Class"]: d for d in manager["Displays"]}
    assert "rviz_default_plugins/TF" in classes
    clouds = [d for d in manager["Displays"] if d["Class"] == "rviz_default_plugins/PointCloud2"]
    by_confidence, by_rgb = clouds  # the cloud by confidence (on), and by the cloud.rgb field (off by default)
    assert by_confidence["Color Transformer"] in ("Intensity", "AxisColor") and by_confidence["Channel Name"] == "intensity"
    assert by_confidence["Enabled"] and by_confidence["Value"]
    assert by_rgb["Color Transformer"] == "RGB8" and not by_rgb["Enabled"]
    wanted_type = {"rviz_default_plugins/Image": "sensor_msgs/msg/Image",
                   "rviz_default_plugins/PointCloud2": "sensor_msgs/msg/PointCloud2"}
    rviz_topics = {d["Topic"]["Value"]: wanted_type[d["Class"]] for d in manager["Displays"] if "Topic" in d}
    assert set(rviz_topics) == {"depth/image", "depth/confidence", "depth/points"}
    assert set(rviz_topics) <= {t for t, *_ in OUTPUT_TOPICS}
    with ros_context() as context:
        node = make_node(context)
        probe = Node("probe", context=context)
        with Spinner(context, node, probe):
            def published():
                return dict(probe.get_publisher_names_and_types_by_node("thermal_depth", "/"))

            assert wait_for(lambda: "/depth/points" in published())
            graph = published()
            for topic, msg_type in rviz_topics.items():
                assert graph["/" + topic] == [msg_type], topic
                # RViz subscribes best effort, depth 5: the sensor QoS the node offers.
                (info,) = probe.get_publishers_info_by_topic("/" + topic)
                assert info.qos_profile.reliability.name == manager_reliability(topic)
        node.destroy_node()


def manager_reliability(topic: str) -> str:
    display = next(d for d in _rviz_displays()["Displays"] if d.get("Topic", {}).get("Value") == topic)
    return display["Topic"]["Reliability Policy"].upper().replace(" ", "_")


@pytest.mark.ros
@pytest.mark.slow
def test_monother_rig_sim_runs_the_graph_and_depth_arrives_over_dds(tmp_path):
    from rclpy.node import Node
    from sensor_msgs.msg import Image

    from monother_ros.ros import qos
    from monother_ros.ros.convert import image_to_array
    from ros_harness import Collector, NodeProcess, Spinner, ros_context, wait_for_publishers
    from tiny_models import tiny_student_dir

    config = yaml.safe_load((REPO_ROOT / "config" / "rig.yaml").read_text())
    config["/**/sim_rig"]["ros__parameters"].update(render_scale=0.2)  # renders fast enough on 2 cores
    config["/**/thermal_depth"]["ros__parameters"].update(num_threads=1)
    params = tmp_path / "rig.yaml"
    params.write_text(yaml.safe_dump(config))
    args = ["rig", "--sim", "--config", str(params), "--model", str(tiny_student_dir()), "--backend",
            "onnxruntime", "--namespace", "robot1"]
    with NodeProcess("monother_ros.cli", args) as proc, ros_context() as context:
        node = Node("rig_listener", context=context)
        depth = Collector(node, Image, "/robot1/depth/image", qos.SENSOR)
        with Spinner(context, node):
            assert wait_for_publishers(node, "/robot1/depth/image", timeout=60.0), proc.output()
            messages = depth.wait_for_count(5, timeout=30.0)
            assert len(messages) >= 5, proc.output()
        last = messages[-1]
        assert last.encoding == "32FC1" and last.header.frame_id == "thermal_optical_frame"
        assert (last.width, last.height) == (128, 102)  # 640x512 at render_scale 0.2
        assert (image_to_array(last) > 0).any()
        assert proc.running(), proc.output()
        t0 = time.monotonic()
        assert proc.stop() == 0, proc.output()
        assert time.monotonic() - t0 < 10


@pytest.mark.ros
@pytest.mark.slow
def test_demo_pipeline_records_outputs_pictures_and_summary(tmp_path):
    import json

    from rosbags.highlevel import AnyReader

    from monother_ros.demo import run_pipeline
    from tiny_models import tiny_student_dir

    result = run_pipeline(tmp_path / "run", seconds=5.0, model=tiny_student_dir(), render_scale=0.2)
    assert result["placeholder"] is False
    with AnyReader([result["bag"]]) as reader:
        counts = {c.topic: c.msgcount for c in reader.connections}
        assert set(counts) == {"/depth/image", "/depth/confidence", "/depth/camera_info", "/depth/points"}
        assert counts["/depth/image"] >= 5
        assert 1 <= counts["/depth/points"] <= counts["/depth/image"] // 5 + 1  # reduced rate
        conn = next(c for c in reader.connections if c.topic == "/depth/image")
        _, _, raw = next(reader.messages(connections=[conn]))
        msg = reader.deserialize(raw, conn.msgtype)
        assert msg.encoding == "32FC1" and msg.header.frame_id == "thermal_optical_frame"
    summary = json.loads(result["summary"].read_text())
    assert summary["recorded"]["received"]["depth/image"] == counts["/depth/image"]
    assert summary["thermal_depth"]["backend"] == "onnxruntime"
    assert float(summary["thermal_depth"]["engine time mean (ms)"]) > 0
    assert result["pictures"] is not None and result["pictures"].stat().st_size > 1000
    # Samples are taken every 2 s (at most 4): a 5 s run gives a row for each, not only the last one whose
    # confidence was still among the most recent messages when the run ended.
    assert result["data"]["picture_frames"] >= 2
    assert (tmp_path / "run" / "summary.md").read_text().startswith("# monother demo: pipeline summary")
