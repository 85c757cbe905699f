"""Colour maps and the preview mosaic (thermal colourised | RGB | ground-truth depth) of simulated frames."""
from __future__ import annotations

from pathlib import Path

import numpy as np

# Anchor colours (0-255) of two perceptual-looking ramps, interpolated linearly.
_HOT = np.array([[0, 0, 4], [40, 11, 84], [101, 21, 110], [159, 42, 99], [212, 72, 66], [245, 125, 21],
                 [250, 193, 39], [252, 255, 164]], dtype=np.float32)
_DEPTH = np.array([[48, 18, 59], [70, 107, 227], [40, 188, 235], [50, 241, 152], [164, 252, 60],
                   [238, 207, 58], [251, 128, 34], [208, 47, 5], [122, 4, 3]], dtype=np.float32)


def apply_colormap(values: np.ndarray, anchors: np.ndarray) -> np.ndarray:
    """(H, W) floats in [0, 1] (NaN -> black) to (H, W, 3) uint8 through anchor colours."""
    x = np.linspace(0.0, 1.0, anchors.shape[0])
    v = np.clip(np.nan_to_num(values, nan=0.0), 0.0, 1.0)
    out = np.stack([np.interp(v, x, anchors[:, c]) for c in range(3)], axis=-1)
    out[np.isnan(values)] = 0
    return out.astype(np.uint8)


def colorize_thermal(counts: np.ndarray) -> np.ndarray:
    """mono16 counts (H, W) -> (H, W, 3) uint8, stretched between the 2nd and 98th percentiles."""
    c = counts.astype(np.float32)
    lo, hi = np.percentile(c, [2.0, 98.0])
    return apply_colormap((c - lo) / max(float(hi - lo), 1.0), _HOT)


def colorize_depth(depth: np.ndarray, max_depth: float = 80.0) -> np.ndarray:
    """Metric depth (H, W) float32 -> (H, W, 3) uint8 on a log scale from 1 m to ``max_depth``; NaN black."""
    with np.errstate(invalid="ignore", divide="ignore"):
        v = np.log(np.maximum(depth, 1.0)) / np.log(max_depth)
    return apply_colormap(v, _DEPTH)


def colorize_confidence(confidence: np.ndarray, floor: float = 1e-4) -> np.ndarray:
    """Confidence (H, W) in (0, 1] -> (H, W, 3) uint8 on a log scale from ``floor`` (black) to 1 (white);
    NaN black. Log because MonoTher confidences are NLL-calibrated, c = 0.002 / |error in m|: most of
    them lie between 1e-4 and 0.1, which a linear 0-1 scale shows as black."""
    with np.errstate(invalid="ignore", divide="ignore"):
        v = np.log(np.clip(confidence, floor, 1.0) / floor) / np.log(1.0 / floor)
    v = np.where(np.isfinite(confidence), v, np.nan)
    return apply_colormap(v, _HOT)


def mosaic(rows: list[list[np.ndarray]], tile_width: int = 320, *, tile_height: int | None = None) -> np.ndarray:
    """Grid of (H, W, 3) uint8 images with 4 px gaps, aspect ratios kept.

    Each image is resized to ``tile_width`` wide (rows padded to equal height), or, when ``tile_height`` is
    given, to that height (no padding between images of different aspect ratios).
    """
    from PIL import Image

    out_rows = []
    for row in rows:
        tiles = []
        for img in row:
            if tile_height is not None:
                size = (max(1, round(img.shape[1] * tile_height / img.shape[0])), tile_height)
            else:
                size = (tile_width, max(1, round(img.shape[0] * tile_width / img.shape[1])))
            tiles.append(np.asarray(Image.fromarray(img).resize(size, Image.BILINEAR)))
        height = max(t.shape[0] for t in tiles)
        padded = [np.pad(t, ((0, height - t.shape[0] + 4), (0, 4), (0, 0))) for t in tiles]
        out_rows.append(np.concatenate(padded, axis=1))
    width = max(r.shape[1] for r in out_rows)
    return np.concatenate([np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0))) for r in out_rows], axis=0)


def save_png(image: np.ndarray, path: Path) -> None:
    """Write an (H, W, 3) uint8 image as PNG atomically (temporary sibling, then rename)."""
    from PIL import Image

    path = Path(path)
    tmp = path.with_name(f".{path.name}.partial")
    Image.fromarray(image).save(tmp, format="PNG")
    tmp.replace(path)
