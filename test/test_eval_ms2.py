"""``monother import-ms2``: a small MS2-layout folder written here -> bag -> read back and scored."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from monother_ros import cli
from monother_ros.core import se3
from monother_ros.eval.bag_reader import BagReader, camera_info_to_pinhole, image_to_numpy
from monother_ros.eval.ms2 import import_sequence, ms2_extrinsics, read_calib

K_THR = np.array([[80.0, 0.0, 31.0], [0.0, 81.0, 15.5], [0.0, 0.0, 1.0]])
K_RGB = np.array([[120.0, 0.0, 47.0], [0.0, 119.0, 23.0], [0.0, 0.0, 1.0]])


def _rot(axis, deg):
    return se3.rotation_about_axis(np.asarray(axis, float), np.radians(deg))


CALIB = {
    "K_rgbL": K_RGB, "K_thrL": K_THR, "K_nirL": np.eye(3),
    "R_nir2thr": _rot([0, 1, 0], 1.5), "T_nir2thr": np.array([[-120.0], [4.0], [2.5]]),  # mm, (3, 1) as MS2
    "R_nir2rgb": _rot([1, 0, 0], -0.7), "T_nir2rgb": np.array([[250.0], [-3.0], [1.0]]),
}


def write_ms2(root: Path, seq: str = "_2021-08-13-22-16-02", frames: int = 3, *, split: str = "test_night",
              calib: dict | None = None) -> dict[str, list[np.ndarray]]:
    """An MS2-layout folder: thermal 64x32 uint16, RGB 96x48, depth_filtered (uint16 m*256) except frame 1."""
    rng = np.random.default_rng(1)
    sync = root / "sync_data" / seq
    (sync / "thr" / "img_left").mkdir(parents=True)
    (sync / "rgb" / "img_left").mkdir(parents=True)
    depth_dir = root / "proj_depth" / seq / "thr" / "depth_filtered"
    depth_dir.mkdir(parents=True)
    np.save(sync / "calib.npy", calib if calib is not None else CALIB, allow_pickle=True)
    (root / f"{split}_list.txt").write_text(f"other_seq\n{seq}\n")
    out: dict[str, list[np.ndarray]] = {"thermal": [], "depth": [], "rgb": []}
    for k in range(frames):
        name = f"{k:06d}.png"
        thermal = rng.integers(20000, 30000, (32, 64)).astype(np.uint16)
        rgb = rng.integers(0, 255, (48, 96, 3)).astype(np.uint8)
        depth = (rng.uniform(2, 60, (32, 64)) * 256).astype(np.uint16)
        depth[rng.uniform(size=depth.shape) < 0.7] = 0  # MS2 depth is sparse
        Image.fromarray(thermal).save(sync / "thr" / "img_left" / name)
        Image.fromarray(rgb).save(sync / "rgb" / "img_left" / name)
        if k != 1:
            Image.fromarray(depth).save(depth_dir / name)
        out["thermal"].append(thermal)
        out["rgb"].append(rgb)
        out["depth"].append(depth if k != 1 else None)
    return out


def test_import_round_trip(tmp_path):
    root = tmp_path / "ms2"
    seq = "_2021-08-13-22-16-02"
    data = write_ms2(root, seq)
    summary = import_sequence(root, seq, tmp_path / "bag", rate_hz=10.0)
    assert (summary.frames, summary.with_gt, summary.condition) == (3, 2, "night")
    with BagReader(tmp_path / "bag") as bag:
        topics = bag.topics
        assert {t: topics[t].count for t in ("/thermal/image_raw", "/thermal/camera_info", "/rgb/image_raw",
                                             "/gt/depth", "/tf_static")} == {
            "/thermal/image_raw": 3, "/thermal/camera_info": 3, "/rgb/image_raw": 3, "/gt/depth": 2, "/tf_static": 1}
        info = json.loads(bag.custom_data["monother.rig"])
        assert info["scenario"] == "night" and info["sequence"] == seq and info["source"] == "ms2"
        thermal = [m for m in bag.messages(["/thermal/image_raw"])]
        assert [m.stamp_ns - thermal[0].stamp_ns for m in thermal] == [0, 100_000_000, 200_000_000]
        for m, ref in zip(thermal, data["thermal"]):
            assert m.msg.encoding == "mono16" and np.array_equal(image_to_numpy(m.msg), ref)
        cam = camera_info_to_pinhole(bag.first_message("/thermal/camera_info").msg)
        assert np.allclose(cam.K, K_THR) and (cam.width, cam.height) == (64, 32)
        rgb_cam = camera_info_to_pinhole(bag.first_message("/rgb/camera_info").msg)
        assert np.allclose(rgb_cam.K, K_RGB) and (rgb_cam.width, rgb_cam.height) == (96, 48)
        assert np.array_equal(image_to_numpy(bag.first_message("/rgb/image_raw").msg), data["rgb"][0])
        depths = list(bag.messages(["/gt/depth"]))
        assert [d.stamp_ns for d in depths] == [thermal[0].stamp_ns, thermal[2].stamp_ns]
        gt = image_to_numpy(depths[0].msg)
        ref = data["depth"][0]
        assert np.array_equal(np.isnan(gt), ref == 0)
        assert np.allclose(gt[ref > 0], ref[ref > 0] / 256.0)
        tree = bag.static_transforms()
    # The reference (zoedepth/data/ms2thermal.py): pose_t2rgb = [R|t*1e-3]_nir2rgb @ inv([R|t*1e-3]_nir2thr).
    nir2thr = se3.make_transform(CALIB["R_nir2thr"], CALIB["T_nir2thr"].reshape(3) * 1e-3)
    nir2rgb = se3.make_transform(CALIB["R_nir2rgb"], CALIB["T_nir2rgb"].reshape(3) * 1e-3)
    expected = nir2rgb @ np.linalg.inv(nir2thr)
    assert np.allclose(tree.lookup("rgb_optical_frame", "thermal_optical_frame"), expected, atol=1e-9)
    assert np.allclose(tree.lookup("thermal_optical_frame", "rgb_optical_frame") @ expected, np.eye(4), atol=1e-9)
    # base_link is x forward: the NIR camera's optical z axis is base_link's x.
    T_base_nir = tree.lookup("base_link", "nir_optical_frame")
    assert np.allclose(T_base_nir[:3, 2], [1, 0, 0])


def test_extrinsics_agree_with_the_training_reader():
    training = pytest.importorskip("training.data")
    T_thr_nir, T_rgb_nir = ms2_extrinsics(CALIB)
    assert np.allclose(training.ms2_extrinsic(CALIB), T_rgb_nir @ se3.invert(T_thr_nir))


def test_imported_bag_scores_with_frames_without_gt(tmp_path):
    from monother_ros.eval.evaluate import EvalOptions, evaluate
    from test_eval_offline import ScaledTruth

    root = tmp_path / "ms2"
    write_ms2(root, "seq")
    import_sequence(root, "seq", tmp_path / "seq_bag")
    run = evaluate([tmp_path / "seq_bag"], [], EvalOptions(progress=False, pictures=False), tmp_path / "out",
                   predictors=[ScaledTruth("p", 1.25)])
    s = run.per_bag[("p", "seq_bag")].to_dict()
    assert s["frames_scored"] == 2 and s["frames_without_gt"] == 1
    assert s["metrics"]["abs_rel"] == pytest.approx(0.25, rel=1e-5) and s["boundary_f1"] is None  # sparse GT
    assert run.bags["seq_bag"]["condition"] == "night"


def test_cli_import_and_errors(tmp_path, capsys):
    root = tmp_path / "ms2"
    write_ms2(root, "seq", frames=2, split="test_day")
    assert cli.main(["import-ms2", str(root), "--sequence", "seq", "--out", str(tmp_path / "b"), "--storage", "sqlite3",
                     "--condition", "rain"]) == 0
    assert "2 frames (1 with GT), condition rain" in capsys.readouterr().out  # frame 1 has no depth map
    with BagReader(tmp_path / "b") as bag:
        assert json.loads(bag.custom_data["monother.rig"])["scenario"] == "rain"
    # Existing output, unknown sequence, broken calibration: one clear line, exit 2, nothing left behind.
    assert cli.main(["import-ms2", str(root), "--sequence", "seq", "--out", str(tmp_path / "b")]) == 2
    assert "already exists" in capsys.readouterr().err
    assert cli.main(["import-ms2", str(root), "--sequence", "nope", "--out", str(tmp_path / "c")]) == 2
    assert "does not exist" in capsys.readouterr().err
    broken = tmp_path / "broken"
    write_ms2(broken, "seq", frames=1, calib={k: v for k, v in CALIB.items() if k != "T_nir2rgb"})
    assert cli.main(["import-ms2", str(broken), "--sequence", "seq", "--out", str(tmp_path / "d")]) == 2
    assert "lacks T_nir2rgb" in capsys.readouterr().err
    assert not (tmp_path / "d").exists() and not list(tmp_path.glob(".d.partial-*"))
    with pytest.raises(Exception):
        read_calib(tmp_path / "missing.npy")


# ------------------------------------------------------------------------------ files stay data
class _WritesMarker:
    """Unpickling this runs ``os.system`` (what a crafted calib.npy does)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        import os

        return os.system, (f"touch {self.marker}",)


def _save_object_npy(path: Path, value) -> None:
    array = np.empty((), dtype=object)
    array[()] = value
    np.save(path, array, allow_pickle=True)


@pytest.mark.parametrize("where", ["top", "inside_dict"])
def test_malicious_calibration_runs_nothing_and_is_refused(tmp_path, capsys, where):
    marker = tmp_path / "PWNED"
    payload = _WritesMarker(marker)
    root = tmp_path / "ms2"
    write_ms2(root, "seq", frames=1)
    calib_file = root / "sync_data" / "seq" / "calib.npy"
    _save_object_npy(calib_file, payload if where == "top" else {**CALIB, "K_thrL": payload})
    # The same file through numpy's unrestricted loader really would run the command (the test can fail).
    probe = tmp_path / "probe.npy"
    _save_object_npy(probe, _WritesMarker(tmp_path / "PROBE"))
    np.load(probe, allow_pickle=True)
    assert (tmp_path / "PROBE").exists()

    from monother_ros.errors import ConfigError

    with pytest.raises(ConfigError, match=r"refused global (posix|os|nt)\.system"):
        read_calib(calib_file)
    assert not marker.exists()
    code = cli.main(["import-ms2", str(root), "--sequence", "seq", "--out", str(tmp_path / "bag")])
    err = capsys.readouterr().err
    assert code == 2 and "refused global" in err and "Traceback" not in err
    assert not marker.exists() and not (tmp_path / "bag").exists()


def test_calibration_with_numpy_scalars_and_old_style_pickles_still_reads(tmp_path):
    import pickle

    calib = {k: v.astype(np.float32) for k, v in CALIB.items()}
    calib["scale"] = np.float64(1.5)  # a numpy scalar in the dict
    path = tmp_path / "calib.npy"
    _save_object_npy(path, calib)
    out = read_calib(path)
    np.testing.assert_allclose(out["K_thrL"], K_THR, rtol=1e-6)
    # A protocol-2 pickle (as Python 2 era numpy wrote it) after the .npy header.
    legacy = tmp_path / "legacy.npy"
    array = np.empty((), dtype=object)
    array[()] = CALIB
    with open(legacy, "wb") as handle:
        np.lib.format.write_array_header_1_0(handle, {"descr": "|O", "fortran_order": False, "shape": ()})
        pickle.dump(array, handle, protocol=2)
    np.testing.assert_allclose(read_calib(legacy)["T_nir2rgb"], CALIB["T_nir2rgb"].reshape(3))


def test_plain_and_broken_npy_files(tmp_path):
    from monother_ros.core.safe_npy import UnsafeDataError, load_npy_data

    plain = tmp_path / "plain.npy"
    np.save(plain, np.arange(6, dtype=np.int16).reshape(2, 3))
    np.testing.assert_array_equal(load_npy_data(plain), np.arange(6).reshape(2, 3))
    cut = tmp_path / "cut.npy"
    _save_object_npy(cut, CALIB)
    cut.write_bytes(cut.read_bytes()[:-40])
    with pytest.raises(UnsafeDataError, match="truncated"):
        load_npy_data(cut)
    junk = tmp_path / "junk.npy"
    junk.write_bytes(b"not numpy at all")
    with pytest.raises(UnsafeDataError, match="not a .npy file"):
        load_npy_data(junk)
    with pytest.raises(UnsafeDataError, match="cannot read"):
        load_npy_data(tmp_path / "missing.npy")
