"""ZoeDepth metric-bins head: official key names, reference numerics on hand-made tensors, range,
an independent functional re-computation of the whole head, and ONNX export of a tiny student."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from monother_ros.errors import ConfigError
from monother_ros.model.zoe_bins import (
    REFERENCE_ATTRACTOR_ALPHA,
    AttractorLayer,
    ConditionalLogBinomial,
    LogBinomial,
    SeedBinRegressor,
    ZoeBinsHead,
    ZoeBinsSpec,
)

MIN_D, MAX_D = 1e-3, 80.0


def _spec(**kw) -> ZoeBinsSpec:
    base = dict(bottleneck_channels=16, decoder_channels=(16, 16, 16, 16), out_conv_channels=32,
                min_depth=MIN_D, max_depth=MAX_D)
    base.update(kw)
    return ZoeBinsSpec(**base)


def _intermediates(gen: torch.Generator, b: int = 2, f: int = 16, hw: tuple[int, int] = (28, 42),
                   scale: float = 1.0) -> dict[str, torch.Tensor]:
    h, w = hw[0] // 14, hw[1] // 14  # token grid as in the DPT
    r = lambda c, hh, ww: torch.randn(b, c, hh, ww, generator=gen) * scale  # noqa: E731
    return dict(out_conv=torch.rand(b, 32, *hw, generator=gen) * scale,
                l4_rn=r(f, (h + 1) // 2, (w + 1) // 2),
                r4=r(f, h, w), r3=r(f, 2 * h, 2 * w), r2=r(f, 4 * h, 4 * w), r1=r(f, 8 * h, 8 * w))


# ----------------------------------------------------------------------------- layout
def test_state_dict_keys_are_the_official_names():
    head = ZoeBinsHead(_spec())
    keys = set(head.state_dict())
    expected = {"conv2.weight", "conv2.bias"}
    for mod in ["seed_bin_regressor", "seed_projector"] + [f"projectors.{i}" for i in range(4)] + [
            f"attractors.{i}" for i in range(4)]:
        expected |= {f"{mod}._net.{j}.{p}" for j in (0, 2) for p in ("weight", "bias")}
    expected |= {f"conditional_log_binomial.mlp.{j}.{p}" for j in (0, 2) for p in ("weight", "bias")}
    expected |= {"conditional_log_binomial.log_binomial_transform.k_idx",
                 "conditional_log_binomial.log_binomial_transform.K_minus_1"}
    assert keys == expected
    sd = head.state_dict()
    # Reference widths: seed MLP 256, projector/attractor MLP 128, normed attractors 2 x n outputs,
    # log-binomial bottleneck (33 + 128) // 2 = 80 and 4 outputs.
    assert sd["seed_bin_regressor._net.0.weight"].shape == (256, 16, 1, 1)
    assert sd["seed_bin_regressor._net.2.weight"].shape == (64, 256, 1, 1)
    assert sd["projectors.0._net.2.weight"].shape == (128, 128, 1, 1)
    assert [sd[f"attractors.{i}._net.2.weight"].shape[0] for i in range(4)] == [32, 16, 8, 2]
    assert sd["conditional_log_binomial.mlp.0.weight"].shape == (80, 161, 1, 1)
    assert sd["conditional_log_binomial.mlp.2.weight"].shape == (4, 80, 1, 1)
    k_idx = sd["conditional_log_binomial.log_binomial_transform.k_idx"]
    assert k_idx.dtype == torch.int64 and k_idx.shape == (1, 64, 1, 1) and k_idx[0, -1, 0, 0] == 63
    assert sd["conditional_log_binomial.log_binomial_transform.K_minus_1"].item() == 63.0


def test_softplus_variant_has_single_channel_attractors():
    sd = ZoeBinsHead(_spec(bin_centers_type="softplus")).state_dict()
    assert [sd[f"attractors.{i}._net.2.weight"].shape[0] for i in range(4)] == [16, 8, 4, 1]


def test_spec_rejects_inconsistent_sizes():
    with pytest.raises(ConfigError):
        _spec(n_attractors=(16, 8))
    with pytest.raises(ConfigError):
        _spec(attractor_kind="max")


# ----------------------------------------------------------------------------- numerics
def _np_log_binomial(p: np.ndarray, t: np.ndarray, k_bins: int) -> np.ndarray:
    """Reference formula in float64: softmax_k((stirling log C(K-1,k) + k log p + (K-1-k) log(1-p)) / t)."""
    eps_b, eps_c = 1e-7, 1e-4
    n = (k_bins - 1) + eps_b
    out = []
    for k in range(k_bins):
        kk = k + eps_b
        log_c = n * math.log(n) - kk * math.log(kk) - (n - kk) * math.log(n - kk + eps_b)
        out.append(log_c + k * np.log(np.clip(p, eps_c, 1))
                   + (k_bins - 1 - k) * np.log(np.clip(1 - p, eps_c, 1)))
    y = np.stack(out, axis=1) / t[:, None]
    y = y - y.max(axis=1, keepdims=True)
    e = np.exp(y)
    return e / e.sum(axis=1, keepdims=True)


def test_log_binomial_equals_direct_formula():
    p = np.array([[[0.0, 1e-5, 0.2], [0.5, 0.93, 1.0]]], dtype=np.float64)  # (1, 2, 3), incl. clamps
    t = np.array([[[0.0212, 1.0, 7.0], [50.0, 0.3, 2.0]]], dtype=np.float64)
    got = LogBinomial(64)(torch.tensor(p, dtype=torch.float32), torch.tensor(t, dtype=torch.float32)[:, None])
    want = _np_log_binomial(p, t, 64)
    assert got.shape == (1, 64, 2, 3)
    np.testing.assert_allclose(got.numpy(), want, atol=2e-5)
    np.testing.assert_allclose(got.sum(1).numpy(), 1.0, atol=1e-5)


def test_log_binomial_mode_follows_p():
    # The Stirling log-binomial peaks at k ~ p (K - 1); a low temperature sharpens it to one bin.
    p = torch.tensor([0.1, 0.37, 0.8]).view(1, 3, 1)
    probs = LogBinomial(64)(p, torch.full((1, 1, 3, 1), 0.02))
    modes = probs[0, :, :, 0].argmax(0)
    assert torch.all((modes.float() - p.view(-1) * 63).abs() <= 1.0)
    # ... and concentrates the mass on the bins around the peak, unlike t = 1.
    assert torch.all(probs.topk(3, dim=1).values.sum(1) > 0.99)
    warm = LogBinomial(64)(p, torch.ones(1, 1, 3, 1))
    assert torch.all(warm.topk(3, dim=1).values.sum(1) < 0.5)


def test_conditional_log_binomial_p_and_t_from_mlp_outputs():
    clb = ConditionalLogBinomial(33, 128, 64, min_temp=0.0212, max_temp=50.0)
    # Replace the MLP by a fixed map so the pair normalisation can be checked by hand.
    raw = torch.tensor([0.3, 0.9, 2.0, 0.5]).view(1, 4, 1, 1)  # softplus outputs (p0, p1, t0, t1)
    clb.mlp = nn.Sequential(nn.Identity())
    got = clb(raw[:, :2], raw[:, 2:])
    p = (0.3 + 1e-4) / (0.3 + 1e-4 + 0.9 + 1e-4)
    tt = (2.0 + 1e-4) / (2.0 + 1e-4 + 0.5 + 1e-4)
    t = (50.0 - 0.0212) * tt + 0.0212
    want = _np_log_binomial(np.array([[[p]]]), np.array([[[t]]]), 64)
    np.testing.assert_allclose(got.numpy(), want, atol=2e-6)


def test_seed_bins_are_cumulative_width_midpoints():
    reg = SeedBinRegressor(4, 4, MIN_D, MAX_D)
    reg._net = nn.Identity()  # the "ReLU widths" are given directly
    widths = torch.tensor([0.0, 1.0, 3.0, 4.0]).view(1, 4, 1, 1)
    got = reg(widths).view(-1).numpy()
    w = np.array([0.0, 1.0, 3.0, 4.0]) + 1e-3
    w = (MAX_D - MIN_D) * w / w.sum()
    edges = MIN_D + np.concatenate([[0.0], np.cumsum(w)])
    np.testing.assert_allclose(got, 0.5 * (edges[:-1] + edges[1:]), rtol=1e-6)
    assert got[0] > MIN_D and got[-1] < MAX_D


def test_attractor_step_equals_inverse_attractor_formula_with_effective_alpha_300():
    n_attr, n_bins = 3, 5
    layer = AttractorLayer(2 * n_attr, n_attr, MIN_D, MAX_D, kind="mean", attractor_type="inv")
    layer._net = nn.Identity()  # its "ReLU output" is the hand-made input
    gen = torch.Generator().manual_seed(0)
    a_pairs = torch.rand(1, 2 * n_attr, 2, 3, generator=gen)
    b_prev = torch.rand(1, n_bins, 2, 3, generator=gen)  # normalised centres, same grid (no resize)
    new, metric = layer(a_pairs, b_prev)
    a = a_pairs.numpy()[0, 0::2] + 1e-3  # first channel of each pair (+ eps), normalisation unused
    c = b_prev.numpy()[0]
    dx = a[:, None] - c[None]  # (na, nbins, h, w)
    delta = (dx / (1 + REFERENCE_ATTRACTOR_ALPHA * dx ** 2)).mean(0)
    np.testing.assert_allclose(new.detach().numpy()[0], c + delta, rtol=1e-5, atol=1e-7)
    want_metric = np.clip(np.sort((MAX_D - MIN_D) * (c + delta) + MIN_D, axis=0), MIN_D, MAX_D)
    np.testing.assert_allclose(metric.detach().numpy()[0], want_metric, rtol=1e-5)
    # The configured alpha (1000) would give a visibly different step: the quirk matters.
    delta_1000 = (dx / (1 + 1000.0 * dx ** 2)).mean(0)
    assert np.abs(delta_1000 - delta).max() > 1e-3


def test_unbounded_attractor_step_has_no_sort_or_clip():
    layer = AttractorLayer(2, 2, MIN_D, MAX_D, kind="sum", attractor_type="exp", normed=False)
    layer._net = nn.Identity()  # attractor positions given directly (the Softplus output)
    a = torch.tensor([0.5, 3.0]).view(1, 2, 1, 1)
    c = torch.tensor([4.0, 0.1, 2.9]).view(1, 3, 1, 1)  # unsorted, unbounded centres
    new, metric = layer(a, c)
    dx = a.view(2, 1) - c.view(1, 3)
    want = c.view(3) + (torch.exp(-REFERENCE_ATTRACTOR_ALPHA * dx.abs() ** 2) * dx).sum(0)
    torch.testing.assert_close(new.view(3), want)
    assert new is metric  # the same tensor is both outputs, unsorted


# ----------------------------------------------------------------------------- whole head
def _functional_head(sd: dict[str, torch.Tensor], rel: torch.Tensor, dpt: dict[str, torch.Tensor],
                     n_attractors=(16, 8, 4, 1), lo: float = MIN_D, hi: float = MAX_D) -> torch.Tensor:
    """Independent re-statement of the reference forward, from the state dict with functional ops."""
    def conv(x, name):
        return F.conv2d(x, sd[name + ".weight"], sd[name + ".bias"])

    def mlp(x, name, last=None):
        y = conv(F.relu(conv(x, name + "._net.0")), name + "._net.2")
        return last(y) if last else y

    def up(x, size):
        return F.interpolate(x, size=size, mode="bilinear", align_corners=True)

    x = conv(dpt["l4_rn"], "conv2")
    wid = mlp(x, "seed_bin_regressor", F.relu) + 1e-3
    wid = (hi - lo) * wid / wid.sum(1, keepdim=True)
    edges = torch.cat([torch.full_like(wid[:, :1], lo), wid], 1).cumsum(1)
    b_prev = (0.5 * (edges[:, 1:] + edges[:, :-1]) - lo) / (hi - lo)
    prev_emb = mlp(x, "seed_projector")
    for i, name in enumerate(("r4", "r3", "r2", "r1")):
        emb = mlp(dpt[name], f"projectors.{i}")
        a = mlp(emb + up(prev_emb, emb.shape[-2:]), f"attractors.{i}", F.relu) + 1e-3
        a = a[:, 0::2]  # first of each (position, partner) pair
        c = up(b_prev, emb.shape[-2:])
        dx = a[:, :, None] - c[:, None]
        b_prev = c + (dx / (1 + 300.0 * dx * dx)).mean(1)
        centres = ((hi - lo) * b_prev + lo).sort(1).values.clamp(lo, hi)
        prev_emb = emb
    size = dpt["out_conv"].shape[-2:]
    feats = torch.cat([dpt["out_conv"], up(rel, size), up(emb, size)], 1)
    h = F.gelu(conv(feats, "conditional_log_binomial.mlp.0"))
    pt = F.softplus(conv(h, "conditional_log_binomial.mlp.2")) + 1e-4
    p = (pt[:, 0] / (pt[:, 0] + pt[:, 1]))[:, None]
    t = (50.0 - 0.0212) * (pt[:, 2] / (pt[:, 2] + pt[:, 3]))[:, None] + 0.0212
    k = torch.arange(64, dtype=torch.float64).view(1, -1, 1, 1)
    n, kk = 63 + 1e-7, k + 1e-7
    log_c = n * math.log(n) - kk * torch.log(kk) - (n - kk) * torch.log(n - kk + 1e-7)
    p64, t64 = p.double(), t.double()
    logits = log_c + k * torch.log(p64.clamp(1e-4, 1)) + (63 - k) * torch.log((1 - p64).clamp(1e-4, 1))
    probs = torch.softmax(logits / t64, 1)
    return (probs * up(centres, size).double()).sum(1, keepdim=True).float()


def test_head_equals_functional_recomputation_and_stays_in_range():
    torch.manual_seed(0)
    head = ZoeBinsHead(_spec()).eval()
    gen = torch.Generator().manual_seed(1)
    dpt = _intermediates(gen)
    rel = torch.rand(2, 1, 28, 42, generator=gen) * 5
    with torch.no_grad():
        depth, emb = head(rel, dpt)
        want = _functional_head(head.state_dict(), rel, dpt)
    assert depth.shape == (2, 1, 28, 42) and emb.shape == (2, 128, 28, 42)
    torch.testing.assert_close(depth, want, rtol=1e-4, atol=1e-4)
    assert float(depth.min()) >= MIN_D and float(depth.max()) <= MAX_D
    assert float(depth.std()) > 0  # not a constant map


def test_head_range_under_extreme_inputs():
    torch.manual_seed(3)
    head = ZoeBinsHead(_spec()).eval()
    gen = torch.Generator().manual_seed(4)
    with torch.no_grad():
        depth, _ = head(torch.rand(2, 1, 28, 42, generator=gen) * 1e3, _intermediates(gen, scale=1e3))
    assert torch.isfinite(depth).all()
    assert float(depth.min()) >= MIN_D - 1e-6 and float(depth.max()) <= MAX_D + 1e-4


def test_head_from_model_config_in_a_branch():
    from monother_ros.model.branch import DepthBranch
    from monother_ros.model.variants import get_preset

    cfg = get_preset("test-tiny").replace(head="zoe_bins", confidence_head=False)
    branch = DepthBranch(cfg).eval()
    assert isinstance(branch.bins_head, ZoeBinsHead)
    assert branch.bins_head.spec.out_conv_channels == cfg.head_features_2
    with torch.no_grad():
        out = branch(torch.randn(1, 3, 56, 70))
    assert out.depth.shape == (1, 1, 56, 70)
    assert out.similarity_features.shape == (1, cfg.head_features_2 + 1 + 128, 56, 70)
    assert float(out.depth.min()) >= cfg.min_depth_m and float(out.depth.max()) <= cfg.max_depth_m


@pytest.mark.slow
def test_onnx_export_of_tiny_zoe_student_matches_onnxruntime(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    from monother_ros.model.branch import DepthBranch, ExportableBranch
    from monother_ros.model.variants import get_preset

    torch.manual_seed(0)
    cfg = get_preset("test-tiny").replace(head="zoe_bins", confidence_head=False)
    model = ExportableBranch(DepthBranch(cfg).eval()).eval()
    x = torch.randn(1, 3, 56, 70)
    path = tmp_path / "zoe.onnx"
    torch.onnx.export(model, (x,), str(path), input_names=["image"], output_names=["depth"], opset_version=18)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
    with torch.no_grad():
        want = model(x)[0].numpy()
    assert got.shape == want.shape
    rel = np.abs(got - want).max() / np.abs(want).max()
    assert rel < 1e-4, rel
