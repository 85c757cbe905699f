"""Depth-based warping between two calibrated cameras, as MonoTher-Depth does it.

Torch functions are batched and differentiable; the numpy helpers at the end (``*_np``) do the same
math without autograd for the ROS node (e.g. the teacher's confidence warped into the thermal frame).

Conventions
-----------
* Pixel (u, v) has its centre at integer coordinates, u along the width, v along the height; a
  ``K`` belongs to the pixel grid the tensor lives on (rescale it when the tensor is resized).
* Depth is z-depth in metres along the optical axis (REP 103 optical frames).
* ``T_dst_src`` is a 4x4 transform that maps points from the ``src`` optical frame into the ``dst``
  optical frame: ``X_dst = R X_src + t`` (MonoTher's ``pose_t2rgb`` is ``T_rgb_thermal``). Every
  function takes the transform in the direction *src -> dst* and inverts it where it needs to.
* Sampling uses ``grid_sample(mode="bilinear", padding_mode="zeros", align_corners=True)``; a pixel
  position u maps to the normalised coordinate ``2 u / (W - 1) - 1`` of the sampled image.

Directions (the part that is easy to get backwards)
----------------------------------------------------
All warps here are *backward* warps: the output lives on the ``dst`` pixel grid, and every dst
pixel looks up a value in the ``src`` image. To know where to look, a dst pixel needs its own
depth (``depth_dst``, the "guide"): it is back-projected with ``K_dst``, moved into the src frame
with ``T_src_dst = inv(T_dst_src)``, projected with ``K_src``; the src image is sampled at that
sub-pixel position. Positions are detached: gradients flow into the *sampled values* only.

* :func:`project_pixels` - forward mapping of every pixel of one image into another camera
  (reference ``remap_pixel_coordinates``): position and transformed z; z < 0.01 m sends the pixel
  out of any image (position 1e5) with depth 0.
* :func:`backward_warp` - any (B, C, H, W) src tensor (features, images, confidences) seen from the
  dst view: ``values_src(project(dst pixel))``. The values are not changed (no z transform).
* :func:`warp_depth` - the src *depth* seen from the dst view and expressed in the dst frame
  (reference ``warpa_sampleb_depth`` then ``get_sampleda_depth_inb``): sample the src depth d_s at
  the projected position (u_s, v_s), back-project (u_s, v_s, d_s) with ``K_src``, transform with
  ``T_dst_src`` and return the z coordinate in the dst camera. This is MonoTher's
  ``d_thermal->rgb`` (src = thermal, dst = RGB, guide = RGB depth); the gradient reaches the
  thermal depth through d_s, never the guide.

Invalid pixels: the projection gives position 1e5 and z = 0 when the transformed z < 0.01 m; the
sample is then 0 (zero padding). In :func:`warp_depth` the reference sets the output to 0 only when
both the output z and the sampled depth are < 0.01; a sample of 0 elsewhere back-projects to the src
camera centre, whose dst z is the translation's z. ``WarpResult.depth`` reproduces that exactly;
``WarpResult.valid`` marks the pixels that are really seen (sample fully inside the src image, both
projections in front of the cameras, sampled depth >= 0.01); ``zero_invalid=True`` zeroes the rest.
"""
from __future__ import annotations

import logging
from typing import Literal, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "MIN_Z",
    "OUT_OF_IMAGE",
    "WarpResult",
    "as_batched_matrix",
    "scale_intrinsics",
    "project_pixels",
    "pixels_to_grid",
    "grid_to_pixels",
    "sample",
    "backward_warp",
    "warp_depth",
    "project_pixels_np",
    "bilinear_sample_np",
    "backward_warp_np",
    "warp_depth_np",
    "splat_depth_np",
]

_logger = logging.getLogger(__name__)

MIN_Z = 0.01  # metres: points closer than this (or behind) the camera are dropped, as in the reference
OUT_OF_IMAGE = 1e5  # pixel coordinate given to dropped points: outside any image, so sampling gives 0


class WarpResult(NamedTuple):
    """Output of :func:`warp_depth`.

    Attributes:
        depth: (B, 1, Hd, Wd) metres, src depth expressed in the dst frame at dst pixels.
        valid: (B, 1, Hd, Wd) bool, pixels whose sample lies fully inside the src image with both
            projections in front of the cameras and a sampled depth >= ``MIN_Z``.
        grid: (B, Hd, Wd, 2) normalised sample positions in the src image (detached).
    """

    depth: torch.Tensor
    valid: torch.Tensor
    grid: torch.Tensor


def as_batched_matrix(m: torch.Tensor | np.ndarray, size: int, batch: int, like: torch.Tensor) -> torch.Tensor:
    """Return ``m`` as a (B, size, size) tensor with ``like``'s dtype and device.

    Accepts (size, size) (broadcast to the batch) or (B, size, size).
    """
    t = torch.as_tensor(m, dtype=like.dtype, device=like.device)
    if t.dim() == 2:
        t = t.unsqueeze(0).expand(batch, -1, -1)
    if t.shape != (batch, size, size):
        raise ValueError(f"expected a ({batch}, {size}, {size}) or ({size}, {size}) matrix, got {tuple(t.shape)}")
    return t


def scale_intrinsics(
    K: torch.Tensor,
    src_hw: tuple[int, int],
    dst_hw: tuple[int, int],
    *,
    mode: Literal["ratio", "align_corners"] = "ratio",
) -> torch.Tensor:
    """Intrinsics of an image resized from ``src_hw`` to ``dst_hw`` (rows of K scaled).

    ``mode="ratio"`` scales the first row by W'/W and the second by H'/H: what MonoTher-Depth does
    (the dataset and ``ZoeDepthDual.forward``) even though its resizes use ``align_corners=True``;
    use it to reproduce the official numbers. ``mode="align_corners"`` is the geometrically exact
    rule for an ``align_corners=True`` resize: u' = u (W'-1)/(W-1).

    Args:
        K: (..., 3, 3) intrinsics for ``src_hw``.
        src_hw: (H, W) of the image K describes.
        dst_hw: (H', W') of the resized image.

    Returns:
        (..., 3, 3) new intrinsics (a new tensor).
    """
    (h, w), (hd, wd) = src_hw, dst_hw
    if mode == "ratio":
        sx, sy = wd / w, hd / h
    elif mode == "align_corners":
        sx, sy = (wd - 1) / max(w - 1, 1), (hd - 1) / max(h - 1, 1)
    else:
        raise ValueError(f"unknown mode {mode!r}")
    out = K.clone()
    out[..., 0, :] = out[..., 0, :] * sx
    out[..., 1, :] = out[..., 1, :] * sy
    return out


def _pixel_grid(h: int, w: int, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    v, u = torch.meshgrid(
        torch.arange(h, dtype=like.dtype, device=like.device),
        torch.arange(w, dtype=like.dtype, device=like.device),
        indexing="ij",
    )
    return u, v


def _transform_and_project(
    points: torch.Tensor, K_dst: torch.Tensor, T_dst_src: torch.Tensor, min_z: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(B, N, 3) src points -> (uv (B, N, 2), z (B, N), in_front (B, N) bool) in the dst camera."""
    R = T_dst_src[:, :3, :3]
    t = T_dst_src[:, :3, 3]
    pts = points @ R.transpose(1, 2) + t[:, None, :]
    proj = pts @ K_dst.transpose(1, 2)
    z = proj[..., 2]
    in_front = z >= min_z
    # Guard the division only; dropped points get OUT_OF_IMAGE below anyway.
    safe_z = torch.where(z.abs() < 1e-4, z + 1e-6, z)
    uv = proj[..., :2] / safe_z.unsqueeze(-1)
    uv = torch.where(in_front.unsqueeze(-1), uv, torch.full_like(uv, OUT_OF_IMAGE))
    return uv, z, in_front


def project_pixels(
    depth: torch.Tensor,
    K_src: torch.Tensor | np.ndarray,
    K_dst: torch.Tensor | np.ndarray,
    T_dst_src: torch.Tensor | np.ndarray,
    *,
    min_z: float = MIN_Z,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward mapping of every src pixel, with its depth, into the dst camera.

    Args:
        depth: (B, 1, H, W) src z-depth, metres.
        K_src, K_dst: (B, 3, 3) or (3, 3) intrinsics.
        T_dst_src: (B, 4, 4) or (4, 4), src -> dst.
        min_z: points with dst z below this are dropped.

    Returns:
        uv: (B, H, W, 2) dst pixel coordinates (u, v) of each src pixel; ``OUT_OF_IMAGE`` when
            dropped. Differentiable w.r.t. ``depth`` (callers detach it before sampling).
        z: (B, 1, H, W) z of each src pixel's point in the dst frame, 0 when dropped.
    """
    if depth.dim() != 4 or depth.shape[1] != 1:
        raise ValueError(f"depth must be (B, 1, H, W), got {tuple(depth.shape)}")
    b, _, h, w = depth.shape
    K_src = as_batched_matrix(K_src, 3, b, depth)
    K_dst = as_batched_matrix(K_dst, 3, b, depth)
    T_dst_src = as_batched_matrix(T_dst_src, 4, b, depth)
    u, v = _pixel_grid(h, w, depth)
    pix = torch.stack((u, v, torch.ones_like(u)), dim=-1).reshape(1, h * w, 3)
    rays = pix @ torch.linalg.inv(K_src).transpose(1, 2)  # (B, N, 3), z = 1
    points = rays * depth.reshape(b, h * w, 1)
    uv, z, in_front = _transform_and_project(points, K_dst, T_dst_src, min_z)
    z = torch.where(in_front, z, torch.zeros_like(z))
    return uv.reshape(b, h, w, 2), z.reshape(b, 1, h, w)


def pixels_to_grid(uv: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    """Pixel coordinates (..., 2) of an image of size ``hw`` -> ``grid_sample`` coordinates (align_corners)."""
    h, w = hw
    return torch.stack((2.0 * uv[..., 0] / (w - 1) - 1.0, 2.0 * uv[..., 1] / (h - 1) - 1.0), dim=-1)


def grid_to_pixels(grid: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    """Inverse of :func:`pixels_to_grid`."""
    h, w = hw
    return torch.stack(((grid[..., 0] + 1.0) * (w - 1) / 2.0, (grid[..., 1] + 1.0) * (h - 1) / 2.0), dim=-1)


def sample(
    values: torch.Tensor, grid: torch.Tensor, *, mode: Literal["bilinear", "nearest"] = "bilinear"
) -> torch.Tensor:
    """``grid_sample`` with the reference settings (zeros padding, align_corners=True).

    Args:
        values: (B, C, Hs, Ws) image to sample.
        grid: (B, Hd, Wd, 2) normalised positions; detached here so that no gradient reaches them.
        mode: ``bilinear`` (depth, features) or ``nearest`` (the reference warps S_a with it).

    Returns:
        (B, C, Hd, Wd) sampled values; 0 outside the image.
    """
    return F.grid_sample(values, grid.detach(), mode=mode, padding_mode="zeros", align_corners=True)


# Positions within this many pixels outside the border still count as inside: round-off of an exact
# border position (identity warp) must not make the pixel invalid; the zero-padded tap weighs ~0.
_BORDER_TOLERANCE = 1e-4


def _inside(uv: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    h, w = hw
    e = _BORDER_TOLERANCE
    return (uv[..., 0] >= -e) & (uv[..., 0] <= w - 1 + e) & (uv[..., 1] >= -e) & (uv[..., 1] <= h - 1 + e)


def _inside_np(uv: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    h, w = hw
    e = _BORDER_TOLERANCE
    with np.errstate(invalid="ignore"):
        return (uv[..., 0] >= -e) & (uv[..., 0] <= w - 1 + e) & (uv[..., 1] >= -e) & (uv[..., 1] <= h - 1 + e)


def backward_warp(
    values_src: torch.Tensor,
    depth_dst: torch.Tensor,
    K_src: torch.Tensor | np.ndarray,
    K_dst: torch.Tensor | np.ndarray,
    T_dst_src: torch.Tensor | np.ndarray,
    *,
    mode: Literal["bilinear", "nearest"] = "bilinear",
    min_z: float = MIN_Z,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Warp any src tensor into the dst view (backward warp guided by the dst depth).

    Args:
        values_src: (B, C, Hs, Ws) features / image / confidence on the src grid.
        depth_dst: (B, 1, Hd, Wd) z-depth of the dst view, metres (positions only; no gradient).
        K_src: intrinsics of the src grid; K_dst: of the dst grid; (B, 3, 3) or (3, 3).
        T_dst_src: (B, 4, 4) or (4, 4), src -> dst.
        mode: sampling mode.

    Returns:
        warped: (B, C, Hd, Wd) ``values_src`` sampled at each dst pixel's position in src.
        grid: (B, Hd, Wd, 2) the detached normalised positions (reuse them to warp more tensors).
    """
    b = depth_dst.shape[0]
    T_src_dst = torch.linalg.inv(as_batched_matrix(T_dst_src, 4, b, depth_dst))
    uv, _ = project_pixels(depth_dst.detach(), K_dst, K_src, T_src_dst, min_z=min_z)
    grid = pixels_to_grid(uv, tuple(values_src.shape[-2:])).detach()
    return sample(values_src, grid, mode=mode), grid


def warp_depth(
    depth_src: torch.Tensor,
    depth_dst: torch.Tensor,
    K_src: torch.Tensor | np.ndarray,
    K_dst: torch.Tensor | np.ndarray,
    T_dst_src: torch.Tensor | np.ndarray,
    *,
    min_z: float = MIN_Z,
    zero_invalid: bool = False,
) -> WarpResult:
    """The src depth map seen from the dst view, expressed in the dst frame (MonoTher ``d_src->dst``).

    For every dst pixel p: (u_s, v_s) = project(p, depth_dst(p)) into src (detached);
    d_s = bilinear sample of ``depth_src`` at (u_s, v_s); result = z of
    ``T_dst_src @ (d_s * inv(K_src) [u_s, v_s, 1])``. Where the src surface is the one the dst
    camera sees (no occlusion) and both depths are exact, the result equals ``depth_dst``.

    Args:
        depth_src: (B, 1, Hs, Ws) metres; gradients flow into it through the sampled values.
        depth_dst: (B, 1, Hd, Wd) metres; guide for positions only (no gradient).
        K_src, K_dst: (B, 3, 3) or (3, 3) intrinsics of the two grids.
        T_dst_src: (B, 4, 4) or (4, 4), src -> dst.
        min_z: near limit in metres for both projections.
        zero_invalid: set the depth to 0 where ``valid`` is False (otherwise reference values).

    Returns:
        WarpResult(depth (B, 1, Hd, Wd), valid (B, 1, Hd, Wd) bool, grid (B, Hd, Wd, 2)).
    """
    if depth_src.dim() != 4 or depth_src.shape[1] != 1:
        raise ValueError(f"depth_src must be (B, 1, H, W), got {tuple(depth_src.shape)}")
    b, _, hd, wd = depth_dst.shape
    hs, ws = depth_src.shape[-2:]
    T_ds = as_batched_matrix(T_dst_src, 4, b, depth_src)
    K_src_b = as_batched_matrix(K_src, 3, b, depth_src)
    K_dst_b = as_batched_matrix(K_dst, 3, b, depth_src)
    uv_src, z_src = project_pixels(depth_dst.detach(), K_dst_b, K_src_b, torch.linalg.inv(T_ds), min_z=min_z)
    uv_src = uv_src.detach()
    grid = pixels_to_grid(uv_src, (hs, ws))
    d_s = sample(depth_src, grid)  # (B, 1, Hd, Wd), carries the gradient
    # Back-project the sampled src points at the positions the reference recovers from the grid.
    uv_back = grid_to_pixels(grid, (hs, ws))
    pix = torch.cat((uv_back, torch.ones_like(uv_back[..., :1])), dim=-1).reshape(b, hd * wd, 3)
    rays = pix @ torch.linalg.inv(K_src_b).transpose(1, 2)
    points = rays * d_s.reshape(b, hd * wd, 1)
    R, t = T_ds[:, :3, :3], T_ds[:, :3, 3]
    z = (points @ R.transpose(1, 2) + t[:, None, :]) @ K_dst_b.transpose(1, 2)
    z = z[..., 2].reshape(b, 1, hd, wd)
    # The reference's rule: drop (depth 0) only when both the new z and the sampled depth are tiny.
    dropped = (z < min_z) & (d_s < min_z)
    depth = torch.where(dropped, torch.zeros_like(z), z)
    valid = (
        _inside(uv_src, (hs, ws)).unsqueeze(1)
        & (z_src >= min_z)
        & (d_s.detach() >= min_z)
        & (z.detach() >= min_z)
    )
    if zero_invalid:
        depth = torch.where(valid, depth, torch.zeros_like(depth))
    return WarpResult(depth, valid, grid)


# ---------------------------------------------------------------------------------------------
# numpy helpers (no autograd), same math; single images, float64 internally, NaN depth = invalid.


def project_pixels_np(
    depth: np.ndarray, K_src: np.ndarray, K_dst: np.ndarray, T_dst_src: np.ndarray, *, min_z: float = MIN_Z
) -> tuple[np.ndarray, np.ndarray]:
    """numpy :func:`project_pixels` for one (H, W) depth; returns uv (H, W, 2) and z (H, W) float64.

    NaN depth gives position ``OUT_OF_IMAGE`` and z 0 (treated as dropped).
    """
    depth = np.asarray(depth, dtype=np.float64)
    if depth.ndim != 2:
        raise ValueError(f"depth must be (H, W), got {depth.shape}")
    h, w = depth.shape
    K_dst = np.asarray(K_dst, dtype=np.float64)
    T = np.asarray(T_dst_src, dtype=np.float64)
    # K_dst (R d inv(K_src) [u, v, 1] + t) = d * M [u, v, 1] + K_dst t: each row of M [u, v, 1] is a
    # per-column term plus a per-row term, so the (H, W) maps cost two broadcasts each.
    M = K_dst @ T[:3, :3] @ np.linalg.inv(np.asarray(K_src, dtype=np.float64))
    k = K_dst @ T[:3, 3]
    u = np.arange(w, dtype=np.float64)[None, :]
    v = np.arange(h, dtype=np.float64)[:, None]
    proj = [depth * (M[i, 0] * u + (M[i, 1] * v + M[i, 2])) + k[i] for i in range(3)]
    z = proj[2]
    with np.errstate(invalid="ignore"):
        in_front = z >= min_z
    safe_z = np.where(np.abs(z) < 1e-4, z + 1e-6, z)
    uv = np.empty((h, w, 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        np.divide(proj[0], safe_z, out=uv[..., 0])
        np.divide(proj[1], safe_z, out=uv[..., 1])
    uv[~in_front] = OUT_OF_IMAGE
    return uv, np.where(in_front, z, 0.0)


def bilinear_sample_np(values: np.ndarray, uv: np.ndarray) -> np.ndarray:
    """Sample (Hs, Ws) or (Hs, Ws, C) ``values`` at pixel positions ``uv`` (..., 2); float32 result.

    Same result as ``grid_sample(bilinear, zeros, align_corners=True)``: taps outside the image
    contribute 0; non-finite positions give 0. NaN values propagate through in-image taps.
    """
    values = np.asarray(values)
    hs, ws = values.shape[:2]
    # 1-D take for a single channel: take along axis 0 of an (N, 1) array copies element by element.
    flat = values.reshape(hs * ws, -1).astype(np.float32, copy=False)
    if values.ndim == 2:
        flat = flat[:, 0]
    x = uv[..., 0]
    y = uv[..., 1]
    with np.errstate(invalid="ignore"):
        finite = (np.abs(x) < 1e7) & (np.abs(y) < 1e7)  # False for NaN and OUT_OF_IMAGE-like values
    x = np.where(finite, x, -10.0)
    y = np.where(finite, y, -10.0)
    x0f = np.floor(x)
    y0f = np.floor(y)
    wx1 = (x - x0f).astype(np.float32)
    wy1 = (y - y0f).astype(np.float32)
    wx0 = np.float32(1.0) - wx1
    wy0 = np.float32(1.0) - wy1
    x0 = x0f.astype(np.int64)
    y0 = y0f.astype(np.int64)
    # Column/row validity of the two tap columns and rows.
    cx = ((x0 >= 0) & (x0 < ws), (x0 >= -1) & (x0 < ws - 1))
    cy = ((y0 >= 0) & (y0 < hs), (y0 >= -1) & (y0 < hs - 1))
    base = y0 * ws + x0
    out = np.zeros(x.shape + flat.shape[1:], dtype=np.float32)
    for dy, wy in ((0, wy0), (1, wy1)):
        for dx, wx in ((0, wx0), (1, wx1)):
            bad = ~(cy[dy] & cx[dx])
            idx = base + (dy * ws + dx)
            idx[bad] = 0
            tap = np.take(flat, idx, axis=0)
            tap[bad] = 0.0  # zero padding (also keeps a NaN at index 0 from leaking in)
            wgt = wx * wy
            tap *= wgt if flat.ndim == 1 else wgt[..., None]
            out += tap
    return out


def backward_warp_np(
    values_src: np.ndarray,
    depth_dst: np.ndarray,
    K_src: np.ndarray,
    K_dst: np.ndarray,
    T_dst_src: np.ndarray,
    *,
    min_z: float = MIN_Z,
) -> tuple[np.ndarray, np.ndarray]:
    """numpy :func:`backward_warp` for one image: e.g. the RGB teacher's confidence in the thermal view.

    Args:
        values_src: (Hs, Ws) or (Hs, Ws, C) on the src grid.
        depth_dst: (Hd, Wd) metres on the dst grid, NaN = unknown.
        K_src, K_dst: (3, 3) intrinsics of the two grids; T_dst_src: (4, 4) src -> dst.

    Returns:
        warped: (Hd, Wd[, C]) float32, 0 where nothing is seen.
        valid: (Hd, Wd) bool, sample fully inside the src image and in front of the src camera.
    """
    T_src_dst = np.linalg.inv(np.asarray(T_dst_src, dtype=np.float64))
    uv, _ = project_pixels_np(depth_dst, K_dst, K_src, T_src_dst, min_z=min_z)
    hs, ws = np.asarray(values_src).shape[:2]
    warped = bilinear_sample_np(values_src, uv)
    return warped.astype(np.float32), _inside_np(uv, (hs, ws))


def warp_depth_np(
    depth_src: np.ndarray,
    depth_dst: np.ndarray,
    K_src: np.ndarray,
    K_dst: np.ndarray,
    T_dst_src: np.ndarray,
    *,
    min_z: float = MIN_Z,
) -> tuple[np.ndarray, np.ndarray]:
    """numpy :func:`warp_depth` for one image (NaN in either depth = invalid).

    Returns:
        depth: (Hd, Wd) float32 metres in the dst frame, NaN where not ``valid``.
        valid: (Hd, Wd) bool, as :attr:`WarpResult.valid`.
    """
    depth_src = np.asarray(depth_src, dtype=np.float64)
    T = np.asarray(T_dst_src, dtype=np.float64)
    K_src = np.asarray(K_src, dtype=np.float64)
    K_dst = np.asarray(K_dst, dtype=np.float64)
    uv, z_src = project_pixels_np(depth_dst, K_dst, K_src, np.linalg.inv(T), min_z=min_z)
    hs, ws = depth_src.shape
    d_s = bilinear_sample_np(depth_src, uv)
    # z in the dst frame of (u_s, v_s, d_s): d_s * (row 2 of R inv(K_src)) [u_s, v_s, 1] + t_z.
    m = T[2, :3] @ np.linalg.inv(K_src)
    z = d_s * (m[0] * uv[..., 0] + m[1] * uv[..., 1] + m[2]) + T[2, 3]
    with np.errstate(invalid="ignore"):
        valid = _inside_np(uv, (hs, ws)) & (z_src >= min_z) & (d_s >= min_z) & (z >= min_z)
    return np.where(valid, z, np.nan).astype(np.float32), valid


def splat_depth_np(
    depth_src: np.ndarray,
    K_src: np.ndarray,
    K_dst: np.ndarray,
    T_dst_src: np.ndarray,
    dst_hw: tuple[int, int],
    *,
    min_z: float = MIN_Z,
) -> np.ndarray:
    """Forward warp (z-buffer splat) of a src depth map into the dst camera when no dst depth exists.

    Every src pixel goes to the nearest dst pixel; the closest point wins. Holes stay NaN. Not the
    MonoTher training warp (that one is :func:`warp_depth`); use it for ground truth and display.

    Args:
        depth_src: (Hs, Ws) metres, NaN/<=0 invalid.
        K_src, K_dst: (3, 3); T_dst_src: (4, 4) src -> dst; dst_hw: (Hd, Wd).

    Returns:
        (Hd, Wd) float32 z-depth in the dst frame, NaN where nothing lands.
    """
    hd, wd = dst_hw
    depth_src = np.asarray(depth_src, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        src_ok = np.isfinite(depth_src) & (depth_src > 0)
    uv, z = project_pixels_np(np.where(src_ok, depth_src, 0.0), K_src, K_dst, T_dst_src, min_z=min_z)
    ui = np.rint(uv[..., 0])
    vi = np.rint(uv[..., 1])
    ok = src_ok & (z >= min_z) & (ui >= 0) & (ui < wd) & (vi >= 0) & (vi < hd)
    flat = (vi[ok].astype(np.int64) * wd + ui[ok].astype(np.int64))
    zbuf = np.full(hd * wd, np.inf)
    np.minimum.at(zbuf, flat, z[ok])
    zbuf[~np.isfinite(zbuf)] = np.nan
    return zbuf.reshape(hd, wd).astype(np.float32)
