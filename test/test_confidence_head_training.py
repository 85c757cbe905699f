"""The student confidence head learns to rank errors when trained with its NLL (regression guard).

Starting the head at sigmoid(0) = 0.5 let the first NLL updates kill its hidden units and left it
ranking errors backwards on the shipped model's training data; it now starts at the NLL optimum for a
1 m residual (``INITIAL_CONFIDENCE``).
"""
from __future__ import annotations

import numpy as np
import torch

from monother_ros.distill.losses import confidence_nll_loss
from monother_ros.model.heads import INITIAL_CONFIDENCE, ConfidenceHead


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    ra = np.argsort(np.argsort(a)).astype(np.float64)
    rb = np.argsort(np.argsort(b)).astype(np.float64)
    ra -= ra.mean()
    rb -= rb.mean()
    return float((ra * rb).sum() / np.sqrt((ra * ra).sum() * (rb * rb).sum()))


def _scene(seed: int):
    """Depth-like inputs whose metric residual grows with depth (as a depth network's does)."""
    g = torch.Generator().manual_seed(seed)
    depth = 1.0 + 59.0 * torch.rand(4, 1, 24, 32, generator=g) ** 2  # 1..60 m
    feats = torch.cat([torch.randn(4, 15, 24, 32, generator=g), (depth / 80.0).log()], dim=1)
    residual = (0.02 + 0.004 * depth**1.5) * (0.5 + torch.rand(depth.shape, generator=g))
    pred = depth + residual * torch.where(torch.rand(depth.shape, generator=g) > 0.5, 1.0, -1.0)
    return feats, depth, pred, residual


def _train(head: ConfidenceHead, steps: int = 300):
    feats, depth, pred, residual = _scene(0)
    opt = torch.optim.AdamW(head.parameters(), lr=1e-3, weight_decay=0.01)
    with torch.enable_grad():
        for _ in range(steps):
            conf = head(feats, depth / 80.0)
            loss = confidence_nll_loss(conf, pred, depth)
            opt.zero_grad()
            loss.backward()
            opt.step()
    with torch.no_grad():
        conf = head(feats, depth / 80.0)
    return conf, residual, confidence_nll_loss(conf, pred, depth).item()


def test_head_starts_at_the_nll_optimum_of_a_one_metre_residual():
    head = ConfidenceHead(16, 8)
    out = head(torch.randn(1, 16, 5, 6), torch.rand(1, 1, 5, 6))
    assert torch.allclose(out, torch.full_like(out, INITIAL_CONFIDENCE), rtol=1e-4)


def test_trained_head_ranks_errors_and_beats_a_constant_confidence():
    torch.manual_seed(0)
    head = ConfidenceHead(16, 16)
    conf, residual, loss = _train(head)
    rho = _spearman(conf.flatten().numpy(), residual.flatten().numpy())
    assert rho < -0.6, rho  # confident where the residual is small
    _, depth, pred, _ = _scene(0)
    best_constant = min(confidence_nll_loss(torch.full_like(depth, c), pred, depth).item()
                        for c in (1e-4, 3e-4, 1e-3, 3e-3, 1e-2))
    assert loss < best_constant
