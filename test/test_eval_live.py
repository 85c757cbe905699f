"""``monother eval --live``: a simulated bag played into DDS with /clock through the real thermal_depth
node (tiny random model), its outputs recorded and scored like offline; plus the CDR stamp helper."""
from __future__ import annotations

import json

import numpy as np
import pytest

from monother_ros import cli


def test_header_stamp_from_cdr_bytes():
    pytest.importorskip("rclpy")
    from rosbags.typesys import Stores, get_typestore

    from monother_ros.ros.bag_player import _header_stamp_ns

    ts = get_typestore(Stores.LATEST)
    T = ts.types
    stamp = T["builtin_interfaces/msg/Time"](sec=1_700_000_123, nanosec=456_789)
    msg = T["sensor_msgs/msg/Image"](header=T["std_msgs/msg/Header"](stamp=stamp, frame_id="x"), height=1, width=1,
                                     encoding="mono8", is_bigendian=0, step=1, data=np.zeros(1, np.uint8))
    raw = ts.serialize_cdr(msg, "sensor_msgs/msg/Image")
    assert _header_stamp_ns(raw, -1) == 1_700_000_123 * 10**9 + 456_789
    assert _header_stamp_ns(b"\x00\x01", 7) == 7


@pytest.mark.ros
@pytest.mark.slow
def test_live_replay_scores_the_node_outputs(tmp_path, capsys):
    pytest.importorskip("rclpy")
    from test_eval_offline import sim_bag
    from tiny_models import tiny_student_dir

    bag = sim_bag()
    out = tmp_path / "live"
    code = cli.main(["eval", str(bag), "--model", f"tiny={tiny_student_dir()}", "--out", str(out), "--live",
                     "--rate", "0.5"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    doc = json.loads((out / "metrics.json").read_text())
    assert doc["mode"] == "live"
    live = doc["live"]["tiny"]
    n = doc["bags"][bag.name]["thermal_messages"]
    assert live["published"] == n == 9  # 0.3 s of 30 Hz thermal
    assert 1 <= live["received"] <= n and live["dropped"] == n - live["received"]
    assert live["latency_ms"]["n"] == live["received"] and 0 < live["latency_ms"]["mean"] < 5000
    res = doc["results"][0]
    assert res["frames_scored"] + res["frames_dropped"] == n and res["frames_scored"] == live["received"]
    assert res["timing_ms"]["latency_ms"]["n"] == res["frames_scored"]
    # The node runs the same engine as offline: on the frames it answered, the scores agree.
    off = tmp_path / "offline"
    assert cli.main(["eval", str(bag), "--model", f"tiny={tiny_student_dir()}", "--out", str(off)]) == 0
    offline = {f["index"]: f for f in json.loads((off / "metrics.json").read_text())["frames"]}
    live_frames = [f for f in doc["frames"] if f.get("abs_rel") is not None]
    assert live_frames
    for f in live_frames:
        assert f["abs_rel"] == pytest.approx(offline[f["index"]]["abs_rel"], rel=1e-3)
    assert "Live replay" in (out / "report.md").read_text()
