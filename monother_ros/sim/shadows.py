"""Sun shadows cast on the ground, rasterised once per scene segment into a world-aligned map.

The sun is a direction and the scene is static, so the shadow every primitive throws on the ground plane
is a fixed convex polygon: the hull of its footprint at its bottom and at its top, each slid along the
sun's ground direction by (height / tan(elevation)). Polygons are rasterised into a map of the ground
(0.2 m cells) per 100 m segment, and the renderer looks ground points up bilinearly (soft edges of about
a cell, like the sun's penumbra). Shadows on walls and objects are not modelled: their lighting only
follows their orientation to the sun.
"""
from __future__ import annotations

import math

import numpy as np

from monother_ros.sim.scene import (
    COL_COS, COL_CX, COL_CY, COL_HX, COL_HY, COL_SIN, COL_Z0, COL_Z1, CYLINDER, SEGMENT_LENGTH_M, Primitives,
    Scene,
)

SHADOW_RES_M = 0.2
SHADOW_HALF_WIDTH_M = 72.0  # the map covers |y| below this; beyond it the ground counts as sunlit


def _hull(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Convex hull, counter-clockwise (Andrew's monotone chain)."""
    pts = sorted(set(points))
    if len(pts) <= 2:
        return pts

    def cross(o, a, b) -> float:
        return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])

    lower: list[tuple[float, float]] = []
    for p in pts:
        while len(lower) >= 2 and cross(lower[-2], lower[-1], p) <= 0:
            lower.pop()
        lower.append(p)
    upper: list[tuple[float, float]] = []
    for p in reversed(pts):
        while len(upper) >= 2 and cross(upper[-2], upper[-1], p) <= 0:
            upper.pop()
        upper.append(p)
    return lower[:-1] + upper[:-1]


def shadow_polygons(prims: Primitives, sun: tuple[float, float, float]) -> list[list[tuple[float, float]]]:
    """Ground shadow polygon (counter-clockwise (x, y) vertices) of every primitive."""
    dx, dy = -sun[0] / sun[2], -sun[1] / sun[2]  # ground displacement per metre of height
    octagon = [(math.cos(a), math.sin(a)) for a in np.arange(8) * math.pi / 4]
    grow = 1.0 / math.cos(math.pi / 8)  # the octagon circumscribes the cylinder
    polys = []
    for kind, row in zip(prims.kind.tolist(), prims.params.tolist()):
        cx, cy, hx, hy = row[COL_CX], row[COL_CY], row[COL_HX], row[COL_HY]
        if kind == CYLINDER:
            foot = [(cx + grow * hx * u, cy + grow * hx * v) for u, v in octagon]
        else:
            c, s = row[COL_COS], row[COL_SIN]
            foot = [(cx + c * a - s * b, cy + s * a + c * b) for a, b in ((-hx, -hy), (hx, -hy), (hx, hy), (-hx, hy))]
        pts = [(x + dx * z, y + dy * z) for z in (row[COL_Z0], row[COL_Z1]) for x, y in foot]
        polys.append(_hull(pts))
    return polys


class GroundShadows:
    """Sunlit fraction of the ground of a scene for one sun direction.

    Args:
        scene: the scene.
        sun: unit vector towards the sun (world); it must be above the horizon.
    """

    def __init__(self, scene: Scene, sun: tuple[float, float, float]) -> None:
        if sun[2] <= 0.05:
            raise ValueError("the sun must be above the horizon to cast shadows")
        self.scene = scene
        self.sun = sun
        self.nx = int(round(SEGMENT_LENGTH_M / SHADOW_RES_M))
        self.ny = int(round(2 * SHADOW_HALF_WIDTH_M / SHADOW_RES_M))
        self._maps: dict[int, np.ndarray] = {}
        self._strips: dict[tuple[int, int], np.ndarray] = {}
        # Shadows reach this far (horizontally) from their caster: neighbouring segments contribute.
        self._reach = 45.0 / math.tan(math.asin(min(1.0, sun[2])))

    def segment_map(self, k: int) -> np.ndarray:
        """(ny, nx) float32 sunlit fraction (0 or 1) of segment k's ground, cell centres at
        x = 100 k + (i + 0.5) res, y = -SHADOW_HALF_WIDTH_M + (j + 0.5) res."""
        if k not in self._maps:
            x0 = k * SEGMENT_LENGTH_M
            n_side = int(math.ceil(self._reach / SEGMENT_LENGTH_M))
            prims = Primitives.concat([self.scene.segment(j) for j in range(k - n_side, k + n_side + 1)])
            lit = np.ones((self.ny, self.nx), dtype=np.float32)
            xs = x0 + (np.arange(self.nx) + 0.5) * SHADOW_RES_M
            ys = -SHADOW_HALF_WIDTH_M + (np.arange(self.ny) + 0.5) * SHADOW_RES_M
            for poly in shadow_polygons(prims, self.sun):
                if len(poly) < 3:
                    continue
                px = [p[0] for p in poly]
                py = [p[1] for p in poly]
                i0 = max(0, int(math.floor((min(px) - x0) / SHADOW_RES_M)))
                i1 = min(self.nx, int(math.ceil((max(px) - x0) / SHADOW_RES_M)) + 1)
                j0 = max(0, int(math.floor((min(py) + SHADOW_HALF_WIDTH_M) / SHADOW_RES_M)))
                j1 = min(self.ny, int(math.ceil((max(py) + SHADOW_HALF_WIDTH_M) / SHADOW_RES_M)) + 1)
                if i1 <= i0 or j1 <= j0:
                    continue
                X = xs[None, i0:i1]
                Y = ys[j0:j1, None]
                inside = np.ones((j1 - j0, i1 - i0), dtype=bool)
                for (ax, ay), (bx, by) in zip(poly, poly[1:] + poly[:1]):
                    inside &= (bx - ax) * (Y - ay) - (by - ay) * (X - ax) >= 0
                lit[j0:j1, i0:i1][inside] = 0.0
            if len(self._maps) > 32:
                self._maps.pop(next(iter(self._maps)))
            self._maps[k] = lit
        return self._maps[k]

    def _strip_for(self, k0: int, k1: int) -> np.ndarray:
        """Maps of segments k0..k1 side by side (cached: bands of one frame ask for a few ranges)."""
        key = (k0, k1)
        if key not in self._strips:
            if len(self._strips) >= 6:
                self._strips.pop(next(iter(self._strips)))
            self._strips[key] = np.concatenate([self.segment_map(k) for k in range(k0, k1 + 1)], axis=1)
        return self._strips[key]

    def sunlit(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Sunlit fraction (float32, 0-1, bilinear) of ground points (x, y) (float32 arrays)."""
        if x.size == 0:
            return np.ones(x.shape, np.float32)
        k0 = int(math.floor(float(x.min()) / SEGMENT_LENGTH_M))
        k1 = int(math.floor(float(x.max()) / SEGMENT_LENGTH_M))
        strip = self._strip_for(k0, k1)
        ny, nx = strip.shape
        gx = (x - np.float32(k0 * SEGMENT_LENGTH_M)) * np.float32(1.0 / SHADOW_RES_M) - np.float32(0.5)
        gy = (y + np.float32(SHADOW_HALF_WIDTH_M)) * np.float32(1.0 / SHADOW_RES_M) - np.float32(0.5)
        np.clip(gx, 0.0, nx - 1.001, out=gx)
        np.clip(gy, 0.0, ny - 1.001, out=gy)
        fx, fy = np.floor(gx), np.floor(gy)
        i00 = fy.astype(np.intp) * nx + fx.astype(np.intp)
        fx = gx - fx  # (float32 minus an integer array would promote to float64)
        fy = gy - fy
        flat = strip.ravel()
        a, b = flat.take(i00), flat.take(i00 + 1)
        c, d = flat.take(i00 + nx), flat.take(i00 + nx + 1)
        top = a + (b - a) * fx
        return top + ((c + (d - c) * fx) - top) * fy
