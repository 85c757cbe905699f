"""Training data: bag pairing (skips counted), GT from depth / LiDAR, MS2 layout, cache, augmentation."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from monother_ros.core import se3
from monother_ros.core.camera import PinholeCamera
from monother_ros.errors import BagError, ConfigError
from test_eval_bag_reader import CLOUD, IMAGE, INFO, TF, make_cloud, make_image, make_info, make_tf, write_messages
from training.data import (
    DataOptions,
    PairedFrames,
    build_dataset,
    collate,
    load_bag,
    load_ms2,
    load_source,
    nearest_pairs,
    project_points_nearest,
    resize_depth_nearest,
)

H, W = 28, 42  # training size (multiples of 14)
CAM_T = PinholeCamera.from_hfov(64, 48, 60.0)
CAM_R = PinholeCamera.from_hfov(80, 60, 70.0)
T_BASE_T = se3.make_transform(se3.OPTICAL_FROM_BODY_ROTATION.T, [0.0, 0.05, 1.0])
T_BASE_R = se3.make_transform(se3.OPTICAL_FROM_BODY_ROTATION.T, [0.0, -0.05, 1.0])


def options(**kw) -> DataOptions:
    return DataOptions(input_size=(H, W), rgb_input_size=(H, W), **kw)


def rig_bag(path: Path, thermal_ms, rgb_ms, *, gt: str = "depth", storage: str = "mcap") -> Path:
    """A small rig bag: thermal/RGB at the given millisecond stamps, GT depth at thermal stamps or a LiDAR."""
    rng = np.random.default_rng(1)
    items = [
        ("/thermal/camera_info", INFO, 0, make_info(CAM_T, 0, "thermal_optical")),
        ("/rgb/camera_info", INFO, 0, make_info(CAM_R, 0, "rgb_optical")),
        ("/tf_static", TF, 0, make_tf([("base_link", "thermal_optical", T_BASE_T), ("base_link", "rgb_optical", T_BASE_R),
                                       ("base_link", "lidar", np.eye(4))])),
    ]
    for i, ms in enumerate(thermal_ms):
        ns = int(ms * 1e6) + 1_000_000_000
        img = rng.integers(20000, 30000, (48, 64), dtype=np.uint16)
        items.append(("/thermal/image_raw", IMAGE, ns, make_image(img, "mono16", ns, "thermal_optical")))
        if gt == "depth":
            depth = np.full((48, 64), 5.0 + i, np.float32)
            depth[0, 0] = np.nan
            items.append(("/gt/depth", IMAGE, ns, make_image(depth, "32FC1", ns, "thermal_optical")))
        elif gt == "lidar":
            items.append(("/lidar/points", CLOUD, ns, make_cloud(np.array([[10.0, 0.0, 1.0], [10.0, 0.5, 1.0], [12.0, 0.5, 1.0]]), ns, "lidar")))
    for ms in rgb_ms:
        ns = int(ms * 1e6) + 1_000_000_000
        items.append(("/rgb/image_raw", IMAGE, ns, make_image(rng.integers(0, 255, (60, 80, 3), dtype=np.uint8), "rgb8", ns, "rgb_optical")))
    return write_messages(path, items, storage)


def test_nearest_pairs_tolerance_and_ties():
    out = nearest_pairs(np.array([0, 10, 20, 50]), np.array([4, 16, 100]), 6)
    assert out.tolist() == [0, 0, 1, -1]  # 10 is 6 from both 4 and 16: the earlier one wins


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_bag_pairing_skips_and_counts_partnerless_frames(tmp_path, storage):
    # Thermal at 0, 33, 66, 100, 133, 166 ms; RGB near 0, 66 and 166 only (tolerance 10 ms).
    bag = rig_bag(tmp_path / "bag", [0, 33, 66, 100, 133, 166], [3, 61, 170], storage=storage)
    records, report = load_bag(bag, options(pair_tolerance_s=0.010))
    assert (report.thermal_frames, report.rgb_frames, report.paired, report.skipped_no_rgb) == (6, 3, 3, 3)
    assert [r.meta["index"] for r in records] == [0, 2, 5]
    assert [r.meta["rgb_stamp_ns"] - r.meta["stamp_ns"] for r in records] == [3_000_000, -5_000_000, 4_000_000]
    # GT from /gt/depth at the thermal stamp, resized by nearest; the NaN corner became 0 (invalid).
    assert records[1].gt_thermal.shape == (H, W) and records[1].gt_thermal[5, 5] == pytest.approx(7.0)
    assert records[0].gt_thermal[0, 0] == 0.0
    assert records[0].thermal.shape == (H, W) and 0.0 <= records[0].thermal.min() and records[0].thermal.max() <= 1.0
    assert records[0].rgb.shape == (3, H, W)
    np.testing.assert_allclose(records[0].K_thermal, CAM_T.resized(W, H).K)
    np.testing.assert_allclose(records[0].T_rgb_thermal, se3.invert(T_BASE_R) @ T_BASE_T, atol=1e-9)
    assert "3 thermal frames skipped" in report.summary()


def test_bag_lidar_ground_truth_is_nearest_return(tmp_path):
    bag = rig_bag(tmp_path / "bag", [0, 33], [0, 33], gt="lidar")
    records, report = load_bag(bag, options())
    assert report.gt_source == "lidar"
    cam = CAM_T.resized(W, H)
    T_t_lidar = se3.invert(T_BASE_T)
    gt = records[0].gt_thermal
    # (10, 0, 1) lidar = base: straight ahead of the thermal camera at z = 10.
    expected = project_points_nearest(np.array([[10.0, 0.0, 1.0]]), cam, T_t_lidar)
    v, u = np.argwhere(expected > 0)[0]
    assert gt[v, u] == pytest.approx(10.0)
    # The 10 m and 12 m points at y = 0.5 project near each other; where they share a pixel the nearer wins.
    assert np.count_nonzero(gt) in (2, 3) and gt.max() <= 12.0
    pts = np.array([[12.0, 0.5, 1.0], [10.0, 0.5 * 10 / 12, 1.0]])  # same ray, different ranges
    both = project_points_nearest(pts, cam, T_t_lidar)
    assert np.count_nonzero(both) == 1 and both[both > 0][0] == pytest.approx(10.0)


def test_project_points_drops_points_behind_and_outside():
    cam = PinholeCamera.from_hfov(10, 8, 90.0)
    out = project_points_nearest(np.array([[0, 0, -1.0], [100, 0, 1.0], [0, 0, 2.0]]), cam, np.eye(4))
    assert np.count_nonzero(out) == 1 and out.max() == pytest.approx(2.0)


def test_missing_topic_is_a_bag_error(tmp_path):
    bag = write_messages(tmp_path / "bag", [("/thermal/image_raw", IMAGE, 1, make_image(np.zeros((4, 4), np.uint16), "mono16", 1, "t"))])
    with pytest.raises(BagError, match="lacks topic"):
        load_bag(bag, options())


def test_resize_depth_nearest_keeps_values_and_invalids():
    depth = np.array([[1, 2, 3], [4, np.nan, 6]], np.float32)
    out = resize_depth_nearest(depth, (2, 5))
    assert out.tolist() == [[1, 2, 2, 3, 3], [4, 0, 0, 6, 6]] or out.tolist() == [[1, 1, 2, 3, 3], [4, 4, 0, 6, 6]]


def _write_ms2(root: Path, n: int = 3) -> None:
    rng = np.random.default_rng(0)
    seq = "_2021-08-06-10-59-33"
    sync = root / "sync_data" / seq
    for sub in ("thr/img_left", "rgb/img_left"):
        (sync / sub).mkdir(parents=True)
    for mod in ("thr", "rgb"):
        (root / "proj_depth" / seq / mod / "depth_filtered").mkdir(parents=True)
    R = se3.rotation_about_axis([0, 1, 0], 0.02)
    calib = {
        "K_thrL": np.array([[400.0, 0, 319.5], [0, 400.0, 127.5], [0, 0, 1]]),
        "K_rgbL": np.array([[600.0, 0, 611.5], [0, 600.0, 191.5], [0, 0, 1]]),
        "R_nir2thr": R, "T_nir2thr": np.array([[100.0], [0.0], [0.0]]),  # millimetres
        "R_nir2rgb": np.eye(3), "T_nir2rgb": np.array([[-200.0], [10.0], [0.0]]),
    }
    np.save(sync / "calib.npy", calib, allow_pickle=True)
    for i in range(n):
        name = f"{i:06d}.png"
        Image.fromarray(rng.integers(1000, 60000, (64, 160), dtype=np.uint16)).save(sync / "thr/img_left" / name)
        Image.fromarray(rng.integers(0, 255, (96, 306, 3), dtype=np.uint8)).save(sync / "rgb/img_left" / name)
        depth = np.zeros((64, 160), np.uint16)
        depth[25:, :] = int(12.5 * 256)  # 12.5 m, top rows invalid
        Image.fromarray(depth).save(root / "proj_depth" / seq / "thr/depth_filtered" / name)
        depth_rgb = np.full((96, 306), int(20.0 * 256), np.uint16)
        Image.fromarray(depth_rgb).save(root / "proj_depth" / seq / "rgb/depth_filtered" / name)
    (root / "train_list.txt").write_text(seq + "\n")


def test_ms2_layout(tmp_path):
    _write_ms2(tmp_path)
    records, report = load_ms2(tmp_path, "train", options())
    assert len(records) == 3 and report.paired == 3 and report.without_gt == 0
    r = records[0]
    assert r.thermal.shape == (H, W) and r.rgb.shape == (3, H, W)
    assert r.gt_thermal[0, 0] == 0.0 and r.gt_thermal[-1, -1] == pytest.approx(12.5)
    assert r.gt_rgb.shape == (H, W) and r.gt_rgb[3, 3] == pytest.approx(20.0)
    np.testing.assert_allclose(r.K_thermal, PinholeCamera(160, 64, 400.0, 400.0, 319.5, 127.5).resized(W, H).K)
    # T_rgb_thermal = T_rgb_nir @ inv(T_thr_nir), translations mm -> m.
    T_thr_nir = se3.make_transform(se3.rotation_about_axis([0, 1, 0], 0.02), [0.1, 0, 0])
    T_rgb_nir = se3.make_transform(np.eye(3), [-0.2, 0.01, 0])
    np.testing.assert_allclose(r.T_rgb_thermal, T_rgb_nir @ se3.invert(T_thr_nir), atol=1e-12)
    with pytest.raises(ConfigError, match="no split list"):
        load_ms2(tmp_path, "test_night", options())


def test_cache_roundtrip_is_identical(tmp_path):
    bag = rig_bag(tmp_path / "bag", [0, 33, 66], [0, 33, 66])
    first, report = load_source(str(bag), options(), tmp_path / "cache")
    assert len(list((tmp_path / "cache").glob("*.npz"))) == 1
    second, report2 = load_source(str(bag), options(), tmp_path / "cache")
    assert report2 == report and len(second) == len(first)
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a.thermal, b.thermal)
        np.testing.assert_array_equal(a.gt_thermal, b.gt_thermal)
        assert a.meta == b.meta


def test_dataset_samples_augmentation_and_collate(tmp_path):
    _write_ms2(tmp_path)
    ds = build_dataset([f"ms2:{tmp_path}:train"], options(), augment=True, seed=3)
    a, b = ds[1], ds[1]
    torch.testing.assert_close(a["thermal"], b["thermal"])
    assert a["thermal"].shape == (3, H, W) and a["rgb"].shape == (3, H, W)
    ds.set_epoch(1)
    assert not torch.equal(ds[1]["thermal"], a["thermal"])  # a new draw per epoch
    plain = PairedFrames(ds.records, augment=False)
    expected = (torch.from_numpy(ds.records[1].thermal) - 0.45) / 0.225
    torch.testing.assert_close(plain[1]["thermal"][2], expected)
    batch = collate([plain[0], plain[1]])
    assert batch["thermal"].shape == (2, 3, H, W) and batch["gt_depth_thermal"].shape == (2, H, W)
    assert batch["K_rgb"].shape == (2, 3, 3) and len(batch["meta"]) == 2
    s0 = dict(plain[0])
    s0["gt_depth_rgb"] = None
    mixed = collate([s0, plain[1]])
    assert mixed["gt_depth_rgb"][0].abs().sum() == 0 and mixed["gt_depth_rgb"][1].max() == pytest.approx(20.0)
    s1 = dict(plain[1])
    s1["gt_depth_rgb"] = None
    assert collate([s0, s1])["gt_depth_rgb"] is None


def test_bag_rgb_ground_truth_is_thermal_gt_splatted(tmp_path):
    bag = rig_bag(tmp_path / "bag", [0], [0])
    (record,), _ = load_bag(bag, options())
    # A fronto-parallel plane at 5 m seen by both cameras (parallel axes, 10 cm baseline): same z in RGB.
    valid = record.gt_rgb > 0
    assert valid.mean() > 0.5
    np.testing.assert_allclose(record.gt_rgb[valid], 5.0, rtol=1e-5)


def test_rgb_low_light_augmentation_darkens_rgb_only_and_keeps_other_draws(tmp_path):
    _write_ms2(tmp_path)
    ds = build_dataset([f"ms2:{tmp_path}:train"], options(), augment=True, seed=3)
    dark = PairedFrames(ds.records, augment=True, seed=3, rgb_low_light=1.0)
    for i in range(len(ds)):
        base, low = ds[i], dark[i]
        torch.testing.assert_close(low["thermal"], base["thermal"])  # thermal draws unchanged
        unit = lambda x: x * torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1) + torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
        lo, hi = unit(low["rgb"]), unit(base["rgb"])
        assert lo.mean() < 0.8 * hi.mean()
        # Spatially varying: some quarter of the image keeps under 30 % of its light.
        quarters = [(lo[:, a, b].mean() / hi[:, a, b].mean()).item() for a in (slice(0, H // 2), slice(H // 2, H))
                    for b in (slice(0, W // 2), slice(W // 2, W))]
        assert min(quarters) < 0.3, quarters
    # Deterministic per (seed, epoch, index).
    torch.testing.assert_close(dark[0]["rgb"], dark[0]["rgb"])
    with pytest.raises(ValueError):
        PairedFrames(ds.records, rgb_low_light=1.5)


def test_ros1_and_compressed_recordings_give_the_same_training_records():
    from test_eval_offline import sim_recordings

    bags = sim_recordings()
    opts = DataOptions(input_size=(56, 70), rgb_input_size=(56, 98))
    loaded = {kind: load_bag(bags[kind], opts) for kind in ("raw", "raw_ros1", "compressed", "compressed_ros1")}
    reference, report = loaded["raw"]
    assert report.paired > 0 and len(reference) == report.paired
    for kind, (records, rep) in loaded.items():
        assert len(records) == len(reference) and rep.gt_source == report.gt_source == "depth", kind
        for a, b in zip(reference, records):
            np.testing.assert_array_equal(a.thermal, b.thermal)  # 16-bit PNG: lossless
            np.testing.assert_allclose(a.K_thermal, b.K_thermal)
            np.testing.assert_allclose(a.T_rgb_thermal, b.T_rgb_thermal, atol=1e-12)
            np.testing.assert_array_equal(a.gt_thermal, b.gt_thermal)
            tolerance = 0 if "compressed" not in kind else 0.03  # RGB as JPEG
            assert np.abs(a.rgb - b.rgb).mean() <= tolerance + 1e-7, kind


def test_ms2_training_source_refuses_a_malicious_calibration_without_running_it(tmp_path):
    import os

    class WritesMarker:
        def __reduce__(self):
            return os.system, (f"touch {tmp_path / 'PWNED'}",)

    _write_ms2(tmp_path)
    calib_file = next((tmp_path / "sync_data").glob("*/calib.npy"))
    array = np.empty((), dtype=object)
    array[()] = WritesMarker()
    np.save(calib_file, array, allow_pickle=True)
    with pytest.raises(ConfigError, match="refused global"):
        load_ms2(tmp_path, "train", options())
    assert not (tmp_path / "PWNED").exists()
