"""The RGB-teacher pair engine without ROS: same outputs as the teacher path had inside the depth node
(reference arrays in ``test/data/pair_engine_reference.npz``, written by that code for the tiny dual model
of ``tiny_models.py``), student swaps sharing the teacher, bad folders refused; the fusion math by hand."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tiny_models import tiny_dual_dir, tiny_student_dir

REFERENCE = Path(__file__).parent / "data" / "pair_engine_reference.npz"
H, W = 48, 64


def _cameras():
    from monother_ros.core.camera import PinholeCamera

    thermal = PinholeCamera(W, H, 50.0, 52.0, W / 2 - 0.5, H / 2 + 0.5)
    rgb = PinholeCamera(80, 60, 60.0, 60.0, 39.5, 29.5)
    T = np.eye(4)
    T[0, 3] = -0.05
    return thermal, rgb, T


def test_fuse_formula_by_hand():
    from monother_ros.core.fusion import fuse

    nan = np.nan
    d_s = np.array([[10.0, 10.0, nan, 4.0]], np.float32)
    c_s = np.array([[0.5, 0.2, 0.0, 0.0]], np.float32)
    d_t = np.array([[20.0, nan, 8.0, nan]], np.float32)
    c_t = np.array([[0.5, 0.9, 0.6, 0.0]], np.float32)
    depth, conf = fuse(d_s, c_s, d_t, c_t)
    # pixel 0: equal weights -> mean; conf (0.25 + 0.25) / 1 = 0.5
    # pixel 1: teacher invalid -> student only; conf = c_s
    # pixel 2: student invalid -> teacher; conf = c_t
    # pixel 3: no weight at all -> student depth kept, confidence 0
    np.testing.assert_allclose(depth, [[15.0, 10.0, 8.0, 4.0]], rtol=1e-6)
    np.testing.assert_allclose(conf, [[0.5, 0.2, 0.6, 0.0]], rtol=1e-6)
    d2, c2 = fuse(d_s[:, :1], np.float32([[0.25]]), d_t[:, :1], np.float32([[0.75]]))
    assert d2[0, 0] == pytest.approx((0.25 * 10 + 0.75 * 20) / 1.0)
    assert c2[0, 0] == pytest.approx(0.25**2 + 0.75**2)
    assert depth.dtype == np.float32 and conf.dtype == np.float32


def test_pair_engine_equals_the_previous_teacher_path():
    from monother_ros.core.fusion import fuse
    from monother_ros.runtime.pair_engine import PairEngine

    ref = np.load(REFERENCE)
    cam_t, cam_r, T = _cameras()
    engine = PairEngine.from_model_dir(tiny_dual_dir(), num_threads=1)
    assert engine.device.type == "cpu" and engine.precision == "fp32"
    res = engine.infer_pair(ref["thermal"], ref["rgb"], cam_t, cam_r, T)
    for name in ("student_depth", "student_confidence", "teacher_depth", "teacher_confidence"):
        got = getattr(res, name)
        assert got.shape == (H, W) and got.dtype == np.float32, name
        np.testing.assert_allclose(got, ref[name], rtol=1e-5, atol=1e-6, equal_nan=True, err_msg=name)
    depth, conf = fuse(res.student_depth, res.student_confidence, res.teacher_depth, res.teacher_confidence)
    np.testing.assert_allclose(depth, ref["fused_depth"], rtol=1e-5, equal_nan=True)
    np.testing.assert_allclose(conf, ref["fused_confidence"], rtol=1e-5, atol=1e-7)
    assert set(res.timings) == {"student_ms", "teacher_ms", "warp_ms", "total_ms"}
    # Thermal-only frames: the student engine alone, equal to the pair's student output.
    alone = engine.infer(ref["thermal"])
    np.testing.assert_allclose(alone.depth, ref["student_depth"], rtol=1e-5, equal_nan=True)
    engine.close()


def test_with_student_shares_the_teacher_and_uses_the_new_weights(tmp_path):
    import torch

    from monother_ros.errors import ConfigError
    from monother_ros.model.branch import DepthBranch
    from monother_ros.model.checkpoints import load_model, save_model
    from monother_ros.model.variants import get_preset
    from monother_ros.runtime.pair_engine import PairEngine

    ref = np.load(REFERENCE)
    cam_t, cam_r, T = _cameras()
    engine = PairEngine.from_model_dir(tiny_dual_dir(), num_threads=1)
    dual, config = load_model(tiny_dual_dir())
    student = dual.student
    with torch.no_grad():
        for p in student.parameters():
            p.mul_(1.05)
    adapted = save_model(student, config, tmp_path / "adapt-000001")
    swapped = engine.with_student(adapted)
    assert swapped.teacher is engine.teacher and swapped.confidence_net is engine.confidence_net
    assert swapped.info.model_hash != engine.info.model_hash
    before = engine.infer_pair(ref["thermal"], ref["rgb"], cam_t, cam_r, T)
    after = swapped.infer_pair(ref["thermal"], ref["rgb"], cam_t, cam_r, T)
    np.testing.assert_allclose(before.student_depth, ref["student_depth"], rtol=1e-5, equal_nan=True)  # untouched
    assert not np.allclose(np.nan_to_num(after.student_depth), np.nan_to_num(before.student_depth))
    # A student of another configuration cannot feed this teacher's metadata.
    other = get_preset("test-tiny").replace(name="other", features=16)
    wrong = save_model(DepthBranch(other).eval(), other, tmp_path / "other")
    with pytest.raises(ConfigError, match="differs from the running"):
        engine.with_student(wrong)


def test_student_folder_carrying_its_dual_uses_its_own_student(tmp_path):
    """engines/default layout: student at the top, teacher + confidence net in ``dual/``; the student
    weights used are the folder's own (not the dual's copy)."""
    import shutil

    import torch

    from monother_ros.errors import ConfigError
    from monother_ros.model.checkpoints import load_model, save_model
    from monother_ros.runtime.pair_engine import PairEngine

    dual, config = load_model(tiny_dual_dir())
    student = dual.student
    with torch.no_grad():
        for p in student.parameters():
            p.add_(0.01)  # differs from the dual's copy
    folder = save_model(student, config, tmp_path / "shipped")
    with pytest.raises(ConfigError, match="no .*/dual"):
        PairEngine.from_model_dir(folder)
    with pytest.raises(ConfigError, match="not an ONNX file"):
        PairEngine.from_model_dir(tiny_student_dir() / "model.onnx")
    shutil.copytree(tiny_dual_dir(), folder / "dual")
    engine = PairEngine.from_model_dir(folder)
    assert engine.confidence_net is not None
    for k, v in engine.student.model.state_dict().items():
        assert torch.equal(v, student.state_dict()[k]), k


@pytest.mark.gpu
def test_pair_engine_on_cuda_matches_the_cpu():
    import torch

    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU")
    from monother_ros.runtime.pair_engine import PairEngine

    ref = np.load(REFERENCE)
    cam_t, cam_r, T = _cameras()
    for precision, tol in (("fp32", 2e-3), ("fp16", 3e-2)):
        engine = PairEngine.from_model_dir(tiny_dual_dir(), device="cuda", precision=precision)
        assert engine.device.type == "cuda" and engine.precision == precision
        res = engine.infer_pair(ref["thermal"], ref["rgb"], cam_t, cam_r, T)
        for name in ("student_depth", "teacher_depth", "teacher_confidence"):
            np.testing.assert_allclose(getattr(res, name), ref[name], rtol=tol, atol=tol, equal_nan=True,
                                       err_msg=f"{precision} {name}")
        engine.close()
