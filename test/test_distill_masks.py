"""Top-k masks keep the fractions they promise, per image, with ties handled."""
from __future__ import annotations

import torch

from monother_ros.distill.masks import (
    consistency_mask,
    exclude_top_fraction,
    keep_top_fraction,
    top_fraction_threshold,
)


def _perm_image(seed: int, h: int = 10, w: int = 10, scale: float = 1.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.randperm(h * w, generator=g).float() * scale).view(1, 1, h, w)


def test_exact_counts_with_stride_one():
    x = torch.cat([_perm_image(0), _perm_image(1, scale=1000.0)])  # two images, different scales
    n = 100
    excl = exclude_top_fraction(x, 0.2, stride=1)
    keep = keep_top_fraction(x, 0.8, stride=1)
    for i in range(2):
        # Reference index arithmetic: int((1 - 0.2) * 100) = 80 -> values 0..80 kept (81);
        # int((1 - 0.8) * 100) = int(19.999999999999996) = 19 -> values 20..99 kept (80).
        assert int(excl[i].sum()) == int((1 - 0.2) * n) + 1 == 81
        assert int(keep[i].sum()) == n - int((1 - 0.8) * n) - 1 == 80
        # The kept values are the smallest / largest ones of that image.
        assert float(x[i][excl[i]].max()) < float(x[i][~excl[i]].min())
        assert float(x[i][keep[i]].min()) > float(x[i][~keep[i]].max())
    assert excl.dtype == torch.bool and excl.shape == x.shape


def test_ties_at_threshold():
    x = torch.zeros(1, 1, 10, 10)
    x[..., :5, :] = 1.0  # half ones, half zeros
    # threshold index 80 of sorted values -> 1.0: everything <= 1 kept, nothing > 1
    assert bool(exclude_top_fraction(x, 0.2, stride=1).all())
    # keep top 80 %: threshold = sorted[19] = 0 -> only the ones (50 %) are strictly greater
    assert int(keep_top_fraction(x, 0.8, stride=1).sum()) == 50
    const = torch.full((1, 1, 4, 4), 3.0)
    assert bool(exclude_top_fraction(const, 0.2, stride=1).all())
    assert not bool(keep_top_fraction(const, 0.8, stride=1).any())


def test_reference_stride_subsamples_but_masks_full_image():
    g = torch.Generator().manual_seed(2)
    x = torch.rand(2, 1, 240, 300, generator=g)
    thr = top_fraction_threshold(x, 0.2)  # stride 10 -> 24 x 30 samples
    sub = x[:, :, ::10, ::10].reshape(2, -1).sort(dim=1).values[:, int(0.8 * 720)]
    torch.testing.assert_close(thr.view(2), sub)
    frac = exclude_top_fraction(x, 0.2).float().mean(dim=(1, 2, 3))
    # Sample quantile of 720 values: close to (std ~0.015), not exactly, the promise.
    assert bool(((frac - 0.8).abs() < 0.06).all())
    frac_keep = keep_top_fraction(x, 0.8).float().mean(dim=(1, 2, 3))
    assert bool(((frac_keep - 0.8).abs() < 0.06).all())


def test_nan_is_never_kept():
    x = _perm_image(3)
    x[0, 0, 0, 0] = float("nan")
    assert not bool(exclude_top_fraction(x, 0.2, stride=1)[0, 0, 0, 0])
    assert not bool(keep_top_fraction(x, 0.8, stride=1)[0, 0, 0, 0])


def test_consistency_mask_conditions():
    diff = _perm_image(4) / 10.0  # 0 .. 9.9
    s_b = _perm_image(5) / 100.0 + 0.001  # 0.001 .. 0.991
    depth_ok = torch.ones_like(diff, dtype=torch.bool)
    depth_ok[..., 0, :] = False
    conf = torch.full_like(diff, 0.5)
    conf[..., 1, :] = 1e-4
    m = consistency_mask(diff, s_b, depth_ok, conf, stride=1)
    expected = (
        (diff > 1e-2) & depth_ok & keep_top_fraction(s_b, 0.8, stride=1) & (s_b > 1e-2) & (conf > 1e-3)
        & exclude_top_fraction(diff, 0.2, stride=1)
    )
    assert torch.equal(m, expected)
    assert not bool(m[..., 0, :].any()) and not bool(m[..., 1, :].any())
    # Without confidence (ablation) the confidence row comes back.
    m_noconf = consistency_mask(diff, s_b, depth_ok, None, stride=1)
    assert int(m_noconf.sum()) > int(m.sum())
