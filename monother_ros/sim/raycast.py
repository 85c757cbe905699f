"""Analytic ray casting against the scene's primitives, vectorised with numpy (float32).

Rays share one origin and come as a 2-D grid of directions (a camera image or a LiDAR sweep). Each
primitive is only intersected with the block of rays that can reach it (screen-space bounding box for
pinhole cameras, azimuth interval for the spinning LiDAR), objects are visited nearest first, and one
whose nearest possible depth lies behind everything already in its block is skipped (occlusion culling).

The ray parameter ``t`` is such that the hit point is ``origin + t * direction``: with camera rays of
optical z = 1, ``t`` IS the optical z-depth; with unit directions it is the range.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np

from monother_ros.core.camera import PinholeCamera
from monother_ros.sim.scene import (
    BOX, COL_COS, COL_CX, COL_CY, COL_HX, COL_HY, COL_SIN, COL_Z0, COL_Z1, CYLINDER, FIRST_OBJECT,
    GROUND_ID, SKY_ID, Primitives,
)

NEAR_PLANE_M = 0.05
SMALL_REGION_RAYS = 2048  # objects reaching fewer rays than this are intersected together (_trace_small)
# The 12 edges of a box given as pairs of corner indices (corner order of Primitives.bounding_corners).
_EDGES = np.array([[0, 1], [1, 2], [2, 3], [3, 0], [4, 5], [5, 6], [6, 7], [7, 4], [0, 4], [1, 5], [2, 6], [3, 7]])


@dataclass
class RayGrid:
    """Rays sharing one origin.

    Attributes:
        origin: (3,) float64 world position of the ray origin, metres.
        dx, dy, dz: (H, W) float32 world direction components (not necessarily unit length).
        norm: (H, W) float32 length of the directions (distance = t * norm).
    """

    origin: np.ndarray
    dx: np.ndarray
    dy: np.ndarray
    dz: np.ndarray
    norm: np.ndarray

    @property
    def shape(self) -> tuple[int, int]:
        return self.dx.shape  # type: ignore[return-value]


@dataclass
class Region:
    """The block of rays a primitive can reach: rows r0:r1, columns c0:c1; tmin = nearest possible t."""

    index: int
    r0: int
    r1: int
    c0: int
    c1: int
    tmin: float


@functools.lru_cache(maxsize=8)
def _camera_rays(camera: PinholeCamera) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    x = ((np.arange(camera.width) - camera.cx) / camera.fx).astype(np.float32)
    y = ((np.arange(camera.height) - camera.cy) / camera.fy).astype(np.float32)
    norm = np.sqrt(x[None, :] ** 2 + (y**2 + 1.0)[:, None]).astype(np.float32)
    norm.flags.writeable = False
    return x, y, norm


def pinhole_rays(camera: PinholeCamera, T_world_cam: np.ndarray) -> RayGrid:
    """World rays through every pixel centre, scaled so that their optical z is 1 (t = z-depth)."""
    x, y, norm = _camera_rays(camera)
    R = T_world_cam[:3, :3]
    # d = R @ (x, y, 1): each component is separable in (row, column), so one broadcast add per component.
    comps = []
    for i in range(3):
        comps.append(np.float32(R[i, 0]) * x[None, :] + (np.float32(R[i, 1]) * y + np.float32(R[i, 2]))[:, None])
    return RayGrid(np.asarray(T_world_cam[:3, 3], dtype=np.float64), comps[0], comps[1], comps[2], norm)


def pinhole_regions(prims: Primitives, camera: PinholeCamera, T_world_cam: np.ndarray,
                    max_depth: float) -> list[Region]:
    """Screen-space bounding boxes of the primitives, with near-plane clipping; nearest first."""
    if len(prims) == 0:
        return []
    T_cam_world = np.linalg.inv(T_world_cam)
    corners = prims.bounding_corners() @ T_cam_world[:3, :3].T + T_cam_world[:3, 3]  # (N, 8, 3)
    z = corners[..., 2]
    front = z > NEAR_PLANE_M
    # Points where box edges cross the near plane: with the front corners they span the clipped hull.
    pa, pb = corners[:, _EDGES[:, 0]], corners[:, _EDGES[:, 1]]
    za, zb = pa[..., 2], pb[..., 2]
    crossing = (za > NEAR_PLANE_M) != (zb > NEAR_PLANE_M)
    with np.errstate(divide="ignore", invalid="ignore"):
        f = np.where(crossing, (NEAR_PLANE_M - za) / (zb - za), 0.0)
    pc = pa + f[..., None] * (pb - pa)
    pts = np.concatenate((corners, pc), axis=1)  # (N, 20, 3)
    valid = np.concatenate((front, crossing), axis=1)
    zs = np.where(valid, np.maximum(pts[..., 2], NEAR_PLANE_M), np.nan)
    with np.errstate(divide="ignore", invalid="ignore"):
        u = camera.fx * pts[..., 0] / zs + camera.cx
        v = camera.fy * pts[..., 1] / zs + camera.cy
    any_valid = valid.any(axis=1)
    inf = np.inf
    umin = np.min(np.where(valid, u, inf), axis=1)
    umax = np.max(np.where(valid, u, -inf), axis=1)
    vmin = np.min(np.where(valid, v, inf), axis=1)
    vmax = np.max(np.where(valid, v, -inf), axis=1)
    zmin = np.min(np.where(valid, zs, inf), axis=1)
    keep = any_valid & (umax >= -1) & (umin <= camera.width) & (vmax >= -1) & (vmin <= camera.height)
    keep &= zmin < max_depth
    k = np.flatnonzero(keep)
    with np.errstate(invalid="ignore"):
        c0 = np.maximum(np.floor(umin[k]), 0).astype(np.intp)
        c1 = np.minimum(np.ceil(umax[k]) + 1, camera.width).astype(np.intp)
        r0 = np.maximum(np.floor(vmin[k]), 0).astype(np.intp)
        r1 = np.minimum(np.ceil(vmax[k]) + 1, camera.height).astype(np.intp)
    ok = (c1 > c0) & (r1 > r0)
    order = np.argsort(zmin[k][ok], kind="stable")
    cols = [a[ok][order].tolist() for a in (k, r0, r1, c0, c1)] + [zmin[k][ok][order].tolist()]
    return [Region(*row) for row in zip(*cols)]


def azimuth_regions(prims: Primitives, T_world_sensor: np.ndarray, azimuths: np.ndarray, n_rows: int,
                    max_range: float) -> list[Region]:
    """Column intervals of a spinning sensor's sweep that can reach each primitive (bounding spheres).

    ``azimuths`` (W,) are the column azimuths in radians, increasing, spaced evenly over 2 pi, in the
    sensor frame (x forward, y left). Intervals that wrap around give two regions.
    """
    if len(prims) == 0:
        return []
    centre, radius = prims.bounding_spheres()
    T_sensor_world = np.linalg.inv(T_world_sensor)
    c = centre @ T_sensor_world[:3, :3].T + T_sensor_world[:3, 3]
    dist = np.linalg.norm(c, axis=1)
    dxy = np.hypot(c[:, 0], c[:, 1])
    width = azimuths.shape[0]
    step = 2.0 * math.pi / width
    regions = []
    for k in np.flatnonzero(dist - radius < max_range):
        tmin = max(float(dist[k] - radius[k]), 0.0)
        if dxy[k] <= radius[k] * 1.001:
            regions.append(Region(int(k), 0, n_rows, 0, width, 0.0))
            continue
        half = math.asin(min(1.0, radius[k] / dxy[k])) + step
        centre_az = math.atan2(c[k, 1], c[k, 0])
        span = int(math.ceil(2 * half / step)) + 2
        if span >= width:
            regions.append(Region(int(k), 0, n_rows, 0, width, tmin))
            continue
        lo = int(math.floor((centre_az - half - azimuths[0]) / step)) % width
        hi = lo + span
        if hi <= width:
            regions.append(Region(int(k), 0, n_rows, lo, hi, tmin))
        else:
            regions.append(Region(int(k), 0, n_rows, lo, width, tmin))
            regions.append(Region(int(k), 0, n_rows, 0, hi - width, tmin))
    regions.sort(key=lambda r: r.tmin)
    return regions


def _box_t(o: tuple[float, float, float], dx: np.ndarray, dy: np.ndarray, dz: np.ndarray,
           row: list[float]) -> np.ndarray:
    """Entry parameter t of the rays into a yawed box (inf where missed)."""
    cx, cy, c, s, hx, hy, z0, z1 = row
    ox, oy, oz = o
    rx, ry = ox - cx, oy - cy
    lox, loy = c * rx + s * ry, -s * rx + c * ry
    if s == 0.0 and c == 1.0:
        ldx, ldy = dx, dy
    else:
        ldx = c * dx + s * dy
        ldy = c * dy - s * dx
    ix, iy, iz = 1.0 / ldx, 1.0 / ldy, 1.0 / dz
    t1, t2 = (-hx - lox) * ix, (hx - lox) * ix
    tn, tf = np.fmin(t1, t2), np.fmax(t1, t2)
    t1, t2 = (-hy - loy) * iy, (hy - loy) * iy
    np.fmax(tn, np.fmin(t1, t2), out=tn)
    np.fmin(tf, np.fmax(t1, t2), out=tf)
    t1, t2 = (z0 - oz) * iz, (z1 - oz) * iz
    np.fmax(tn, np.fmin(t1, t2), out=tn)
    np.fmin(tf, np.fmax(t1, t2), out=tf)
    miss = (tn > tf) | (tn <= 0)
    tn[miss] = np.inf
    return tn


def _cylinder_t(o: tuple[float, float, float], dx: np.ndarray, dy: np.ndarray, dz: np.ndarray,
                axy: np.ndarray, row: list[float]) -> np.ndarray:
    """Entry parameter t of the rays into a vertical cylinder (side or cap; inf where missed)."""
    cx, cy, _, _, r, _, z0, z1 = row
    ox, oy, oz = o
    lx, ly = ox - cx, oy - cy
    half_b = lx * dx + ly * dy
    c = lx * lx + ly * ly - r * r
    disc = half_b * half_b - axy * c
    t = (-half_b - np.sqrt(np.maximum(disc, 0.0))) / axy
    z = oz + t * dz
    t[(disc < 0) | (t <= 0) | (z < z0) | (z > z1)] = np.inf
    if oz > z1 or oz < z0:  # a cap faces the origin
        zc = z1 if oz > z1 else z0
        tc = (zc - oz) / dz
        px, py = lx + tc * dx, ly + tc * dy
        cap = (tc > 0) & (px * px + py * py <= r * r)
        np.copyto(t, np.fmin(t, tc), where=cap)
    return t


def _trace_small(o: tuple[float, float, float], rays: RayGrid, prims: Primitives, regions: list[Region],
                 t: np.ndarray, prim: np.ndarray) -> None:
    """Intersect many small objects in one vectorised pass: with hundreds of objects a few pixels wide
    (far away, or a small image), per-object Python calls would dominate.

    Every ray of every small region becomes one (ray, object) pair. The arithmetic is the same as in
    ``_box_t`` / ``_cylinder_t`` operation for operation (per-object constants in float64, rounded to
    float32 once), so both paths give bit-identical hits. The nearest hit per ray wins.
    """
    W = rays.shape[1]
    n = len(regions)
    table = np.array([(g.r0, g.r1, g.c0, g.c1, g.index) for g in regions], dtype=np.intp).reshape(n, 5)
    r0, c0, obj = table[:, 0], table[:, 2], table[:, 4]
    w = table[:, 3] - c0
    sizes = (table[:, 1] - r0) * w
    rid = np.repeat(np.arange(n), sizes)
    local = np.arange(int(sizes.sum())) - np.repeat(np.cumsum(sizes) - sizes, sizes)
    wr = w.take(rid)
    flat = (r0.take(rid) + local // wr) * W + c0.take(rid) + local % wr
    dx, dy, dz = rays.dx.ravel().take(flat), rays.dy.ravel().take(flat), rays.dz.ravel().take(flat)
    ox, oy, oz = o
    p = prims.params[obj]  # float64 per object
    cx, cy, c, s, hx, hy, z0, z1 = (p[:, k] for k in (COL_CX, COL_CY, COL_COS, COL_SIN, COL_HX, COL_HY, COL_Z0,
                                                       COL_Z1))
    rx, ry = ox - cx, oy - cy
    is_box = prims.kind[obj] == BOX

    def per_ray(values: np.ndarray) -> np.ndarray:
        return values.astype(np.float32).take(rid)

    tk = np.full(flat.shape, np.inf, np.float32)
    rb = np.flatnonzero(is_box.take(rid))
    if rb.size:
        lox, loy = c * rx + s * ry, -s * rx + c * ry
        sel = lambda v: per_ray(v).take(rb)  # noqa: E731
        bdx, bdy, bdz = dx.take(rb), dy.take(rb), dz.take(rb)
        cb, sb = sel(c), sel(s)
        ldx = cb * bdx + sb * bdy
        ldy = cb * bdy - sb * bdx
        ix, iy, iz = 1.0 / ldx, 1.0 / ldy, 1.0 / bdz
        t1, t2 = sel(-hx - lox) * ix, sel(hx - lox) * ix
        tn, tf = np.fmin(t1, t2), np.fmax(t1, t2)
        t1, t2 = sel(-hy - loy) * iy, sel(hy - loy) * iy
        np.fmax(tn, np.fmin(t1, t2), out=tn)
        np.fmin(tf, np.fmax(t1, t2), out=tf)
        t1, t2 = sel(z0 - oz) * iz, sel(z1 - oz) * iz
        np.fmax(tn, np.fmin(t1, t2), out=tn)
        np.fmin(tf, np.fmax(t1, t2), out=tf)
        tn[(tn > tf) | (tn <= 0)] = np.inf
        tk[rb] = tn
    rc = np.flatnonzero(~is_box.take(rid))
    if rc.size:
        sel = lambda v: per_ray(v).take(rc)  # noqa: E731
        cdx, cdy, cdz = dx.take(rc), dy.take(rc), dz.take(rc)
        lx, ly = sel(rx), sel(ry)
        axy = cdx * cdx + cdy * cdy
        half_b = lx * cdx + ly * cdy
        disc = half_b * half_b - axy * sel(rx * rx + ry * ry - hx * hx)
        tc_side = (-half_b - np.sqrt(np.maximum(disc, 0.0))) / axy
        z = np.float32(oz) + tc_side * cdz
        tc_side[(disc < 0) | (tc_side <= 0) | (z < sel(z0)) | (z > sel(z1))] = np.inf
        above, below = oz > z1, oz < z0
        zc = np.where(above, z1, z0)
        has_cap = (above | below).take(rid).take(rc)
        tcap = sel(zc - oz) / cdz
        px, py = lx + tcap * cdx, ly + tcap * cdy
        cap = has_cap & (tcap > 0) & (px * px + py * py <= sel(hx * hx))
        np.copyto(tc_side, np.fmin(tc_side, tcap), where=cap)
        tk[rc] = tc_side
    tflat, pflat = t.ravel(), prim.ravel()
    cand = np.flatnonzero(tk < tflat.take(flat))
    flat, tk, k = flat.take(cand), tk.take(cand), obj.take(rid.take(cand))
    np.minimum.at(tflat, flat, tk)
    won = tk == tflat.take(flat)
    pflat[flat[won]] = k[won] + FIRST_OBJECT


def trace(rays: RayGrid, prims: Primitives, regions: list[Region], *, max_distance: float,
          ground: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Nearest hit of every ray.

    Args:
        rays: the ray grid.
        prims: the primitives that ``regions`` index.
        regions: blocks of rays per primitive, nearest first (from ``pinhole_regions`` etc.).
        max_distance: rays hit nothing beyond this distance (metres along the ray).
        ground: intersect the ground plane z = 0.

    Returns:
        t: (H, W) float32 ray parameter of the hit, inf where nothing is hit.
        prim: (H, W) int32 ``GROUND_ID``, ``SKY_ID`` or ``FIRST_OBJECT + index`` into ``prims``.
    """
    shape = rays.shape
    prim = np.full(shape, SKY_ID, dtype=np.int32)
    o = (float(rays.origin[0]), float(rays.origin[1]), float(rays.origin[2]))
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        # Start every ray at its maximum parameter: a hit only counts when nearer, which also bounds the
        # range, and the occlusion test below works on blocks that contain sky.
        t = np.float32(max_distance) / rays.norm
        if ground:
            tg = np.float32(-o[2]) / rays.dz
            hit = (tg > 0) & (tg < t)
            np.copyto(t, tg, where=hit)
            np.copyto(prim, GROUND_ID, where=hit)
        cols = [COL_CX, COL_CY, COL_COS, COL_SIN, COL_HX, COL_HY, COL_Z0, COL_Z1]
        table = prims.params[:, cols].tolist()
        kinds = prims.kind.tolist()
        small = [reg for reg in regions if (reg.r1 - reg.r0) * (reg.c1 - reg.c0) <= SMALL_REGION_RAYS]
        if small:
            _trace_small(o, rays, prims, small, t, prim)
        for reg in regions:
            if (reg.r1 - reg.r0) * (reg.c1 - reg.c0) <= SMALL_REGION_RAYS:
                continue
            sl = (slice(reg.r0, reg.r1), slice(reg.c0, reg.c1))
            tv = t[sl]
            if reg.tmin >= float(tv.max()):
                continue  # everything in this block is already nearer than the object can be
            dx, dy, dz = rays.dx[sl], rays.dy[sl], rays.dz[sl]
            if kinds[reg.index] == BOX:
                tk = _box_t(o, dx, dy, dz, table[reg.index])
            else:
                tk = _cylinder_t(o, dx, dy, dz, dx * dx + dy * dy, table[reg.index])
            closer = tk < tv
            np.copyto(tv, tk, where=closer)
            np.copyto(prim[sl], reg.index + FIRST_OBJECT, where=closer)
        t[prim == SKY_ID] = np.inf
    return t, prim


@dataclass
class Surface:
    """Geometry at a block of hit points.

    Full-block arrays (the shape of the ``prim`` block): nx, ny, nz float32 world unit normals (ground and
    sky (0, 0, 1)); lx, ly float32 hit point in the object's yawed frame relative to its centre (ground
    and sky: world x, y).
    Object-pixel arrays (K = number of pixels that hit an object): idx (K,) flat indices into the block;
    pid (K,) their primitive ids; on_x / on_y (K,) bool, hit on a box face normal to the local x / y
    axis; vertical (K,) bool, hit on a vertical face. ``col(c)`` gives parameter column c (K,) of the
    hit objects (gathered once, contiguous: strided row gathers were the renderer's bottleneck).
    """

    nx: np.ndarray
    ny: np.ndarray
    nz: np.ndarray
    lx: np.ndarray
    ly: np.ndarray
    idx: np.ndarray
    pid: np.ndarray
    on_x: np.ndarray
    on_y: np.ndarray
    vertical: np.ndarray
    table: np.ndarray
    cache: dict

    def col(self, c: int) -> np.ndarray:
        if c not in self.cache:
            self.cache[c] = self.table[c][self.pid]
        return self.cache[c]


def surface_at(table: np.ndarray, kinds: np.ndarray, prim: np.ndarray, px: np.ndarray, py: np.ndarray,
               pz: np.ndarray) -> Surface:
    """Normals and object-local coordinates at hit points (only object pixels do real work).

    Args:
        table: ``padded_params(prims)``: (N_COLS, P + 2) columns indexed by ``prim`` directly.
        kinds: ``padded_kinds(prims)``.
        prim: int32 primitive ids (ground and sky included), any shape, C-contiguous.
        px, py, pz: float32 world hit points, same shape.
    """
    shape = prim.shape
    idx = np.flatnonzero(prim.ravel() >= FIRST_OBJECT)
    nx = np.zeros(shape, np.float32)
    ny = np.zeros(shape, np.float32)
    nz = np.ones(shape, np.float32)
    lx_full = np.array(px, dtype=np.float32, copy=True)
    ly_full = np.array(py, dtype=np.float32, copy=True)
    # intp indices and take(): numpy converts narrower index types on every fancy-indexing call.
    p = prim.ravel().take(idx).astype(np.intp)
    surf_cache: dict = {}
    is_cyl = kinds.take(p) == CYLINDER
    x, y, z = px.ravel().take(idx), py.ravel().take(idx), pz.ravel().take(idx)
    cx, cy, c, s, hx, hy, z0, z1 = (table[k].take(p) for k in (COL_CX, COL_CY, COL_COS, COL_SIN, COL_HX, COL_HY,
                                                                COL_Z0, COL_Z1))
    surf_cache.update({COL_HX: hx, COL_HY: hy, COL_Z0: z0, COL_Z1: z1})
    rx, ry = x - cx, y - cy
    lx = c * rx + s * ry
    ly = c * ry - s * rx
    hz = np.float32(0.5) * (z1 - z0)
    zc = z - (z0 + hz)
    ez = np.abs(zc) / hz
    ex, ey = np.abs(lx) / hx, np.abs(ly) / hy
    radial = np.sqrt(lx * lx + ly * ly)
    box = ~is_cyl
    # The face a point lies on is the one whose normalised coordinate is nearest to 1.
    on_x = box & (ex >= ey) & (ex >= ez)
    on_y = box & (ey > ex) & (ey >= ez)
    on_z = ~(on_x | on_y) & (box | (ez >= radial / hx))
    side = is_cyl & ~on_z
    # Masks as 0/1 floats and signs from comparisons: blends are several times faster than np.where.
    inv_r = side.astype(np.float32) / np.maximum(radial, np.float32(1e-6))
    nlx = lx * inv_r + on_x * _unit_sign(lx)
    nly = ly * inv_r + on_y * _unit_sign(ly)
    nx.ravel()[idx] = c * nlx - s * nly
    ny.ravel()[idx] = s * nlx + c * nly
    nz.ravel()[idx] = on_z * _unit_sign(zc)
    lx_full.ravel()[idx] = lx
    ly_full.ravel()[idx] = ly
    return Surface(nx, ny, nz, lx_full, ly_full, idx, p, on_x, on_y, ~on_z, table, surf_cache)


def _unit_sign(a: np.ndarray) -> np.ndarray:
    """+1 / -1 float32 (0 counts as +1)."""
    out = (a >= 0).astype(np.float32)
    out *= np.float32(2.0)
    out -= np.float32(1.0)
    return out


def padded_kinds(prims: Primitives) -> np.ndarray:
    """``prims.kind`` with entries for the ground and sky ids prepended."""
    return np.concatenate((np.array([BOX, BOX], np.int8), prims.kind))


def padded_params(prims: Primitives) -> np.ndarray:
    """``prims.params`` as float32 columns (N_COLS, P + 2), zero entries for the ground and sky ids first."""
    out = np.zeros((prims.params.shape[1], len(prims) + FIRST_OBJECT), dtype=np.float32)
    out[:, FIRST_OBJECT:] = prims.params.T
    return out
