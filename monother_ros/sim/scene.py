"""Procedural 3-D scenes for the simulated rig: a street (or campus path) along the world x axis.

World frame: x along the street, y to the left, z up, metres; the ground is the plane z = 0. The scene is
made of primitives (yawed boxes and vertical cylinders) generated lazily in 100 m segments along x, each
from its own seeded generator, so any segment is identical whatever order segments are asked for in and a
live rig can run for ever. Primitive 0 is the ground and primitive 1 the sky (pseudo-primitives for the
shading tables); objects start at index ``FIRST_OBJECT``.

Moving objects (oncoming cars, people walking along the sidewalks) belong to flows: each flow moves at
one speed along x and is generated in its own coordinate u = x - vx t, in 100 m segments as well, so
they exist at any time and never pop in or out; they cast no ground shadows. RGB and thermal frames,
taken at different instants, see them at different places, as a real unsynchronised rig would.

Families differ in their statistics on purpose (a model trained on one is shifted on the other):
``urban`` is a street canyon (continuous rows of 8-35 m buildings, parked and oncoming cars, street lamps,
people on sidewalks); ``campus`` is open (lawns, a narrow path, low yawed buildings far back, many trees,
more people, few cars).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

Family = Literal["urban", "campus"]
FAMILIES: tuple[str, ...] = ("urban", "campus")

SEGMENT_LENGTH_M = 100.0
BOX, CYLINDER = 0, 1
GROUND_ID, SKY_ID, FIRST_OBJECT = 0, 1, 2


class Mat:
    """Material ids (index into the per-scenario material tables of ``shading``)."""

    SKY = 0
    ASPHALT = 1
    PAINT = 2
    CONCRETE = 3
    GRASS = 4
    BRICK = 5
    PLASTER = 6
    GLASS_FACADE = 7
    ROOF = 8
    CAR_PAINT = 9
    CAR_GLASS = 10
    TIRE = 11
    CLOTHING = 12
    SKIN = 13
    BARK = 14
    FOLIAGE = 15
    METAL = 16
    LAMP = 17
    WOOD = 18
    HEADLIGHT = 19
    TAILLIGHT = 20
    WINDOW = 21
    ENGINE = 22
    CURB = 23
    COUNT = 24


# Columns of the per-primitive parameter table.
COL_CX, COL_CY, COL_COS, COL_SIN, COL_HX, COL_HY, COL_Z0, COL_Z1 = range(8)
COL_R, COL_G, COL_B = 8, 9, 10  # albedo tint multiplier (linear RGB)
COL_TOFF = 11  # temperature offset, K
COL_WIN_SX, COL_WIN_SZ, COL_WIN_FRAC, COL_LIT = 12, 13, 14, 15  # window grid (m, m, 0-1, 0-1)
COL_AUX = 16  # car: engine heat (K); lamp: 1 when the light is on
COL_HASH = 17  # per-object integer seed (stored as float, < 2**20)
N_COLS = 18


@dataclass
class Primitives:
    """A set of primitives.

    Attributes:
        kind: (N,) int8, ``BOX`` or ``CYLINDER``.
        mat: (N,) int16 material id (``Mat``).
        params: (N, N_COLS) float64; boxes are centred at (cx, cy), yawed by atan2(sin, cos), half
            extents hx (local x) and hy (local y), spanning z0..z1; cylinders use hx as the radius.
        lamps: (L, 3) float64 positions of street-lamp light sources (world, metres).
    """

    kind: np.ndarray
    mat: np.ndarray
    params: np.ndarray
    lamps: np.ndarray

    def __len__(self) -> int:
        return int(self.kind.shape[0])

    @staticmethod
    def concat(parts: list["Primitives"]) -> "Primitives":
        if not parts:
            return Primitives(
                np.zeros(0, np.int8), np.zeros(0, np.int16), np.zeros((0, N_COLS)), np.zeros((0, 3))
            )
        return Primitives(
            np.concatenate([p.kind for p in parts]),
            np.concatenate([p.mat for p in parts]),
            np.concatenate([p.params for p in parts]),
            np.concatenate([p.lamps for p in parts]),
        )

    def bounding_corners(self) -> np.ndarray:
        """(N, 8, 3) world corners of each primitive's bounding box (cylinders: their axis-aligned box)."""
        p = self.params
        n = len(self)
        sx = np.array([-1, 1, 1, -1, -1, 1, 1, -1], dtype=np.float64)
        sy = np.array([-1, -1, 1, 1, -1, -1, 1, 1], dtype=np.float64)
        top = np.array([0, 0, 0, 0, 1, 1, 1, 1], dtype=bool)
        c = np.where(self.kind == CYLINDER, 1.0, p[:, COL_COS])[:, None]
        s = np.where(self.kind == CYLINDER, 0.0, p[:, COL_SIN])[:, None]
        lx = sx[None, :] * p[:, COL_HX, None]
        ly = sy[None, :] * p[:, COL_HY, None]
        out = np.empty((n, 8, 3))
        out[..., 0] = p[:, COL_CX, None] + c * lx - s * ly
        out[..., 1] = p[:, COL_CY, None] + s * lx + c * ly
        out[..., 2] = np.where(top[None, :], p[:, COL_Z1, None], p[:, COL_Z0, None])
        return out

    def bounding_spheres(self) -> tuple[np.ndarray, np.ndarray]:
        """Centres (N, 3) and radii (N,) of spheres enclosing each primitive."""
        p = self.params
        centre = np.stack((p[:, COL_CX], p[:, COL_CY], 0.5 * (p[:, COL_Z0] + p[:, COL_Z1])), axis=1)
        radius = np.sqrt(p[:, COL_HX] ** 2 + p[:, COL_HY] ** 2 + (0.5 * (p[:, COL_Z1] - p[:, COL_Z0])) ** 2)
        return centre, radius


class _Builder:
    """Accumulates primitives of one segment."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng
        self.kind: list[int] = []
        self.mat: list[int] = []
        self.rows: list[np.ndarray] = []
        self.lamps: list[tuple[float, float, float]] = []

    def _row(self, cx: float, cy: float, yaw: float, hx: float, hy: float, z0: float, z1: float,
             tint: tuple[float, float, float], toff: float) -> np.ndarray:
        row = np.zeros(N_COLS)
        row[[COL_CX, COL_CY, COL_COS, COL_SIN, COL_HX, COL_HY, COL_Z0, COL_Z1]] = (
            cx, cy, math.cos(yaw), math.sin(yaw), hx, hy, z0, z1)
        row[[COL_R, COL_G, COL_B]] = tint
        row[COL_TOFF] = toff
        row[COL_HASH] = float(self.rng.integers(0, 2**20))
        return row

    def box(self, mat: int, cx: float, cy: float, yaw: float, hx: float, hy: float, z0: float, z1: float,
            *, tint: tuple[float, float, float] = (1.0, 1.0, 1.0), toff: float = 0.0) -> np.ndarray:
        row = self._row(cx, cy, yaw, hx, hy, z0, z1, tint, toff)
        self.kind.append(BOX)
        self.mat.append(mat)
        self.rows.append(row)
        return row

    def cylinder(self, mat: int, cx: float, cy: float, radius: float, z0: float, z1: float,
                 *, tint: tuple[float, float, float] = (1.0, 1.0, 1.0), toff: float = 0.0) -> np.ndarray:
        row = self._row(cx, cy, 0.0, radius, radius, z0, z1, tint, toff)
        self.kind.append(CYLINDER)
        self.mat.append(mat)
        self.rows.append(row)
        return row

    def tint(self, spread: float) -> tuple[float, float, float]:
        base = 1.0 + spread * self.rng.uniform(-1, 1)
        r, g, b = (float(base * (1.0 + 0.3 * spread * self.rng.uniform(-1, 1))) for _ in range(3))
        return r, g, b

    def done(self) -> Primitives:
        params = np.array(self.rows) if self.rows else np.zeros((0, N_COLS))
        return Primitives(
            np.array(self.kind, dtype=np.int8), np.array(self.mat, dtype=np.int16), params,
            np.array(self.lamps, dtype=np.float64).reshape(-1, 3),
        )

    # --- composite objects -------------------------------------------------------------------------
    def building(self, cx: float, cy: float, yaw: float, hx: float, hy: float, height: float,
                 mat: int | None = None) -> None:
        rng = self.rng
        if mat is None:
            mat = int(rng.choice([Mat.BRICK, Mat.PLASTER, Mat.GLASS_FACADE], p=[0.4, 0.4, 0.2]))
        row = self.box(mat, cx, cy, yaw, hx, hy, 0.0, height, tint=self.tint(0.25), toff=rng.normal(0, 1.0))
        row[COL_WIN_SX] = rng.uniform(2.4, 4.0)
        row[COL_WIN_SZ] = rng.uniform(3.0, 3.6)
        row[COL_WIN_FRAC] = 0.85 if mat == Mat.GLASS_FACADE else rng.uniform(0.35, 0.6)
        row[COL_LIT] = rng.uniform(0.1, 0.45)

    def car(self, cx: float, cy: float, yaw: float, *, running: bool) -> None:
        rng = self.rng
        length, width = rng.uniform(4.0, 4.8), rng.uniform(1.7, 1.9)
        colours = [(0.8, 0.1, 0.1), (0.1, 0.2, 0.6), (0.85, 0.85, 0.85), (0.1, 0.1, 0.1),
                   (0.5, 0.5, 0.52), (0.2, 0.45, 0.25), (0.9, 0.75, 0.2)]
        colour = colours[int(rng.integers(len(colours)))]
        body = self.box(Mat.CAR_PAINT, cx, cy, yaw, length / 2, width / 2, 0.18, rng.uniform(0.95, 1.1),
                        tint=colour, toff=rng.normal(0, 1.0))
        body[COL_AUX] = rng.uniform(18.0, 35.0) if running else 0.0
        body[COL_LIT] = 1.0 if running else 0.0
        cab_len = length * rng.uniform(0.45, 0.55)
        offset = -0.1 * length
        self.box(Mat.CAR_GLASS, cx + offset * math.cos(yaw), cy + offset * math.sin(yaw), yaw, cab_len / 2,
                 width / 2 - 0.08, body[COL_Z1], body[COL_Z1] + rng.uniform(0.42, 0.55),
                 toff=(4.0 if running else 0.0))

    def person(self, cx: float, cy: float) -> None:
        rng = self.rng
        height = rng.uniform(1.55, 1.9)
        r, g, b = (float(v) for v in rng.uniform(0.1, 0.9, 3))
        self.cylinder(Mat.CLOTHING, cx, cy, rng.uniform(0.18, 0.25), 0.0, height - 0.27, tint=(r, g, b),
                      toff=rng.normal(0, 1.2))
        self.cylinder(Mat.SKIN, cx, cy, rng.uniform(0.09, 0.12), height - 0.27, height,
                      tint=self.tint(0.4), toff=rng.normal(0, 0.6))

    def tree(self, cx: float, cy: float, scale: float = 1.0, *, max_crown_r: float = 10.0) -> None:
        rng = self.rng
        trunk_h = rng.uniform(2.0, 3.2) * scale
        self.cylinder(Mat.BARK, cx, cy, rng.uniform(0.12, 0.25) * scale, 0.0, trunk_h + 0.3, tint=self.tint(0.2))
        # max_crown_r keeps crowns out of the driving corridor (the camera must never be inside an object).
        crown_r = min(rng.uniform(1.3, 2.6) * scale, max_crown_r)
        crown_h = rng.uniform(2.5, 5.0) * scale
        if rng.uniform() < 0.5:
            self.cylinder(Mat.FOLIAGE, cx, cy, crown_r, trunk_h, trunk_h + crown_h, tint=self.tint(0.25))
        else:
            self.box(Mat.FOLIAGE, cx, cy, rng.uniform(0, math.pi), crown_r, crown_r * rng.uniform(0.7, 1.0),
                     trunk_h, trunk_h + crown_h, tint=self.tint(0.25))

    def lamp(self, cx: float, cy: float, height: float, side: float, on: bool) -> None:
        self.cylinder(Mat.METAL, cx, cy, 0.08, 0.0, height, tint=(0.9, 0.9, 0.9))
        head_y = cy - side * 0.9  # the head hangs out over the road
        head = self.box(Mat.LAMP, cx, head_y, 0.0, 0.35, 0.9, height - 0.25, height, tint=(1.0, 1.0, 1.0))
        head[COL_AUX] = 1.0 if on else 0.0
        if on:
            self.lamps.append((cx, cy - side * 1.4, height - 0.3))


def _urban_segment(b: _Builder, x0: float, x1: float) -> None:
    rng = b.rng
    for side in (-1.0, 1.0):
        # Continuous row of buildings with narrow alleys.
        x = x0 + rng.uniform(0.0, 3.0)
        while x < x1 - 6.0:
            width = min(rng.uniform(9.0, 26.0), x1 - x - 0.5)
            depth = rng.uniform(10.0, 20.0)
            facade = 10.8 + rng.uniform(0.0, 1.2)
            height = float(rng.choice([rng.uniform(8, 15), rng.uniform(15, 35)], p=[0.5, 0.5]))
            b.building(x + width / 2, side * (facade + depth / 2), 0.0, width / 2, depth / 2, height)
            x += width + (rng.uniform(1.5, 4.0) if rng.uniform() < 0.3 else 0.0)
        # Parked cars in the parking lane.
        x = x0 + rng.uniform(0.0, 6.0)
        while x < x1 - 5.0:
            if rng.uniform() < 0.75:
                b.car(x + 2.4, side * 4.9 + rng.normal(0, 0.1), (0.0 if side > 0 else math.pi) + rng.normal(0, 0.03),
                      running=rng.uniform() < 0.25)
            x += rng.uniform(5.4, 7.5)
        # Street lamps, trees, bollards along the kerb.
        x = x0 + rng.uniform(0.0, 10.0)
        while x < x1:
            b.lamp(x, side * 6.8, rng.uniform(6.5, 8.0), side, on=True)
            x += rng.uniform(24.0, 32.0)
        for _ in range(int(rng.integers(1, 5))):
            b.tree(rng.uniform(x0 + 2, x1 - 2), side * rng.uniform(7.3, 7.8), scale=0.8)
        for _ in range(int(rng.integers(2, 7))):
            b.cylinder(Mat.METAL, rng.uniform(x0, x1), side * 6.5, 0.09, 0.0, 1.0, tint=(0.5, 0.5, 0.5))
        for _ in range(int(rng.integers(2, 7))):  # standing; walkers are in the pedestrian flows
            b.person(rng.uniform(x0 + 0.5, x1 - 0.5), side * rng.uniform(7.4, 10.3))


def _campus_segment(b: _Builder, x0: float, x1: float) -> None:
    rng = b.rng
    for side in (-1.0, 1.0):
        # Few low buildings, set far back and turned.
        for _ in range(int(rng.integers(0, 3))):
            hx, hy = rng.uniform(6.0, 18.0), rng.uniform(6.0, 14.0)
            cx = rng.uniform(x0 + hx, x1 - hx) if x1 - x0 > 2 * hx else 0.5 * (x0 + x1)
            dist = rng.uniform(16.0, 45.0) + max(hx, hy)
            b.building(cx, side * dist, rng.uniform(-0.5, 0.5), hx, hy, rng.uniform(4.0, 12.0),
                       mat=int(rng.choice([Mat.BRICK, Mat.PLASTER, Mat.GLASS_FACADE], p=[0.5, 0.3, 0.2])))
        for _ in range(int(rng.integers(8, 20))):
            y = side * rng.uniform(4.5, 32.0)
            b.tree(rng.uniform(x0 + 1, x1 - 1), y, scale=rng.uniform(0.8, 1.4), max_crown_r=abs(y) - 3.0)
        for _ in range(int(rng.integers(5, 15))):  # standing; walkers are in the pedestrian flows
            b.person(rng.uniform(x0 + 0.5, x1 - 0.5), side * rng.uniform(3.6, 25.0))
        x = x0 + rng.uniform(0.0, 12.0)
        while x < x1:
            b.lamp(x, side * 3.9, rng.uniform(4.0, 5.0), side, on=True)
            x += rng.uniform(30.0, 40.0)
        for _ in range(int(rng.integers(1, 4))):  # benches
            b.box(Mat.WOOD, rng.uniform(x0 + 2, x1 - 2), side * rng.uniform(4.2, 6.0), 0.0, 0.9, 0.25, 0.0, 0.5,
                  tint=b.tint(0.2))
    if rng.uniform() < 0.35:  # a small parking lot
        lot_x = rng.uniform(x0 + 10, x1 - 20)
        side = 1.0 if rng.uniform() < 0.5 else -1.0
        for k in range(int(rng.integers(2, 6))):
            b.car(lot_x + 2.8 * k, side * 9.0, side * math.pi / 2 + rng.normal(0, 0.05), running=rng.uniform() < 0.2)


@dataclass(frozen=True)
class Flow:
    """Objects moving along x at one common speed ``vx`` (m/s): generated in the flow's own coordinate
    u = x - vx t, in 100 m segments like the static scene, so they exist at any time without popping."""

    vx: float
    kind: Literal["car", "person"]
    y_range: tuple[float, float]
    per_100m: tuple[int, int]


FLOWS: dict[str, tuple[Flow, ...]] = {
    # Oncoming traffic in the left lane (our lane stays free: the trajectory drives there), people
    # walking both ways on both sidewalks.
    "urban": (
        Flow(-8.5, "car", (1.65, 1.95), (1, 4)),
        Flow(1.3, "person", (7.6, 10.2), (2, 6)), Flow(-1.4, "person", (7.6, 10.2), (2, 6)),
        Flow(1.2, "person", (-10.2, -7.6), (2, 6)), Flow(-1.3, "person", (-10.2, -7.6), (2, 6)),
    ),
    # A rare oncoming car on the narrow path; many walkers beside the path and across the lawns.
    "campus": (
        Flow(-6.0, "car", (1.45, 1.6), (0, 2)),
        Flow(1.2, "person", (3.6, 12.0), (3, 9)), Flow(-1.1, "person", (3.6, 12.0), (3, 9)),
        Flow(1.3, "person", (-12.0, -3.6), (3, 9)), Flow(-1.2, "person", (-12.0, -3.6), (3, 9)),
    ),
}


def _fmod(a: np.ndarray, period: float) -> np.ndarray:
    """a mod period, float32 (np.mod is ~20x slower)."""
    p = np.float32(period)
    return a - np.floor(a * (np.float32(1.0) / p)) * p


class Scene:
    """A seeded procedural scene, generated lazily per 100 m segment along x.

    Args:
        seed: scene seed; the same seed and family always give the same scene.
        family: ``"urban"`` or ``"campus"``.
    """

    def __init__(self, seed: int, family: Family) -> None:
        if family not in FAMILIES:
            raise ValueError(f"unknown scene family {family!r}; expected one of {FAMILIES}")
        self.seed = int(seed)
        self.family = family
        self._segments: dict[int, Primitives] = {}
        self._flow_segments: dict[tuple[int, int], Primitives] = {}

    @property
    def road_half_width_m(self) -> float:
        return 6.2 if self.family == "urban" else 3.0

    def segment(self, index: int) -> Primitives:
        """Primitives of segment ``index`` (covering x in [100 index, 100 (index+1)) m)."""
        if index not in self._segments:
            family_code = FAMILIES.index(self.family)
            rng = np.random.default_rng([abs(self.seed), int(self.seed < 0), family_code, index + 2**31])
            builder = _Builder(rng)
            x0 = index * SEGMENT_LENGTH_M
            if self.family == "urban":
                _urban_segment(builder, x0, x0 + SEGMENT_LENGTH_M)
            else:
                _campus_segment(builder, x0, x0 + SEGMENT_LENGTH_M)
            if len(self._segments) > 64:  # a live rig runs for ever: keep the cache bounded
                self._segments.pop(next(iter(self._segments)))
            self._segments[index] = builder.done()
        return self._segments[index]

    def flow_segment(self, flow: int, index: int) -> Primitives:
        """Objects of moving flow ``flow`` in its segment ``index``, positioned in flow coordinates (t = 0)."""
        key = (flow, index)
        if key not in self._flow_segments:
            family_code = FAMILIES.index(self.family)
            rng = np.random.default_rng([abs(self.seed), int(self.seed < 0), family_code, 100 + flow, index + 2**31])
            spec = FLOWS[self.family][flow]
            b = _Builder(rng)
            u0 = index * SEGMENT_LENGTH_M
            heading = 0.0 if spec.vx > 0 else math.pi
            for _ in range(int(rng.integers(spec.per_100m[0], spec.per_100m[1] + 1))):
                u = float(rng.uniform(u0 + 3.0, u0 + SEGMENT_LENGTH_M - 3.0))
                y = float(rng.uniform(*spec.y_range))
                if spec.kind == "car":
                    b.car(u, y, heading + float(rng.normal(0, 0.01)), running=True)
                else:
                    b.person(u, y)
            if len(self._flow_segments) > 256:
                self._flow_segments.pop(next(iter(self._flow_segments)))
            self._flow_segments[key] = b.done()
        return self._flow_segments[key]

    def primitives_near(self, x_min: float, x_max: float, t: float | None = None) -> Primitives:
        """All objects that can lie in [x_min, x_max] (world x, metres): the static segments overlapping it
        and, when a time ``t`` (seconds) is given, the moving objects (cars, walkers) at that time."""
        first = math.floor(x_min / SEGMENT_LENGTH_M)
        last = math.floor(x_max / SEGMENT_LENGTH_M)
        parts = [self.segment(k) for k in range(first, last + 1)]
        if t is not None:
            parts += self.moving_at(x_min, x_max, t)
        return Primitives.concat(parts)

    def moving_at(self, x_min: float, x_max: float, t: float) -> list[Primitives]:
        """Moving objects near [x_min, x_max] at time t, in world coordinates."""
        out = []
        for f, spec in enumerate(FLOWS[self.family]):
            shift = spec.vx * t
            # A car is up to ~5 m long: widen the range so that objects straddling its ends are included.
            first = math.floor((x_min - shift - 5.0) / SEGMENT_LENGTH_M)
            last = math.floor((x_max - shift + 5.0) / SEGMENT_LENGTH_M)
            for k in range(first, last + 1):
                seg = self.flow_segment(f, k)
                if len(seg):
                    params = seg.params.copy()
                    params[:, COL_CX] += shift
                    out.append(Primitives(seg.kind, seg.mat, params, seg.lamps))
        return out

    def ground_material(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Material id (int16) of the ground at world (x, y) (float32 arrays of one shape)."""
        ay = np.abs(y)
        half = np.float32(self.road_half_width_m)
        # Integer blends of comparison masks (boolean-mask assignments and np.mod are much slower).
        if self.family == "urban":
            curb = ay > half
            paint = ((ay < 0.08) & (_fmod(x, 9.0) < 3.0)) | (np.abs(ay - np.float32(3.55)) < 0.06)
            walk = ay > half + np.float32(0.25)
            mat = (Mat.ASPHALT + curb * (Mat.CURB - Mat.ASPHALT) + walk * (Mat.CONCRETE - Mat.CURB)
                   + paint * (Mat.PAINT - Mat.ASPHALT))
        else:
            curb = ay > half
            grass = ay > half + np.float32(0.3)
            path = grass & (_fmod(x + np.float32(0.35) * ay, 47.0) < 2.2)  # footpaths crossing the lawns
            paint = (ay < 0.06) & (_fmod(x, 6.0) < 2.0)
            mat = (Mat.ASPHALT + curb * (Mat.CURB - Mat.ASPHALT) + grass * (Mat.GRASS - Mat.CURB)
                   + path * (Mat.CONCRETE - Mat.GRASS) + paint * (Mat.PAINT - Mat.ASPHALT))
        mat = mat.astype(np.int16)
        return mat
