"""The shipped default model (engines/default) and the narrow confidence U-Net it was trained with.

* ``ConfidenceUNet(base_width=w)``: same keys as the official width 64, parameter count of the scaled
  structure, output shape and range (fast unit tests).
* Regression (slow, ~10 s): the shipped model loads (hash checked), and on a small held-out simulated
  bag (campus, night, seed 902 - never used in training; 0.3 s = 9 thermal frames, written here)
  ``monother eval``'s metrics and the confidence ranking stay within the figures of
  engines/default/MODEL_CARD.md ("Regression figures"). Tolerances: AbsRel and the AbsRel of the most
  confident half +0.01 absolute, delta1 -0.01 absolute, RMSE +5 % relative: the pipeline is seeded and
  deterministic, so only numerical noise of another CPU / ONNX Runtime build should move them.
"""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from monother_ros.model.confidence import ConfidenceUNet

REPO = Path(__file__).resolve().parent.parent
MODEL_DIR = REPO / "engines" / "default"

# Measured by scripts/train_default_model.sh regress (same bag, same code) - see the model card.
EXPECTED = {"abs_rel": 0.2373, "a1": 0.7028, "rmse": 9.0932, "abs_rel_most_confident_50": 0.0408}
SMALL_BAG = dict(seconds=0.3, seed=902, scenario="night", family="campus")


def _double_conv_params(cin: int, cout: int) -> int:
    return (cin * cout * 9 + cout) + 2 * cout + (cout * cout * 9 + cout) + 2 * cout


@pytest.mark.parametrize("w", [8, 16])
def test_narrow_confidence_unet_scales_every_level_and_keeps_the_keys(w):
    torch.manual_seed(0)
    narrow, official = ConfidenceUNet(base_width=w), ConfidenceUNet()
    assert list(narrow.state_dict()) == list(official.state_dict())
    widths = [(8, w), (w, 2 * w), (2 * w, 4 * w), (4 * w, 8 * w), (8 * w, 8 * w),
              (16 * w, 4 * w), (8 * w, 2 * w), (4 * w, w), (2 * w, w)]
    want = sum(_double_conv_params(i, o) for i, o in widths) + (w + 1)
    assert sum(p.numel() for p in narrow.parameters()) == want
    assert sum(p.numel() for p in official.parameters()) == 13_398_209
    out = narrow.eval()(torch.randn(2, 8, 37, 45))
    assert out.shape == (2, 1, 37, 45)
    assert float(out.min()) > 0.0 and float(out.max()) < 1.0


def test_confidence_unet_rejects_a_bad_width():
    with pytest.raises(ValueError):
        ConfidenceUNet(base_width=0)


def _confidence_tool():
    spec = importlib.util.spec_from_file_location("default_model_confidence", REPO / "scripts" / "default_model_confidence.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def test_confidence_ranking_numbers_on_a_known_case():
    tool = _confidence_tool()
    gt = torch.full((1000,), 10.0).numpy()
    pred = gt.copy()
    pred[:500] *= 1.5  # half the pixels 50 % off
    conf = (pred == gt).astype("float32")  # confident exactly where right
    rep = tool.confidence_report(pred, gt, conf, 0.5)
    assert rep["abs_rel_all"] == pytest.approx(0.25)
    assert rep["abs_rel_most_confident"] == pytest.approx(0.0)
    assert rep["abs_rel_least_confident"] == pytest.approx(0.5)
    assert rep["ause"] == pytest.approx(0.0, abs=1e-9)
    rep_bad = tool.confidence_report(pred, gt, 1.0 - conf, 0.5)  # inverted: keeps the wrong half
    assert rep_bad["abs_rel_most_confident"] == pytest.approx(0.5)


@pytest.mark.slow
def test_shipped_model_metrics_stay_within_the_model_card(tmp_path):
    from monother_ros.eval.evaluate import EvalOptions, ModelSpec, evaluate
    from monother_ros.model.checkpoints import read_model_dir
    from monother_ros.sim.bag import write_bag

    assert all(v is not None for v in EXPECTED.values()), "expected figures not filled in"
    for name in ("model.safetensors", "config.json", "metadata.json", "model.onnx", "MODEL_CARD.md"):
        assert (MODEL_DIR / name).is_file(), f"engines/default/{name} missing"
    _, config, meta = read_model_dir(MODEL_DIR)  # raises on a sha256 mismatch
    assert config.confidence_head and meta["train_stage"] == "label_free" and meta["distillation"] == "full"
    card = (MODEL_DIR / "MODEL_CARD.md").read_text()
    for key in ("abs_rel", "a1"):
        assert f"{EXPECTED[key]:.4f}" in card, f"card does not show the regression figure {key}"

    bag = tmp_path / "campus_night_s902"
    write_bag(bag, preview=False, **SMALL_BAG)  # type: ignore[arg-type]
    options = EvalOptions(pictures=False, boundary=False, progress=False, num_threads=1)
    evaluate([bag], [ModelSpec.parse(f"default={MODEL_DIR / 'model.onnx'}")], options, tmp_path / "eval")
    doc = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    (row,) = doc["results"]
    m = row["metrics"]
    assert row["frames_scored"] == 9
    assert m["abs_rel"] <= EXPECTED["abs_rel"] + 0.01
    assert m["a1"] >= EXPECTED["a1"] - 0.01
    assert m["rmse"] <= EXPECTED["rmse"] * 1.05

    tool = _confidence_tool()
    pred, gt, conf, frames = tool.pooled_pixels(bag, MODEL_DIR / "model.onnx")
    rep = tool.confidence_report(pred, gt, conf, 0.5)
    assert frames == 9
    assert rep["abs_rel_most_confident"] <= EXPECTED["abs_rel_most_confident_50"] + 0.01
    # The confidence ranks errors the right way round (the first shipped model's was inverted).
    assert rep["abs_rel_most_confident"] < 0.5 * rep["abs_rel_all"] and rep["spearman_conf_vs_error"] < -0.3


def test_shipped_model_fits_the_budget_and_carries_its_dual_for_adaptation():
    from monother_ros.adapt import load_dual
    from monother_ros.model.checkpoints import read_model_dir

    files = [p for p in MODEL_DIR.rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in files) < 30 * 1024 * 1024
    _, student_cfg, _ = read_model_dir(MODEL_DIR)
    tensors, _, meta = read_model_dir(MODEL_DIR / "dual")  # sha256 checked
    assert meta["kind"] == "monother_dual" and meta["dtype"] == "float16"
    assert all(t.dtype == torch.float16 for t in tensors.values() if t.is_floating_point())
    dual, cfg = load_dual(MODEL_DIR)
    assert cfg == student_cfg and dual.confidence_net is not None
    assert all(p.dtype == torch.float32 for p in dual.parameters())
    shipped, _, _ = read_model_dir(MODEL_DIR)
    for k, v in dual.student.state_dict().items():  # the adapted student starts from the shipped float32 one
        assert torch.equal(v, shipped[k]), k
