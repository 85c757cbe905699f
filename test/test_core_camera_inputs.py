"""Pure parts of the camera inputs: calibration files, thermal formats and crop, and the blind-frame check (including real simulated frames, which must never be flagged)."""
from __future__ import annotations

import io

import numpy as np
import pytest

from monother_ros.core.calibration_file import calibration_path, parse_calibration, read_calibration
from monother_ros.core.frame_health import FrameHealthChecker, FrameHealthConfig
from monother_ros.core.image_codec import ImageDecodeError
from monother_ros.core.thermal_format import Crop, crop_frame, crop_intrinsics, thermal_intensities
from monother_ros.errors import CalibrationError

RNG = np.random.default_rng(7)
THERMAL16 = (7000 + 40 * np.arange(48)[:, None] + RNG.integers(0, 900, (48, 64))).astype(np.uint16)
_YY, _XX = np.mgrid[0:30, 0:40]
RGB = np.stack([_XX * 6, _YY * 8, 60 + 0 * _XX], axis=2).astype(np.uint8)  # smooth: JPEG keeps it close


def _pil_bytes(array, fmt, **kw) -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.fromarray(array).save(out, format=fmt, **kw)
    return out.getvalue()


# ------------------------------------------------------------------------------------------ calibration

CALIBRATION = """image_width: 640
image_height: 514
camera_name: boson
camera_matrix:
  rows: 3
  cols: 3
  data: [500.0, 0.0, 319.5, 0.0, 502.0, 256.0, 0.0, 0.0, 1.0]
distortion_model: plumb_bob
distortion_coefficients:
  rows: 1
  cols: 5
  data: [-0.3, 0.1, 0.0, 0.0, 0.0]
rectification_matrix:
  rows: 3
  cols: 3
  data: [1, 0, 0, 0, 1, 0, 0, 0, 1]
projection_matrix:
  rows: 3
  cols: 4
  data: [480.0, 0.0, 318.0, 0.0, 0.0, 490.0, 255.0, 0.0, 0.0, 0.0, 1.0, 0.0]
"""


def test_camera_calibration_yaml_is_read_from_file_urls_and_paths(tmp_path):
    path = tmp_path / "boson calib.yaml"
    path.write_text(CALIBRATION)
    for url in (str(path), path.as_uri(), f"file://{path}"):
        cal = read_calibration(url)
        assert (cal.width, cal.height, cal.camera_name, cal.distortion_model) == (640, 514, "boson", "plumb_bob")
        assert cal.K[0] == 500.0 and cal.K[5] == 256.0 and cal.D == (-0.3, 0.1, 0.0, 0.0, 0.0) and cal.P[0] == 480.0
    minimal = parse_calibration("image_width: 4\nimage_height: 3\ncamera_matrix: {rows: 3, cols: 3, data: "
                                "[2, 0, 1.5, 0, 2, 1, 0, 0, 1]}\n")
    assert minimal.D == () and minimal.R[0] == 1.0 and minimal.P == (2, 0, 1.5, 0, 0, 2, 1, 0, 0, 0, 1, 0)


def test_missing_or_malformed_calibration_files_raise_calibration_errors(tmp_path):
    bad = {
        "missing": None,
        "not yaml": "image_width: [unclosed",
        "a list": "- 1\n- 2\n",
        "no width": CALIBRATION.replace("image_width: 640\n", ""),
        "short K": CALIBRATION.replace("data: [500.0, 0.0, 319.5, 0.0, 502.0, 256.0, 0.0, 0.0, 1.0]", "data: [500.0]"),
        "nan K": CALIBRATION.replace("319.5", ".nan"),
        "text K": CALIBRATION.replace("319.5", "abc"),
        "python tag": CALIBRATION + "evil: !!python/object/apply:os.system ['touch x']\n",
    }
    expected = {"missing": "does not exist", "not yaml": "not valid YAML", "a list": "not a YAML mapping",
                "no width": "image_width", "short K": "camera_matrix must be 3x3", "nan K": "not a finite number",
                "text K": "not a finite number", "python tag": "not valid YAML"}
    for name, text in bad.items():
        path = tmp_path / f"{name.replace(' ', '_')}.yaml"
        if text is not None:
            path.write_text(text)
        with pytest.raises(CalibrationError, match=expected[name]):
            read_calibration(path.as_uri())
    assert not (tmp_path / "x").exists()
    with pytest.raises(CalibrationError, match="only file://"):
        calibration_path("package://my_driver/calib/boson.yaml")


# ------------------------------------------------------------------------------------- thermal formats


def test_grey_sent_as_colour_is_accepted_and_colour_mapped_is_refused_with_the_driver_setting():
    grey = (THERMAL16 >> 8).astype(np.uint8)
    as_colour = np.repeat(grey[..., None], 3, axis=2)
    assert np.array_equal(thermal_intensities(as_colour, "rgb8"), grey)
    assert np.array_equal(thermal_intensities(as_colour, "bgr8"), grey)
    assert thermal_intensities(THERMAL16, "mono16") is THERMAL16
    palette = np.stack([grey, 255 - grey, grey // 2], axis=2)
    with pytest.raises(ImageDecodeError, match="colour-mapped.*Y16") as info:
        thermal_intensities(palette, "rgb8")
    assert info.value.reason == "colour_mapped"
    with pytest.raises(ImageDecodeError) as info:
        thermal_intensities(np.zeros((4, 4, 4), np.uint8), "rgba8")
    assert info.value.reason == "bad_encoding"


def test_crop_drops_rows_and_moves_the_principal_point():
    boson = np.arange(514 * 640, dtype=np.uint32).reshape(514, 640).astype(np.uint16)
    crop = Crop.from_list([0, 2, 0, 0])
    out = crop_frame(boson, crop)
    assert out.shape == (512, 640) and np.array_equal(out, boson[:512])
    crop = Crop.from_list([3, 1, 5, 2])
    assert crop_frame(boson, crop).shape == (510, 633) and crop_frame(boson, crop)[0, 0] == boson[3, 5]
    K = [500.0, 0.0, 319.5, 0.0, 502.0, 256.0, 0.0, 0.0, 1.0]
    P = [480.0, 0.0, 318.0, -24.0, 0.0, 490.0, 255.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    k, p = crop_intrinsics(K, P, crop)
    assert k == [500.0, 0.0, 314.5, 0.0, 502.0, 253.0, 0.0, 0.0, 1.0]
    assert p == [480.0, 0.0, 313.0, -24.0, 0.0, 490.0, 252.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    # a point keeps its pixel: projected with the new K it lands where the old K put it, shifted by the crop
    X = np.array([0.3, -0.2, 2.0])
    u_old = K[0] * X[0] / X[2] + K[2]
    assert k[0] * X[0] / X[2] + k[2] == pytest.approx(u_old - 5)
    with pytest.raises(ImageDecodeError, match="leaves less than"):
        crop_frame(boson, Crop(300, 300, 0, 0))
    for bad in ([0, 2, 0], [0, -1, 0, 0], [0.5, 0, 0, 0]):
        with pytest.raises(ValueError):
            Crop.from_list(bad)


# ------------------------------------------------------------------------------------------ frame health


def test_blind_saturated_and_frozen_frames_are_flagged_and_the_next_good_frame_passes():
    checker = FrameHealthChecker()
    rng = np.random.default_rng(0)
    shutter = (8000 + rng.normal(0, 3, (512, 640))).astype(np.uint16)  # closed shutter: noise only
    hot_pixel = np.zeros((512, 640), np.uint16)
    hot_pixel[100, 100] = 65535
    saturated = np.full((512, 640), 65535, np.uint16)
    saturated[:100] = 9000 + rng.integers(0, 500, (100, 640)).astype(np.uint16)
    cases = [(shutter, "low_contrast"), (np.zeros((512, 640), np.uint16), "saturated"), (hot_pixel, "saturated"),
             (np.full((512, 640), 30000, np.uint16), "low_contrast"), (saturated, "saturated"),
             (np.full((60, 80), 128, np.uint8), "low_contrast")]
    for frame, reason in cases:
        verdict = checker.check(frame)
        assert verdict is not None and verdict.reason == reason, (reason, verdict)
    scene = (8000 + rng.integers(0, 2000, (512, 640))).astype(np.uint16)
    assert checker.check(scene) is None
    # the same frame over and over: frozen after max_identical_frames repeats, recovered by a new frame
    verdicts = [checker.check(scene) for _ in range(12)]
    assert verdicts[:9] == [None] * 9 and all(v is not None and v.reason == "frozen" for v in verdicts[9:])
    assert checker.check(scene + 1) is None
    # a hot pixel on an otherwise uniform 8-bit frame, and thresholds switched off
    off = FrameHealthChecker(FrameHealthConfig(min_spread_16bit=0, min_spread_8bit=0, max_saturated_fraction=0.0,
                                               max_identical_frames=0))
    assert all(off.check(frame) is None for frame, _ in cases)
    with pytest.raises(ValueError):
        checker.check(np.zeros((4, 4), np.float32))


@pytest.mark.parametrize("scenario", ["day", "night", "fog"])
def test_simulated_frames_are_never_flagged(scenario):
    from monother_ros.sim.rig import SimRig

    for family in ("urban", "campus"):
        for seed in (0, 3, 11):
            rig = SimRig(seed, scenario, family)
            camera = rig.thermal_camera.resized(160, 128, align_corners=False)
            checker = FrameHealthChecker()
            for t in (0.0, 1.0 / 30, 2.0, 7.5):
                counts = rig.render_thermal(t, camera).counts
                assert checker.check(counts) is None, (scenario, family, seed, t, checker.check(counts))
                grey8 = (np.clip((counts.astype(np.float32) - counts.min()) / max(1, np.ptp(counts)), 0, 1)
                         * 255).astype(np.uint8)  # as an AGC'd 8-bit driver would send it
                assert FrameHealthChecker().check(grey8) is None
