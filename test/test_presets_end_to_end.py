"""Every named preset, end to end: build at small widths in its layout, import a random checkpoint written
in the official key layout, save in our format, export to ONNX and run in the ONNX Runtime backend.

Widths and depths are shrunk for speed; the head kind, generation (v1 taps / v2 taps), confidence head
and normalisation of each preset are kept, so each preset's key layout and graph are exercised.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from monother_ros.model import checkpoints as ck
from monother_ros.model.branch import DepthBranch
from monother_ros.model.variants import PRESETS, ModelConfig
from monother_ros.runtime.engine import make_backend
from test_model_branch import layout_for
from test_model_import_monother import _official_branch_keys

SMALL_HW = (42, 56)


def _small(cfg: ModelConfig) -> ModelConfig:
    """Same layout family, small widths: 4 blocks tapped (v1: the last 4; v2: spread like the official)."""
    return cfg.replace(embed_dim=32, num_heads=2, depth=4, taps=(0, 1, 2, 3), features=16,
                       out_channels=(8, 16, 32, 32), input_size=SMALL_HW)


def _official_file(cfg: ModelConfig, path) -> dict[str, torch.Tensor]:
    """Write a random checkpoint in the official layout of ``cfg`` (MonoTher dual file for zoe_bins)."""
    g = torch.Generator().manual_seed(0)
    if cfg.head == "zoe_bins":
        torch.manual_seed(0)
        branch = DepthBranch(cfg)
        with torch.no_grad():
            for p in branch.parameters():
                p.add_(torch.randn(p.shape, generator=g) * 0.01)
        sd = _official_branch_keys(branch.state_dict(), extra=False)
        torch.save({"model": {"module." + k: v for k, v in sd.items()}, "optimizer": None, "epoch": 1}, path)
        return branch.state_dict()
    sd = {k: torch.randn(shape, generator=g) * 0.1 for k, shape in layout_for(cfg).items()}
    torch.save(sd, path)
    return sd


@pytest.mark.slow
@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_preset_imports_exports_and_runs_in_onnxruntime(preset, tmp_path):
    cfg = _small(PRESETS[preset])
    source = _official_file(cfg, tmp_path / "official.pth")
    model, imported_cfg = ck.import_checkpoint(tmp_path / "official.pth", cfg)
    assert imported_cfg == cfg
    got = model.state_dict()
    for k, v in source.items():  # the imported weights are the file's weights
        assert torch.equal(got[k], v), k

    model_dir = tmp_path / "model"
    ck.save_model(model, cfg, model_dir)
    thermal = np.random.default_rng(1).integers(20000, 40000, (61, 83), dtype=np.uint16)
    ort = make_backend(model_dir, "onnxruntime", cache_dir=tmp_path / "cache", num_threads=1)
    eager = make_backend(model_dir, "torch", num_threads=1)
    try:
        a, b = ort.infer(thermal), eager.infer(thermal)
    finally:
        ort.close()
        eager.close()
    assert a.depth.shape == thermal.shape and ort.info.backend == "onnxruntime"
    finite = np.isfinite(b.depth)
    # Random weights: metric heads predict in range almost everywhere; relative heads end in a ReLU, so
    # many pixels are exactly 0 and masked as out of range.
    assert finite.mean() > 0.1
    np.testing.assert_array_equal(np.isfinite(a.depth), finite)
    np.testing.assert_allclose(a.depth[finite], b.depth[finite], rtol=1e-4, atol=1e-5)
    assert (a.confidence is not None) == cfg.confidence_head
