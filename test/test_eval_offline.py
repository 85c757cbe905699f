"""End-to-end offline evaluation: known-answer predictions on a synthetic bag, ``monother eval`` on a
simulated bag with a tiny random model, and the failure cases (corrupt / truncated bag, missing topic,
no ground truth, a model that does not load)."""
from __future__ import annotations

import fcntl
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from monother_ros import cli
from monother_ros.core import se3
from monother_ros.core.camera import PinholeCamera
from monother_ros.eval.evaluate import EvalOptions, Prediction, evaluate
from monother_ros.eval.report import METRICS_SCHEMA, METRICS_VERSION
from test_eval_bag_reader import T, make_cloud, make_image, make_info, make_tf, write_messages

IMAGE, INFO, TF, CLOUD, STRING = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CameraInfo", "tf2_msgs/msg/TFMessage",
                                  "sensor_msgs/msg/PointCloud2", "std_msgs/msg/String")
EPOCH = 1_700_000_000 * 10**9
CAM = PinholeCamera(64, 48, 40.0, 40.0, 31.5, 23.5)
T_BASE_CAM = se3.make_transform(se3.OPTICAL_FROM_BODY_ROTATION.T, np.array([1.0, 0.0, 1.2]))
T_BASE_LIDAR = se3.make_transform(np.eye(3), np.array([0.8, 0.0, 1.6]))


# ------------------------------------------------------------------------------------------ data
def synth_depth(k: int) -> np.ndarray:
    """A wall at 20 m with a nearer box that moves; NaN 'sky' rows at the top."""
    d = np.full((48, 64), 20.0, np.float32)
    d[16:32, 10 + k:26 + k] = 8.0
    d[:4] = np.nan
    return d


def write_synth_bag(path: Path, frames: int = 6, *, gt: bool = True, lidar: bool = True, condition: str = "fog",
                    storage: str = "mcap") -> Path:
    items = [("/tf_static", TF, EPOCH, make_tf([("base_link", "thermal_optical_frame", T_BASE_CAM),
                                                ("base_link", "lidar_link", T_BASE_LIDAR)], EPOCH)),
             ("/rig/info", STRING, EPOCH, T["std_msgs/msg/String"](data=json.dumps({"scenario": condition})))]
    rng = np.random.default_rng(0)
    for k in range(frames):
        stamp = EPOCH + k * 33_333_333
        depth = synth_depth(k)
        thermal = (8000 + 40 * np.nan_to_num(30 - depth, nan=-10) + rng.integers(0, 5, depth.shape)).astype(np.uint16)
        items.append(("/thermal/image_raw", IMAGE, stamp,
                      make_image(thermal, "mono16", stamp, "thermal_optical_frame")))
        items.append(("/thermal/camera_info", INFO, stamp + 1, make_info(CAM, stamp, "thermal_optical_frame")))
        if gt:
            items.append(("/gt/depth", IMAGE, stamp + 2, make_image(depth, "32FC1", stamp, "thermal_optical_frame")))
        if lidar and k % 3 == 0:
            pts_cam = CAM.backproject(np.nan_to_num(depth, nan=0.0)).reshape(-1, 3)[::7]
            pts_cam = pts_cam[pts_cam[:, 2] > 0]
            T_lidar_cam = se3.invert(T_BASE_LIDAR) @ T_BASE_CAM
            pts = se3.transform_points(T_lidar_cam, pts_cam)
            items.append(("/lidar/points", CLOUD, stamp + 3, make_cloud(pts, stamp + 3_000_000, "lidar_link")))
    return write_messages(path, items, storage)


class ScaledTruth:
    """A predictor returning the ground truth times a factor (NaN where GT is missing -> coverage)."""

    def __init__(self, name: str, factor: float) -> None:
        self.name, self.factor = name, factor

    def predict(self, frame):
        return Prediction(np.nan_to_num(frame.gt, nan=50.0) * self.factor, np.full(frame.gt.shape, 0.5, np.float32),
                          {"total_ms": 1.0})

    def describe(self):
        return {"status": "ok", "path": "-"}

    def close(self):
        pass


def _session_dir() -> Path:
    root = Path(os.environ.get("ROS_LOG_DIR", "/tmp")) / "eval_data"
    root.mkdir(parents=True, exist_ok=True)
    return root


def sim_bag(seconds: float = 0.3, scenario: str = "night", seed: int = 3) -> Path:
    """A simulated bag (sim.bag.write_bag), built once per test session."""
    from monother_ros.sim.bag import write_bag

    root = _session_dir()
    target = root / f"sim_{scenario}_{seed}_{seconds:g}"
    with open(root / f".{target.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not target.exists():
            write_bag(target, seconds=seconds, seed=seed, scenario=scenario, preview=False)
    return target


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    return write_synth_bag(tmp_path_factory.mktemp("synth") / "synth")


@pytest.fixture(scope="module")
def tiny_model() -> Path:
    from tiny_models import tiny_student_dir

    return tiny_student_dir()


@pytest.fixture
def fake_model(tmp_path, monkeypatch) -> Path:
    """A model path that ``monother eval`` loads as ``ScaledTruth(1.1)`` (the CLI paths without building a
    network); other paths go through the real ``EnginePredictor.load``."""
    from monother_ros.eval.evaluate import EnginePredictor

    real = EnginePredictor.load
    path = tmp_path / "fake_model"

    def load(spec, options):
        return ScaledTruth(spec.name, 1.1) if spec.path == path else real(spec, options)

    monkeypatch.setattr(EnginePredictor, "load", staticmethod(load))
    return path


# ------------------------------------------------------------------------------ known answers
def test_known_answer_metrics_json_and_report(synth, tmp_path):
    out = tmp_path / "out"
    options = EvalOptions(progress=False, pictures=False)  # pictures: test_cli_on_sim_bag_...
    run = evaluate([synth], [], options, out, predictors=[ScaledTruth("x1.1", 1.1), ScaledTruth("exact", 1.0)])
    assert run.errors == []
    doc = json.loads((out / "metrics.json").read_text())
    assert doc["schema"] == METRICS_SCHEMA and doc["version"] == METRICS_VERSION and doc["complete"] is True
    assert {"models", "bags", "results", "by_condition", "overall", "error_vs_distance", "frames", "errors",
            "options"} <= set(doc)
    bag = doc["bags"]["synth"]
    assert bag["condition"] == "fog" and bag["condition_source"] == "/rig/info" and bag["frames_read"] == 6
    res = {r["model"]: r for r in doc["results"]}
    m = res["x1.1"]["metrics"]
    assert res["x1.1"]["frames_scored"] == 6 and res["x1.1"]["condition"] == "fog"
    assert m["abs_rel"] == pytest.approx(0.1, rel=1e-5) and m["a1"] == 1.0
    assert m["rmse"] == pytest.approx(np.sqrt(np.mean((0.1 * synth_depth(0)[4:]) ** 2)), rel=1e-5)
    assert res["x1.1"]["boundary_f1"] == pytest.approx(1.0)  # scale does not move edges
    assert res["exact"]["metrics"]["abs_rel"] == pytest.approx(0.0, abs=1e-7)
    bins = {tuple(b["range_m"]): b for b in res["x1.1"]["bins"]}
    assert bins[(0.0, 10.0)]["pixels"] == 6 * 16 * 16 and bins[(10.0, 20.0)]["pixels"] == 0
    assert bins[(20.0, 40.0)]["pixels"] == 6 * (44 * 64 - 16 * 16)
    cond = {c["model"]: c for c in doc["by_condition"]}
    assert cond["x1.1"]["condition"] == "fog" and cond["x1.1"]["frames_scored"] == 6
    assert len(doc["frames"]) == 12 and all(f["abs_rel"] is not None for f in doc["frames"])
    curve = doc["error_vs_distance"]["x1.1"]
    k8 = int(8 // curve["bin_m"])
    assert curve["mean_abs_err_m"][k8] == pytest.approx(0.8, rel=1e-5)
    report = (out / "report.md").read_text()
    assert f"{m['abs_rel']:.3f}" in report and "fog" in report and "x1.1" in report
    assert not list(out.glob("*.png"))


def test_frames_without_gt_are_counted(tmp_path):
    bag = write_synth_bag(tmp_path / "b", frames=4, lidar=True)
    # LiDAR scans exist at frames 0 and 3 (+3 ms): with a 1 ms tolerance no frame has ground truth.
    options = EvalOptions(progress=False, pictures=False, lidar_topic="/lidar/points", tolerance_ns=1_000_000)
    from monother_ros.errors import MonotherError

    with pytest.raises(MonotherError, match="nothing could be scored"):
        evaluate([bag], [], options, tmp_path / "o", predictors=[ScaledTruth("p", 1.0)])
    doc = json.loads((tmp_path / "o" / "metrics.json").read_text())
    assert doc["results"][0]["frames_without_gt"] == 4 and doc["results"][0]["frames_scored"] == 0
    # With the default 50 ms tolerance every frame finds the nearest scan; the projected LiDAR equals the
    # rendered depth for frames 0 and 3 (same box position), so the exact predictor scores ~0 there.
    run = evaluate([bag], [], EvalOptions(progress=False, pictures=False, lidar_topic="/lidar/points"), tmp_path / "o2",
                   predictors=[ScaledTruth("p", 1.0)])
    s = run.per_bag[("p", "b")]
    assert s.frames == 4 and s.without_gt == 0
    frames = [f for f in run.frames if f["index"] in (0, 3)]
    assert all(f["abs_rel"] < 1e-5 for f in frames)


def test_sqlite3_bag_scores_like_mcap(synth, tmp_path):
    db = write_synth_bag(tmp_path / "db", storage="sqlite3")
    assert list(db.glob("*.db3"))
    runs = [evaluate([bag], [], EvalOptions(progress=False, pictures=False), tmp_path / bag.name,
                     predictors=[ScaledTruth("p", 1.2)]) for bag in (synth, db)]
    a, b = (r.overall["p"].to_dict() for r in runs)
    assert a["frames_scored"] == b["frames_scored"] == 6 and a["metrics"] == b["metrics"]


def test_every_and_max_frames(synth, tmp_path):
    run = evaluate([synth], [], EvalOptions(progress=False, pictures=False, every=2, max_frames=2), tmp_path / "o",
                   predictors=[ScaledTruth("p", 1.0)])
    assert [f["index"] for f in run.frames] == [0, 2]


# ------------------------------------------------------------------------------------ the CLI
def _eval(*args, pictures: bool = False) -> int:
    return cli.main(["eval", *map(str, args), *([] if pictures else ["--no-pictures"])])


@pytest.mark.slow
def test_cli_on_sim_bag_two_models_side_by_side(tiny_model, tmp_path, capsys):
    bag = sim_bag()
    out = tmp_path / "out"
    code = _eval(bag, "--model", f"a={tiny_model}", "--model", f"b={tiny_model}", "--out", out, "--every", "3",
                 pictures=True)
    assert code == 0, capsys.readouterr().err
    doc = json.loads((out / "metrics.json").read_text())
    assert set(doc["models"]) == {"a", "b"} and doc["models"]["a"]["backend"] == "onnxruntime"
    res = {r["model"]: r for r in doc["results"]}
    n = doc["bags"][bag.name]["thermal_messages"]
    assert n == 9  # 0.3 s of 30 Hz
    assert res["a"]["frames_scored"] == 3 and res["a"]["condition"] == "night"  # every 3rd frame
    assert res["a"]["metrics"] == res["b"]["metrics"]  # same weights, deterministic
    assert res["a"]["timing_ms"]["total_ms"]["n"] == 3 and res["a"]["boundary_f1"] is not None
    report = (out / "report.md").read_text()
    assert f"{res['a']['metrics']['abs_rel']:.3f}" in report and "night" in report
    from PIL import Image

    for name, min_width in ((f"mosaic_{bag.name}.png", 256 * 8), ("error_vs_distance.png", 500),
                            ("abs_rel_over_time.png", 500)):
        assert f"({name})" in report
        with Image.open(out / name) as im:  # mosaic: thermal, GT, then depth/error/confidence per model
            assert im.size[0] >= min_width
    # The same bag scored against its LiDAR: sparse, no boundary F1, nearest scan within 50 ms.
    out2 = tmp_path / "lidar"
    assert _eval(bag, "--model", tiny_model, "--out", out2, "--lidar-topic", "/lidar/points", "--max-frames", "3") == 0
    lid = json.loads((out2 / "metrics.json").read_text())["overall"][0]
    assert lid["frames_scored"] == 3 and lid["boundary_f1"] is None
    assert 100 < lid["pixels"] / 3 < 0.2 * 640 * 512


def test_cli_corrupt_bag_exits_2(fake_model, tmp_path, capsys):
    bad = tmp_path / "bad.mcap"
    bad.write_bytes(b"\x89MCAP0\r\n" + os.urandom(500))
    assert _eval(bad, "--model", fake_model, "--out", tmp_path / "o") == 2
    err = capsys.readouterr().err
    assert "nothing could be scored" in err and "bad.mcap" in err
    assert json.loads((tmp_path / "o" / "metrics.json").read_text())["bags"]["bad"]["status"] == "error"


def test_cli_truncated_bag_keeps_other_results_and_exits_1(synth, fake_model, tmp_path, capsys):
    trunc = tmp_path / "trunc"
    shutil.copytree(synth, trunc)
    storage = next(trunc.glob("*.mcap"))
    data = storage.read_bytes()
    storage.write_bytes(data[: len(data) * 6 // 10])
    code = _eval(synth, trunc, "--model", fake_model, "--out", tmp_path / "o")
    captured = capsys.readouterr()
    assert code == 1, captured.err
    doc = json.loads((tmp_path / "o" / "metrics.json").read_text())
    assert doc["bags"]["synth"]["status"] == "ok" and doc["bags"]["trunc"]["status"] == "error"
    assert "trunc" in captured.err
    assert {r["bag"]: r["frames_scored"] for r in doc["results"]}["synth"] == 6


def test_cli_missing_topic_exits_2(fake_model, tmp_path, capsys):
    bag = write_synth_bag(tmp_path / "nogt", frames=2, gt=False, lidar=False)
    assert _eval(bag, "--model", fake_model, "--out", tmp_path / "o") == 2
    assert "lacks topic(s) /gt/depth" in capsys.readouterr().err


def test_cli_model_that_fails_to_load(synth, fake_model, tmp_path, capsys):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    code = _eval(synth, "--model", f"good={fake_model}", "--model", f"bad={broken}", "--out", tmp_path / "o")
    assert code == 1
    doc = json.loads((tmp_path / "o" / "metrics.json").read_text())
    assert doc["models"]["bad"]["status"] == "error" and "bad" in doc["models"]["bad"]["error"]
    assert [r["model"] for r in doc["results"]] == ["good"]
    capsys.readouterr()
    assert _eval(synth, "--model", tmp_path / "missing", "--out", tmp_path / "o2") == 2
    assert "no model could be loaded" in capsys.readouterr().err


def test_bag_failing_mid_read_keeps_frames_scored_so_far(synth, tmp_path, monkeypatch):
    from monother_ros.errors import BagError
    from monother_ros.eval.bag_reader import BagReader

    real = BagReader.messages

    def failing(self, topics=None):
        for n, message in enumerate(real(self, topics)):
            if n == 10:  # a few frames in (thermal + info + gt per frame)
                raise BagError(f"bag {self.path} is truncated or corrupt: simulated")
            yield message

    monkeypatch.setattr(BagReader, "messages", failing)
    run = evaluate([synth], [], EvalOptions(progress=False, pictures=False), tmp_path / "o",
                   predictors=[ScaledTruth("p", 1.1)])
    entry = run.bags["synth"]
    assert entry["status"] == "error" and entry["partial"] is True and "results so far are kept" in entry["error"]
    doc = json.loads((tmp_path / "o" / "metrics.json").read_text())
    scored = doc["results"][0]["frames_scored"]
    assert 1 <= scored < 6 and doc["results"][0]["metrics"]["abs_rel"] == pytest.approx(0.1, rel=1e-5)
    assert "truncated or corrupt" in (tmp_path / "o" / "report.md").read_text()


def test_interrupt_writes_what_was_scored(synth, tmp_path):
    class Interrupting(ScaledTruth):
        calls = 0

        def predict(self, frame):
            Interrupting.calls += 1
            if Interrupting.calls == 4:
                raise KeyboardInterrupt
            return super().predict(frame)

    with pytest.raises(KeyboardInterrupt):
        evaluate([synth], [], EvalOptions(progress=False), tmp_path / "o", predictors=[Interrupting("p", 1.1)])
    doc = json.loads((tmp_path / "o" / "metrics.json").read_text())
    assert doc["complete"] is False and doc["results"][0]["frames_scored"] == 3
    assert any("interrupted" in e for e in doc["errors"])


# ------------------------------------------------------------- recordings: compressed, ROS 1, damaged
class ThermalDepth:
    """A predictor whose depth is a fixed function of the decoded thermal pixels: two bags score alike
    only when their thermal frames decode to the same counts."""

    name = "thermal"

    def predict(self, frame):
        depth = 2.0 + frame.thermal.astype(np.float32) / 1000.0
        return Prediction(depth, None, {"total_ms": 1.0})

    def describe(self):
        return {"status": "ok", "path": "-"}

    def close(self):
        pass


def sim_recordings() -> dict[str, Path]:
    """One short simulated drive recorded four ways (built once per session): raw rosbag2, rosbag2 with
    thermal as 16-bit PNG and RGB as JPEG on the compressed topics, and both as ROS 1 bags."""
    from monother_ros.sim.bag import export_rosbag1, write_bag

    root = _session_dir()
    bags = {"raw": root / "rec_raw", "compressed": root / "rec_compressed",
            "raw_ros1": root / "rec_raw.bag", "compressed_ros1": root / "rec_compressed.bag"}
    with open(root / ".recordings.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not bags["raw"].exists():
            write_bag(bags["raw"], seconds=0.2, seed=3, scenario="night", preview=False, workers=0)
        if not bags["compressed"].exists():
            write_bag(bags["compressed"], seconds=0.2, seed=3, scenario="night", preview=False, workers=0,
                      compress={"thermal": "png", "rgb": "jpeg"})
        for ros2, ros1 in (("raw", "raw_ros1"), ("compressed", "compressed_ros1")):
            if not bags[ros1].exists():
                export_rosbag1(bags[ros2], bags[ros1])
    return bags


@pytest.fixture(scope="module")
def recordings() -> dict[str, Path]:
    return sim_recordings()


def test_compressed_and_ros1_recordings_score_exactly_like_the_raw_ros2_bag(recordings, tmp_path):
    runs = {}
    for kind, bag in recordings.items():
        runs[kind] = evaluate([bag], [], EvalOptions(progress=False, pictures=False), tmp_path / kind,
                              predictors=[ThermalDepth()])
        assert runs[kind].errors == [], (kind, runs[kind].errors)
    entries = {kind: next(iter(run.bags.values())) for kind, run in runs.items()}
    assert entries["raw"]["thermal_topic"] == "/thermal/image_raw" and entries["raw"]["ros_version"] == 2
    assert entries["compressed"]["thermal_topic"] == "/thermal/image_raw/compressed"
    assert entries["compressed"]["thermal_type"] == "sensor_msgs/msg/CompressedImage"
    assert entries["raw_ros1"]["ros_version"] == 1 and entries["compressed_ros1"]["ros_version"] == 1
    assert all(e["condition"] == "night" and e["thermal_messages"] == 6 for e in entries.values())
    reference = runs["raw"].overall["thermal"].to_dict()
    assert reference["frames_scored"] == 6 and 0 < reference["metrics"]["abs_rel"] < 10
    for kind in ("compressed", "raw_ros1", "compressed_ros1"):
        # 16-bit PNG is lossless and the ROS 1 copy carries the same bytes: identical scores.
        assert runs[kind].overall["thermal"].to_dict()["metrics"] == reference["metrics"], kind
    # LiDAR ground truth goes through CameraInfo (K in ROS 1), /tf_static and PointCloud2 in both formats.
    lidar = [evaluate([recordings[kind]], [], EvalOptions(progress=False, pictures=False, lidar_topic="/lidar/points"),
                      tmp_path / f"lidar_{kind}", predictors=[ThermalDepth()]).overall["thermal"].to_dict()
             for kind in ("raw", "raw_ros1")]
    assert lidar[0]["frames_scored"] == 6 and lidar[0]["pixels"] > 100
    assert lidar[0]["metrics"] == lidar[1]["metrics"] and lidar[0]["pixels"] == lidar[1]["pixels"]


def test_cli_thermal_topic_may_name_the_compressed_topic(recordings, tiny_model, tmp_path, capsys):
    code = _eval(recordings["compressed"], "--model", tiny_model, "--out", tmp_path / "a", "--max-frames", "2",
                 "--thermal-topic", "/thermal/image_raw/compressed")
    assert code == 0, capsys.readouterr().err
    code = _eval(recordings["compressed_ros1"], "--model", tiny_model, "--out", tmp_path / "b", "--max-frames", "2")
    assert code == 0, capsys.readouterr().err
    a, b = (json.loads((tmp_path / d / "metrics.json").read_text())["overall"][0] for d in ("a", "b"))
    assert a["frames_scored"] == b["frames_scored"] == 2 and a["metrics"] == b["metrics"]
    # The raw bag has no compressed topic: the missing topic is named.
    assert _eval(recordings["raw"], "--model", tiny_model, "--out", tmp_path / "c",
                 "--thermal-topic", "/thermal/image_raw/compressed") == 2
    assert "lacks topic(s) /thermal/image_raw/compressed" in capsys.readouterr().err


def test_cli_without_model_scores_the_shipped_default(recordings, tmp_path, capsys):
    from monother_ros.paths import default_model_dir

    code = _eval(recordings["raw"], "--out", tmp_path / "o", "--max-frames", "1")
    assert code == 0, capsys.readouterr().err
    doc = json.loads((tmp_path / "o" / "metrics.json").read_text())
    assert list(doc["models"]) == ["default"]
    assert Path(doc["models"]["default"]["path"]) == default_model_dir()
    assert doc["overall"][0]["frames_scored"] == 1


def test_ros1_bag_cut_mid_chunk_is_scored_up_to_the_cut(recordings, fake_model, tmp_path, capsys):
    from monother_ros.errors import BagError
    from monother_ros.eval.bag_reader import BagReader

    cut = tmp_path / "cut.bag"
    blob = recordings["raw_ros1"].read_bytes()
    cut.write_bytes(blob[: len(blob) // 2])  # mid-chunk: the index at the end is gone
    with BagReader(cut) as bag:
        assert bag.salvaged and 1 <= bag.topics["/thermal/image_raw"].count < 6
    run = evaluate([cut], [], EvalOptions(progress=False, pictures=False), tmp_path / "o", predictors=[ThermalDepth()])
    entry = run.bags["cut"]
    assert entry["status"] == "error" and entry["partial"] is True and "rosbag reindex" in entry["error"]
    full = evaluate([recordings["raw_ros1"]], [], EvalOptions(progress=False, pictures=False), tmp_path / "full",
                    predictors=[ThermalDepth()])
    first = {f["index"]: f["abs_rel"] for f in full.frames}
    assert 1 <= run.frames_scored < 6
    assert all(first[f["index"]] == f["abs_rel"] for f in run.frames if f.get("abs_rel") is not None)
    # Through the CLI next to a good bag: both reported, no traceback, exit 1 (something failed).
    assert _eval(recordings["raw_ros1"], cut, "--model", fake_model, "--out", tmp_path / "o2") == 1
    err = capsys.readouterr().err
    assert "rosbag reindex" in err and "Traceback" not in err
    doc = json.loads((tmp_path / "o2" / "metrics.json").read_text())
    assert doc["bags"]["rec_raw"]["status"] == "ok" and doc["bags"]["cut"]["partial"] is True
    # Cut before its first connection record: nothing to read, a clear error.
    stub = tmp_path / "stub.bag"
    stub.write_bytes(blob[:100])
    with pytest.raises(BagError, match="rosbag reindex.*nothing readable"):
        BagReader(stub)
    assert _eval(stub, "--model", fake_model, "--out", tmp_path / "o3") == 2
    assert "Traceback" not in capsys.readouterr().err


def test_crash_truncated_mcap_is_scored_up_to_the_cut(recordings, tmp_path, capsys):
    from monother_ros.eval.bag_reader import BagReader

    original = next(recordings["raw"].glob("*.mcap"))
    cut = tmp_path / "crashed.mcap"
    blob = original.read_bytes()
    cut.write_bytes(blob[: int(len(blob) * 0.7)])  # footer, summary and the last chunks lost
    with BagReader(cut) as bag:
        assert bag.salvaged and bag.topics["/thermal/image_raw"].count >= 2
    run = evaluate([cut], [], EvalOptions(progress=False, pictures=False), tmp_path / "o", predictors=[ThermalDepth()])
    entry = run.bags["crashed"]
    assert entry["status"] == "error" and entry["partial"] is True
    assert "mcap recover" in entry["error"] and "before the cut" in entry["error"]
    full = evaluate([recordings["raw"]], [], EvalOptions(progress=False, pictures=False), tmp_path / "full",
                    predictors=[ThermalDepth()])
    scored = run.frames_scored
    assert 1 <= scored < 6
    # The frames read before the cut are the recorded ones: same per-frame scores as the intact bag.
    first = {f["index"]: f["abs_rel"] for f in full.frames}
    assert all(first[f["index"]] == f["abs_rel"] for f in run.frames if f.get("abs_rel") is not None)


def test_unwritable_out_fails_before_evaluating(synth, fake_model, tmp_path, capsys, monkeypatch):
    import errno

    from monother_ros.eval import evaluate as evaluate_module

    calls = []
    real_iter = evaluate_module.iter_frames
    monkeypatch.setattr(evaluate_module, "iter_frames", lambda *a, **k: calls.append(1) or real_iter(*a, **k))
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    # Tests run as root, where permission bits do not stop writes: a path under a file (and /proc) does.
    for out in (blocker / "sub", blocker, Path("/proc/monother_eval_out")):
        assert _eval(synth, "--model", fake_model, "--out", out) == 2
        err = capsys.readouterr().err
        assert "cannot write the outputs into" in err or "is not a folder" in err, err
        assert "Traceback" not in err
    assert calls == []  # nothing was evaluated
    # A full disk: the probe's fsync fails with ENOSPC.
    real_fsync = os.fsync

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(evaluate_module.os, "fsync", full)
    assert _eval(synth, "--model", fake_model, "--out", tmp_path / "full") == 2
    err = capsys.readouterr().err
    assert "no space left" in err.lower() and "Traceback" not in err and calls == []
    assert not list((tmp_path / "full").iterdir())  # the probe is removed
    monkeypatch.setattr(evaluate_module.os, "fsync", real_fsync)
    # The disk fills up during the run (the probe passed, metrics.json does not fit): a clear error, no
    # traceback, no temporary file left behind.
    def full_for_metrics(fd):
        if ".metrics.json." in os.readlink(f"/proc/self/fd/{fd}"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_fsync(fd)

    monkeypatch.setattr(evaluate_module.os, "fsync", full_for_metrics)
    assert _eval(synth, "--model", fake_model, "--out", tmp_path / "late") == 2
    err = capsys.readouterr().err
    assert "cannot write the outputs into" in err and "No space left" in err and "Traceback" not in err
    assert calls == [1] and list((tmp_path / "late").iterdir()) == []


def _compressed_thermal_bag(path: Path, payloads: list[tuple[bytes, str]]) -> Path:
    """Frames of write_synth_bag with the thermal image as CompressedImage (data, format) per frame."""
    items = []
    for k, (data, fmt) in enumerate(payloads):
        stamp = EPOCH + k * 33_333_333
        header = make_image(np.zeros((1, 1), np.uint16), "mono16", stamp, "thermal_optical_frame").header
        items.append(("/thermal/image_raw/compressed", "sensor_msgs/msg/CompressedImage", stamp,
                      T["sensor_msgs/msg/CompressedImage"](header=header, format=fmt, data=np.frombuffer(data, np.uint8))))
        items.append(("/gt/depth", IMAGE, stamp + 2, make_image(synth_depth(k), "32FC1", stamp, "thermal_optical_frame")))
    return write_messages(path, items)


def test_corrupt_compressed_frames_are_skipped_and_reported(tmp_path):
    from monother_ros.core.image_codec import encode_compressed_image

    rng = np.random.default_rng(5)
    frames = [rng.integers(9000, 12000, (48, 64)).astype(np.uint16) for _ in range(5)]
    payloads = [encode_compressed_image(f, "mono16", "png") for f in frames]
    good_fmt = payloads[0][1]
    payloads[1] = (payloads[1][0][: len(payloads[1][0]) // 2], good_fmt)  # truncated PNG
    payloads[2] = (b"\x89PNG\r\n\x1a\n" + bytes(100), good_fmt)  # garbage after the signature
    payloads[3] = (payloads[3][0], "mono8; png compressed")  # a 16-bit frame claiming 8 bits
    bag = _compressed_thermal_bag(tmp_path / "bad_frames", payloads)
    run = evaluate([bag], [], EvalOptions(progress=False, pictures=False), tmp_path / "o", predictors=[ThermalDepth()])
    entry = run.bags["bad_frames"]
    assert entry["status"] == "ok" and entry["frames_skipped"] == 3 and entry["frames_read"] == 2
    assert [f["index"] for f in run.frames] == [0, 4]  # the good frames around the bad ones
    assert len(run.errors) == 1 and "3 thermal frame(s) could not be decoded" in run.errors[0]
    # The scores of the good frames are those of their exact thermal counts.
    expected = np.nanmean(np.abs(2.0 + frames[0].astype(np.float32)[4:] / 1000.0 - synth_depth(0)[4:]) / synth_depth(0)[4:])
    assert run.frames[0]["abs_rel"] == pytest.approx(float(expected), rel=1e-5)


def test_live_mode_refuses_a_ros1_bag_before_starting_a_node(recordings, tiny_model, tmp_path, capsys):
    code = _eval(recordings["raw_ros1"], "--model", tiny_model, "--out", tmp_path / "o", "--live")
    err = capsys.readouterr().err
    assert code == 2 and "is a ROS 1 bag: --live replays rosbag2 bags only" in err and "Traceback" not in err


def test_blind_frames_are_not_scored_and_are_counted(tmp_path):
    """A closed shutter (constant frame) and a saturated sensor yield no scored frame (the node publishes
    no depth for them); the bag still scores its real frames and says how many were blind."""
    rng = np.random.default_rng(7)
    frames = [rng.integers(9000, 12000, (48, 64)).astype(np.uint16) for _ in range(5)]
    frames[1] = np.full((48, 64), 10400, np.uint16)  # flat-field shutter closed
    frames[3] = np.full((48, 64), 65535, np.uint16)  # saturated
    items = []
    for k, image in enumerate(frames):
        stamp = EPOCH + k * 33_333_333
        items.append(("/thermal/image_raw", IMAGE, stamp, make_image(image, "mono16", stamp, "thermal_optical_frame")))
        items.append(("/gt/depth", IMAGE, stamp + 2, make_image(synth_depth(k), "32FC1", stamp, "thermal_optical_frame")))
    bag = write_messages(tmp_path / "shutter", items)
    run = evaluate([bag], [], EvalOptions(progress=False, pictures=False), tmp_path / "o", predictors=[ThermalDepth()])
    entry = run.bags["shutter"]
    assert entry["status"] == "ok" and entry["frames_read"] == 3 and entry["frames_blind"] == 2
    assert [f["index"] for f in run.frames] == [0, 2, 4]
    assert run.errors == []  # blind frames are what thermal cameras do, not a broken bag

    # Nothing but a closed shutter: an empty result that says why, not a perfect-coverage score.
    items = [(t, ty, st, make_image(np.full((48, 64), 10400, np.uint16), "mono16", st, "thermal_optical_frame")
              if t == "/thermal/image_raw" else msg) for t, ty, st, msg in items]
    bag = write_messages(tmp_path / "capped", items)
    from monother_ros.errors import MonotherError

    with pytest.raises(MonotherError, match="none of the thermal frames has usable content.*nearly uniform"):
        evaluate([bag], [], EvalOptions(progress=False, pictures=False), tmp_path / "o2", predictors=[ThermalDepth()])
    metrics = json.loads((tmp_path / "o2" / "metrics.json").read_text())
    entry = next(iter(metrics["bags"].values())) if isinstance(metrics["bags"], dict) else metrics["bags"][0]
    assert entry["status"] == "empty" and entry["frames_blind"] == 5
