"""Per-image top-k masks, as MonoTher-Depth builds them (reference ``get_mask_exlude_top20``).

For each image of the batch separately: take every ``stride``-th pixel in both directions
(``x[:, :, ::stride, ::stride]``, stride 10 in the reference, which keeps the sort cheap), sort those
n samples ascending and read the threshold at index ``int((1 - top_fraction) * n)`` (Python float
arithmetic, as the reference). Then, on the full image:

* :func:`exclude_top_fraction` keeps ``x <= threshold`` (drops the largest ``top_fraction``);
* :func:`keep_top_fraction` keeps ``x > threshold`` of the ``1 - keep_fraction`` quantile, i.e.
  the largest ``keep_fraction`` (it is the complement of ``exclude_top_fraction(x, keep_fraction)``).

With ``stride=1`` and distinct values, ``exclude_top_fraction`` keeps exactly
``int((1 - top_fraction) * n) + 1`` pixels and ``keep_top_fraction`` keeps
``n - int((1 - keep_fraction) * n) - 1``. Ties at the threshold are all kept by the first and all
dropped by the second. NaN sorts last (largest) and fails both comparisons (never kept).
"""
from __future__ import annotations

import torch

__all__ = ["top_fraction_threshold", "exclude_top_fraction", "keep_top_fraction", "consistency_mask"]

REFERENCE_STRIDE = 10


def top_fraction_threshold(x: torch.Tensor, top_fraction: float, *, stride: int = REFERENCE_STRIDE) -> torch.Tensor:
    """Per-image threshold (B, 1, 1, 1) below which ``1 - top_fraction`` of the subsampled values lie.

    Args:
        x: (B, C, H, W) values (C is usually 1).
        top_fraction: in [0, 1].
        stride: subsampling step in both directions (10 in the reference; 1 = every pixel).
    """
    if x.dim() != 4:
        raise ValueError(f"expected (B, C, H, W), got {tuple(x.shape)}")
    if not 0.0 <= top_fraction <= 1.0:
        raise ValueError(f"top_fraction must be in [0, 1], got {top_fraction}")
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    with torch.no_grad():
        sub = x[:, :, ::stride, ::stride]
        b, _, h, w = sub.shape
        flat = sub.reshape(b, -1)
        n_per_channel = h * w
        ordered, _ = torch.sort(flat, dim=1)
        # The reference indexes with H*W of the subsample (one channel); keep that, clamp to range.
        index = min(int((1 - top_fraction) * n_per_channel), flat.shape[1] - 1)
        return ordered[:, index].view(b, 1, 1, 1)


def exclude_top_fraction(x: torch.Tensor, top_fraction: float = 0.2, *, stride: int = REFERENCE_STRIDE) -> torch.Tensor:
    """(B, C, H, W) bool: True where x is not among the largest ``top_fraction`` of its image."""
    return (x <= top_fraction_threshold(x, top_fraction, stride=stride)).detach()


def keep_top_fraction(x: torch.Tensor, keep_fraction: float = 0.8, *, stride: int = REFERENCE_STRIDE) -> torch.Tensor:
    """(B, C, H, W) bool: True where x is among the largest ``keep_fraction`` of its image."""
    return (x > top_fraction_threshold(x, keep_fraction, stride=stride)).detach()


def consistency_mask(
    diff: torch.Tensor,
    s_b: torch.Tensor,
    depth_ok: torch.Tensor,
    confidence: torch.Tensor | None = None,
    *,
    keep_similar: float = 0.8,
    exclude_top_diff: float = 0.2,
    min_diff: float = 1e-2,
    min_similarity: float = 1e-2,
    min_confidence: float = 1e-3,
    stride: int = REFERENCE_STRIDE,
) -> torch.Tensor:
    """Pixels used by the confidence-weighted consistency loss (reference ``consistency_mask``).

    diff > ``min_diff`` and both depths in range (``depth_ok``), S_b among the top ``keep_similar``
    of its image and > ``min_similarity``, confidence > ``min_confidence`` (skipped when None, the
    "no confidence" ablation), and diff not among the top ``exclude_top_diff`` of its image. The
    diff ranking uses the raw diff of every pixel, invalid ones included, as the reference does.

    Args:
        diff: (B, 1, H, W) raw |d_rgb - d_thermal->rgb|.
        s_b: (B, 1, H, W) RGB-side similarity.
        depth_ok: (B, 1, H, W) bool, both depths inside the range.
        confidence: (B, 1, H, W) teacher confidence or None.

    Returns:
        (B, 1, H, W) bool, detached.
    """
    with torch.no_grad():
        mask = (diff > min_diff) & depth_ok
        mask &= keep_top_fraction(s_b, keep_similar, stride=stride) & (s_b > min_similarity)
        if confidence is not None:
            mask &= confidence > min_confidence
        mask &= exclude_top_fraction(diff, exclude_top_diff, stride=stride)
    return mask
