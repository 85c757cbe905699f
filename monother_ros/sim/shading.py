"""Materials, scenario lighting and the per-pixel appearance models (visible radiance and temperature).

Both models work on any block of hit points (the renderer passes bands of image rows so that the
temporaries stay in cache). Radiance is linear, relative to a white surface in full daylight; temperature
is the apparent (radiometric) temperature in kelvin seen by a long-wave infrared camera.

Thermal model: every material has a day and a night temperature; by day sun-facing surfaces gain
``solar * cos(sun angle)`` kelvin; the emitted radiance mixes the surface's own (emissivity e) with the
reflected surroundings (1 - e: sky above, air-temperature surroundings at the side), in T^4; the air
path attenuates towards the air temperature. People, engines, lit windows and lamps are warm at night,
the sky is cold (clouds less so), and sun-heated asphalt dominates by day; ground in a cast shadow
(``shadows``) gets no sun, in both the visible and the thermal model.

Visible model: Lambert shading by the sun and a sky hemisphere, sky reflections on glass and paint,
street lamps as point lights (night), emitters (lamps, lit windows, head and tail lights), exponential
fog / haze towards the air light, a gradient sky with a seeded cloud layer.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

from monother_ros.sim.raycast import Surface, surface_at
from monother_ros.sim.scene import (
    COL_AUX, COL_B, COL_G, COL_HASH, COL_HX, COL_HY, COL_LIT, COL_R, COL_TOFF, COL_WIN_FRAC, COL_WIN_SX,
    COL_WIN_SZ, COL_Z0, COL_Z1, GROUND_ID, SKY_ID, Mat,
)

Scenario = Literal["day", "night", "fog"]
SCENARIOS: tuple[str, ...] = ("day", "night", "fog")
KELVIN = 273.15

# Per-material table. Columns: albedo r, g, b (linear); texture amplitude; texture scale (m);
# T day, T night (deg C); solar gain (K at normal sun); emissivity; thermal texture (K); LiDAR
# reflectivity (0-1); specular sky reflection; intrinsic (1: own heat source, not pulled to air temp).
_MATERIALS: dict[int, tuple[float, ...]] = {
    Mat.SKY:          (0.0, 0.0, 0.0, 0.0, 1.0, -20, -30, 0, 1.00, 0.0, 0.00, 0.0, 0),
    Mat.ASPHALT:      (0.085, 0.085, 0.09, 0.45, 0.12, 33, 13, 14, 0.95, 1.6, 0.10, 0.0, 0),
    Mat.PAINT:        (0.70, 0.70, 0.66, 0.15, 0.15, 28, 11, 8, 0.92, 0.5, 0.90, 0.0, 0),
    Mat.CONCRETE:     (0.40, 0.38, 0.35, 0.30, 0.15, 29, 11, 10, 0.93, 1.2, 0.35, 0.0, 0),
    Mat.GRASS:        (0.08, 0.20, 0.045, 0.65, 0.06, 24, 4, 4, 0.98, 2.0, 0.45, 0.0, 0),
    Mat.BRICK:        (0.40, 0.16, 0.09, 0.35, 0.25, 22, 12, 12, 0.93, 1.0, 0.30, 0.0, 0),
    Mat.PLASTER:      (0.58, 0.55, 0.48, 0.25, 0.3, 22, 11, 10, 0.92, 0.8, 0.50, 0.0, 0),
    Mat.GLASS_FACADE: (0.10, 0.13, 0.16, 0.10, 0.6, 20, 12, 4, 0.85, 0.5, 0.15, 0.35, 0),
    Mat.ROOF:         (0.18, 0.18, 0.18, 0.30, 0.3, 40, 7, 20, 0.93, 1.5, 0.20, 0.0, 0),
    Mat.CAR_PAINT:    (0.90, 0.90, 0.90, 0.06, 0.50, 31, 8, 15, 0.85, 0.3, 0.60, 0.12, 0),
    Mat.CAR_GLASS:    (0.04, 0.05, 0.06, 0.05, 0.50, 25, 6, 6, 0.85, 0.2, 0.10, 0.2, 0),
    Mat.TIRE:         (0.03, 0.03, 0.03, 0.10, 0.20, 30, 10, 6, 0.95, 0.3, 0.05, 0.0, 0),
    Mat.CLOTHING:     (0.80, 0.80, 0.80, 0.25, 0.08, 31, 27, 3, 0.97, 0.8, 0.40, 0.0, 1),
    Mat.SKIN:         (0.60, 0.44, 0.35, 0.10, 0.05, 34.5, 33.5, 1, 0.98, 0.3, 0.40, 0.0, 1),
    Mat.BARK:         (0.14, 0.10, 0.06, 0.40, 0.05, 23, 9, 4, 0.95, 0.8, 0.30, 0.0, 0),
    Mat.FOLIAGE:      (0.05, 0.15, 0.04, 0.70, 0.08, 21, 6, 2, 0.97, 1.5, 0.40, 0.0, 0),
    Mat.METAL:        (0.50, 0.50, 0.50, 0.10, 0.30, 30, 7, 12, 0.30, 0.3, 0.70, 0.25, 0),
    Mat.LAMP:         (0.80, 0.80, 0.75, 0.05, 0.30, 30, 8, 8, 0.90, 0.2, 0.50, 0.0, 0),
    Mat.WOOD:         (0.33, 0.21, 0.11, 0.35, 0.05, 27, 8, 8, 0.93, 0.8, 0.30, 0.0, 0),
    Mat.HEADLIGHT:    (0.85, 0.85, 0.85, 0.00, 0.50, 30, 8, 4, 0.90, 0.0, 0.80, 0.3, 0),
    Mat.TAILLIGHT:    (0.45, 0.04, 0.04, 0.00, 0.50, 30, 8, 4, 0.90, 0.0, 0.60, 0.3, 0),
    Mat.WINDOW:       (0.06, 0.08, 0.10, 0.08, 1.00, 19, 14, 3, 0.85, 0.3, 0.10, 0.45, 0),
    Mat.ENGINE:       (0.04, 0.04, 0.04, 0.10, 0.20, 31, 8, 10, 0.95, 0.3, 0.20, 0.0, 0),
    Mat.CURB:         (0.50, 0.50, 0.48, 0.25, 0.12, 30, 11, 10, 0.93, 1.0, 0.40, 0.0, 0),
}
MATERIAL_TABLE = np.array([_MATERIALS[m] for m in range(Mat.COUNT)], dtype=np.float32).T.copy()
(M_R, M_G, M_B, M_TEX, M_SCALE, M_TDAY, M_TNIGHT, M_SOLAR, M_EMISS, M_TTEX, M_REFL, M_SPEC,
 M_INTRINSIC) = range(13)
LIDAR_REFLECTIVITY = MATERIAL_TABLE[M_REFL]
MATERIAL_SCALE = MATERIAL_TABLE[M_SCALE]


@dataclass(frozen=True)
class ScenarioParams:
    """Lighting and atmosphere of a scenario preset.

    Attributes:
        sun: (3,) unit vector towards the sun (world).
        sun_rgb, sky_rgb: linear irradiance of direct sun and of the sky hemisphere.
        sky_horizon, sky_zenith: linear sky radiance near the horizon and at the zenith.
        fog_rgb: radiance of the air light (fog / haze), fog_beta: visible extinction, 1/m.
        exposure: camera exposure multiplier (auto-exposure), read_noise: linear read noise (std),
        shot_noise: variance per unit of exposed signal.
        lights_on: street lamps, lit windows and running cars' lights emit.
        air_c: air temperature (deg C), temp_blend: 0 = night temperatures, 1 = day,
        contrast: scale of surface-minus-air temperatures, solar_scale: sun heating factor,
        sky_zenith_c / sky_horizon_c: apparent sky temperatures, thermal_beta: LWIR extinction, 1/m.
    """

    name: str
    sun: tuple[float, float, float]
    sun_rgb: tuple[float, float, float]
    sky_rgb: tuple[float, float, float]
    sky_horizon: tuple[float, float, float]
    sky_zenith: tuple[float, float, float]
    fog_rgb: tuple[float, float, float]
    fog_beta: float
    exposure: float
    read_noise: float
    shot_noise: float
    lights_on: bool
    air_c: float
    temp_blend: float
    contrast: float
    solar_scale: float
    sky_zenith_c: float
    sky_horizon_c: float
    thermal_beta: float


def sun_direction(azimuth_deg: float, elevation_deg: float) -> tuple[float, float, float]:
    """Unit vector towards the sun: azimuth from world +x towards +y, elevation above the horizon."""
    a, e = math.radians(azimuth_deg), math.radians(elevation_deg)
    return (math.cos(e) * math.cos(a), math.cos(e) * math.sin(a), math.sin(e))


SCENARIO_PARAMS: dict[str, ScenarioParams] = {
    "day": ScenarioParams(
        "day", sun_direction(35.0, 38.0), (1.0, 0.96, 0.88), (0.30, 0.34, 0.42), (0.72, 0.80, 0.90), (0.30, 0.48, 0.82),
        (0.70, 0.76, 0.85), 0.0025, 1.0, 0.004, 0.0004, False,
        24.0, 1.0, 1.0, 1.0, -25.0, 5.0, 0.002),
    "night": ScenarioParams(
        "night", sun_direction(35.0, -30.0), (0.0, 0.0, 0.0), (0.006, 0.007, 0.010), (0.010, 0.009, 0.010),
        (0.002, 0.003, 0.006), (0.008, 0.007, 0.007), 0.002, 2.5, 0.004, 0.002, True,
        10.0, 0.0, 1.0, 0.0, -35.0, -5.0, 0.002),
    "fog": ScenarioParams(
        "fog", sun_direction(35.0, 20.0), (0.0, 0.0, 0.0), (0.62, 0.64, 0.66), (0.66, 0.68, 0.70), (0.62, 0.64, 0.67),
        (0.66, 0.68, 0.70), 0.055, 1.05, 0.006, 0.0006, True,
        8.0, 0.35, 0.6, 0.0, 4.0, 7.0, 0.008),
}


def make_noise_tile(size: int = 256, seed: int = 12345) -> np.ndarray:
    """(size, size) float32 tileable fractal value noise, zero mean, unit standard deviation."""
    rng = np.random.default_rng(seed)
    out = np.zeros((size, size), dtype=np.float64)
    cells, amp = 4, 1.0
    while cells <= size:
        grid = rng.uniform(0, 1, (cells, cells))
        coords = np.arange(size) * cells / size
        i0 = np.floor(coords).astype(int)
        f = coords - i0
        f = f * f * (3 - 2 * f)  # smoothstep: no visible grid creases
        i1 = (i0 + 1) % cells
        rows = grid[i0] * (1 - f)[:, None] + grid[i1] * f[:, None]
        out += amp * (rows[:, i0] * (1 - f)[None, :] + rows[:, i1] * f[None, :])
        cells *= 2
        amp *= 0.8
    out = (out - out.mean()) / out.std()
    return np.clip(out, -3.0, 3.0).astype(np.float32)


def _sample_bilinear(tile: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    size = tile.shape[0]
    mask = size - 1
    flat = tile.ravel()
    fu, fv = np.floor(u), np.floor(v)
    au, av = u - fu, v - fv
    iu = fu.astype(np.intp) & mask
    iv = fv.astype(np.intp) & mask
    iu1 = (iu + 1) & mask
    row0 = iv * size
    row1 = ((iv + 1) & mask) * size
    a = flat.take(row0 + iu)
    top = a + (flat.take(row0 + iu1) - a) * au
    b = flat.take(row1 + iu)
    bottom = b + (flat.take(row1 + iu1) - b) * au
    return top + (bottom - top) * av


def _NORMAL_QUANTILE(p: float) -> float:
    """Approximate standard normal quantile (the noise tile is ~N(0, 1))."""
    p = min(max(p, 1e-4), 1 - 1e-4)
    # Logistic approximation, good to ~0.01 over the range used for cloud cover.
    return math.log(p / (1 - p)) / 1.702


def _fmod(a: np.ndarray, period: float) -> np.ndarray:
    """a mod period (float32; np.mod is ~20x slower)."""
    p = np.float32(period)
    return a - np.floor(a * (np.float32(1.0) / p)) * p


def _hash01(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Deterministic per-cell pseudo-random number in [0, 1) from integer-valued cell coordinates."""
    h = (a.astype(np.int64) * 73856093) ^ (b.astype(np.int64) * 19349663) ^ (c.astype(np.int64) * 83492791)
    h = (h ^ (h >> 13)) * 1274126177
    return ((h >> 8) & 1023).astype(np.float32) / np.float32(1024.0)


# Radiance of emitters when lit (lights_on scenarios), per channel, indexed by material.
EMISSION = np.zeros((3, Mat.COUNT), dtype=np.float32)
EMISSION[:, Mat.WINDOW] = (0.55, 0.42, 0.22)
EMISSION[:, Mat.HEADLIGHT] = (30.0, 28.0, 24.0)
EMISSION[:, Mat.TAILLIGHT] = (5.0, 0.3, 0.2)
EMISSION[:, Mat.LAMP] = (40.0, 32.0, 20.0)
# Extra heat (K) of lit emitters.
EMISSION_HEAT = np.zeros(Mat.COUNT, dtype=np.float32)
EMISSION_HEAT[[Mat.WINDOW, Mat.HEADLIGHT, Mat.TAILLIGHT, Mat.LAMP]] = (4.0, 12.0, 6.0, 35.0)


@dataclass
class Hits:
    """A block of classified hits (full-block arrays share the block's shape).

    Attributes:
        prim: int32 primitive ids; dist: float32 distance along the ray, metres (0 for sky);
        dx, dy, dz, norm: float32 world ray directions and their lengths; px, py, pz: float32 hit points;
        surf: normals and object-local coordinates; mat: int16 material ids after pattern overrides
        (windows, roofs, car lights, tyres, grille); sky: bool; tex: float32 surface texture (~N(0, 1));
        lit: bool, a lit emitter (window, car light, lamp); mortar: float32 0-1 mortar / joint lines;
        engine: float32 extra heat of running engines (K); sunlit: float32 0-1, 0 where the ground lies in
        an object's shadow (None: no shadows computed); cloud: float32 0-1 cloud opacity of sky pixels
        (None: clear sky).
    """

    prim: np.ndarray
    dist: np.ndarray
    dx: np.ndarray
    dy: np.ndarray
    dz: np.ndarray
    norm: np.ndarray
    px: np.ndarray
    py: np.ndarray
    pz: np.ndarray
    surf: Surface
    mat: np.ndarray
    sky: np.ndarray
    tex: np.ndarray
    lit: np.ndarray
    mortar: np.ndarray
    engine: np.ndarray
    sunlit: np.ndarray | None = None
    cloud: np.ndarray | None = None

    def object_values(self, col: int, default: float) -> np.ndarray:
        """Full-block float32 array of one object parameter column (``default`` off objects)."""
        out = np.full(self.prim.shape, np.float32(default), dtype=np.float32)
        out.ravel()[self.surf.idx] = self.surf.col(col)
        return out


def _fade(footprint: np.ndarray, size) -> np.ndarray:
    """1 where a pattern of feature ``size`` metres is resolved, falling to 0 where a pixel covers it."""
    f = np.float32(1.5) - footprint * (np.float32(2.0) / size)
    return np.clip(f, np.float32(0.0), np.float32(1.0), out=f)


def classify(prim: np.ndarray, t: np.ndarray, dx: np.ndarray, dy: np.ndarray, dz: np.ndarray,
             norm: np.ndarray, origin: np.ndarray, focal_px: float, scene_tables: "SceneTables",
             ground_fn, tile: np.ndarray, shadow_fn=None, cloud_cover: float = 0.0) -> Hits:
    """Hit points, normals, material ids (with windows, roofs, car details) and surface texture.

    Args:
        prim, t: from ``raycast.trace`` (a block of rows).
        dx, dy, dz, norm: the block's ray directions and their lengths.
        origin: (3,) ray origin (world).
        focal_px: focal length in pixels (for the pixel footprint that fades fine patterns out).
        scene_tables: per-primitive tables of the primitives ``prim`` refers to.
        ground_fn: ``(x, y) -> material ids`` of the ground.
        shadow_fn: ``(x, y) -> sunlit fraction`` of ground points (None: no cast shadows).
        cloud_cover: fraction of the sky covered by clouds (0: clear).
        tile: noise tile from ``make_noise_tile``.
    """
    sky = prim == SKY_ID
    tt = np.minimum(t, np.float32(1e4))  # sky (inf) gets a far, finite point; its values are replaced later
    px = np.float32(origin[0]) + tt * dx
    py = np.float32(origin[1]) + tt * dy
    pz = np.float32(origin[2]) + tt * dz
    gidx = np.flatnonzero(prim.ravel() == GROUND_ID)
    pz.ravel()[gidx] = 0.0
    dist = tt * norm
    surf = surface_at(scene_tables.params32, scene_tables.kinds, prim, px, py, pz)
    idx = surf.idx
    mat = scene_tables.mat.take(prim)
    mat.ravel()[gidx] = ground_fn(px.ravel()[gidx], py.ravel()[gidx])
    cos_inc = np.abs(surf.nx * dx + surf.ny * dy + surf.nz * dz) / norm
    footprint = dist / (np.float32(focal_px) * np.clip(cos_inc, np.float32(0.12), np.float32(1.0)))
    # Texture coordinates (s, w): ground and horizontal faces use (x, y); vertical faces use the
    # distance along the face from its corner (s) and the height (w).
    s = surf.lx.copy()
    w = surf.ly.copy()
    vert = surf.vertical
    s_o = np.where(surf.on_x, surf.ly.ravel()[idx] + surf.col(COL_HY), surf.lx.ravel()[idx] + surf.col(COL_HX))
    vidx = idx[vert]
    s.ravel()[vidx] = s_o[vert]
    w.ravel()[vidx] = pz.ravel()[vidx]
    off = np.zeros(prim.shape, np.float32)
    off.ravel()[idx] = _fmod(surf.col(COL_HASH), 256.0)
    scale = MATERIAL_SCALE.take(mat)
    inv = np.float32(1.0) / scale
    su, sv = s * inv + off, w * inv + off * np.float32(0.37)
    # One bilinear lookup of the fractal tile (its finest octave is one texel = ``scale`` metres); where
    # a pixel spans several texels the texture is faded towards its mean instead of aliasing.
    tex = _sample_bilinear(tile, su, sv)
    tex *= _fade(footprint, scale * np.float32(4.0)) * np.float32(0.6) + np.float32(0.4)
    lit = np.zeros(prim.shape, dtype=bool)
    mortar = np.zeros(prim.shape, dtype=np.float32)
    engine = np.zeros(prim.shape, dtype=np.float32)
    mat_o = mat.ravel()[idx]
    fp_o = footprint.ravel()[idx]
    pz_o = pz.ravel()[idx]
    s_all = s.ravel()

    building = (mat_o == Mat.BRICK) | (mat_o == Mat.PLASTER) | (mat_o == Mat.GLASS_FACADE)
    roof = building & ~vert & (surf.nz.ravel()[idx] > 0.5)
    mat.ravel()[idx[roof]] = Mat.ROOF
    wall = building & vert
    if wall.any():
        k = np.flatnonzero(wall)
        gk = idx.take(k)  # block indices of the wall pixels
        pk = surf.pid.take(k)
        col = lambda c, pk=pk: surf.table[c].take(pk)  # noqa: E731
        sw, wz, fp = s_all.take(gk), pz_o.take(k), fp_o.take(k)
        cs = sw / col(COL_WIN_SX)
        cw = (wz - np.float32(0.6)) / col(COL_WIN_SZ)
        fcs, fcw = np.floor(cs), np.floor(cw)
        fs, fw = cs - fcs, cw - fcw
        frac = col(COL_WIN_FRAC)
        upper = (wz > 3.4) & (wz < col(COL_Z1) - 0.7) & (fw > 0.3) & (fw < 0.85)
        shop = (wz > 0.5) & (wz < 2.8)
        in_win = (np.abs(fs - np.float32(0.5)) < np.float32(0.5) * frac) & (upper | shop)
        sharp = _fade(fp, 0.8)
        window = sharp * in_win + (np.float32(1.0) - sharp) * frac * np.float32(0.45)
        wk = np.flatnonzero(window > 0.5)
        mat.ravel()[gk.take(wk)] = Mat.WINDOW
        # Which windows are lit: a hash of the window cell, only evaluated on window pixels.
        lit_w = in_win.take(wk) & (_hash01(fcs.take(wk), fcw.take(wk), col(COL_HASH).take(wk))
                                   < col(COL_LIT).take(wk))
        lit.ravel()[gk.take(wk[lit_w])] = True
        brick = mat_o.take(k) == Mat.BRICK
        brick[wk] = False
        bk = np.flatnonzero(brick)
        if bk.size:
            wzb, swb = wz.take(bk), sw.take(bk)
            course = wzb * np.float32(1.0 / 0.15)
            row_i = np.floor(course)
            along = swb * np.float32(1.0 / 0.4) + np.float32(0.5) * _fmod(row_i, 2.0)
            line = ((course - row_i) < 0.14) | ((along - np.floor(along)) < 0.06)
            sharp_b = _fade(fp.take(bk), 0.15)
            mortar.ravel()[gk.take(bk)] = sharp_b * line + (np.float32(1.0) - sharp_b) * np.float32(0.2)
    if gidx.size:
        g_mat = mat.ravel()[gidx]
        pave = g_mat == Mat.CONCRETE
        if pave.any():
            gi = gidx[pave]
            gx = px.ravel()[gi] * np.float32(1.0 / 0.6)
            gy = py.ravel()[gi] * np.float32(1.0 / 0.6)
            line = ((gx - np.floor(gx)) < 0.05) | ((gy - np.floor(gy)) < 0.05)
            sharp_p = _fade(footprint.ravel()[gi], 0.3)
            mortar.ravel()[gi] = sharp_p * line + (np.float32(1.0) - sharp_p) * np.float32(0.1)
    car = mat_o == Mat.CAR_PAINT
    if car.any():
        k = np.flatnonzero(car)
        pk = surf.pid[k]
        col = lambda c, pk=pk: surf.table[c][pk]  # noqa: E731
        lxk, lyk = surf.lx.ravel()[idx[k]], surf.ly.ravel()[idx[k]]
        hx, hy = col(COL_HX), col(COL_HY)
        zrel = pz_o[k] - col(COL_Z0)
        onx, ony = surf.on_x[k], surf.on_y[k]
        aly = np.abs(lyk)
        lamp_band = (aly > hy - 0.45) & (aly < hy - 0.1) & (zrel > 0.38) & (zrel < 0.55)
        grille = (aly < hy - 0.5) & (zrel > 0.15) & (zrel < 0.45)
        front, rear = onx & (lxk > 0), onx & (lxk < 0)
        wheel = ony & (np.abs(np.abs(lxk) - (hx - 0.85)) < 0.34) & (zrel < 0.42)
        sub = np.full(k.shape, Mat.CAR_PAINT, np.int16)
        sub[front & lamp_band] = Mat.HEADLIGHT
        sub[rear & lamp_band] = Mat.TAILLIGHT
        sub[front & grille] = Mat.ENGINE
        sub[wheel] = Mat.TIRE
        mat.ravel()[idx[k]] = sub
        hood = (surf.nz.ravel()[idx[k]] > 0.5) & (lxk > 0.3 * hx)
        aux = col(COL_AUX)
        heat = np.where((front & grille) | hood, aux, np.where(wheel, aux * np.float32(0.3), np.float32(0.0)))
        engine.ravel()[idx[k]] = heat
        lights = ((sub == Mat.HEADLIGHT) | (sub == Mat.TAILLIGHT)) & (col(COL_LIT) > 0.5)
        lit.ravel()[idx[k[lights]]] = True
    lamp = mat_o == Mat.LAMP
    if lamp.any():
        on = lamp & (surf.col(COL_AUX) > 0.5) & (surf.nz.ravel()[idx] < -0.5)
        lit.ravel()[idx[on]] = True
    cloud = None
    if cloud_cover > 0:
        sidx = np.flatnonzero(sky.ravel())
        if sidx.size:
            # Clouds on a layer 1.5 km up: the tile sampled where the sky rays cross it (world-fixed, so
            # both cameras see the same clouds), thresholded to the requested cover.
            cz = np.maximum(dz.ravel()[sidx] / norm.ravel()[sidx], np.float32(0.02))
            k = np.float32(1500.0 / 90.0)  # layer height / texel size (m)
            cu = dx.ravel()[sidx] / norm.ravel()[sidx] / cz * k + np.float32(origin[0] / 90.0)
            cv = dy.ravel()[sidx] / norm.ravel()[sidx] / cz * k + np.float32(origin[1] / 90.0)
            n = _sample_bilinear(tile, cu, cv)
            thresh = np.float32(_NORMAL_QUANTILE(1.0 - cloud_cover))
            c = np.minimum(np.maximum((n - thresh) * np.float32(1.2), np.float32(0.0)), np.float32(1.0))
            c *= np.minimum(cz * np.float32(8.0), np.float32(1.0))  # thin out towards the horizon
            cloud = np.zeros(prim.shape, np.float32)
            cloud.ravel()[sidx] = c
    sunlit = None
    if shadow_fn is not None and gidx.size:
        sunlit = np.ones(prim.shape, np.float32)
        sunlit.ravel()[gidx] = shadow_fn(px.ravel()[gidx], py.ravel()[gidx])
    return Hits(prim, dist, dx, dy, dz, norm, px, py, pz, surf, mat, sky, tex, lit, mortar, engine, sunlit, cloud)


def sky_radiance(params: ScenarioParams, elevation: np.ndarray) -> list[np.ndarray]:
    """Linear RGB of the sky for rays of sine-elevation ``elevation`` (float32 array)."""
    k = np.sqrt(np.clip(elevation, np.float32(0.0), np.float32(1.0)))
    return [np.float32(h) + np.float32(z - h) * k for h, z in zip(params.sky_horizon, params.sky_zenith)]


def shade_rgb(hits: Hits, params: ScenarioParams, lamp_irradiance: np.ndarray | None) -> np.ndarray:
    """Linear RGB radiance (3, ...) float32 of a block of hits (before the camera's exposure)."""
    mat = hits.mat
    surf = hits.surf
    sun = params.sun
    ndl = np.clip(surf.nx * np.float32(sun[0]) + surf.ny * np.float32(sun[1]) + surf.nz * np.float32(sun[2]),
                  np.float32(0.0), np.float32(1.0))
    if hits.sunlit is not None:
        ndl *= hits.sunlit
    hemi = np.float32(0.6) + np.float32(0.4) * surf.nz
    # Contact darkening: the lowest half metre of walls and objects sees less sky.
    occl = np.clip(np.float32(0.55) + hits.pz * np.float32(0.9), np.float32(0.55), np.float32(1.0))
    hemi *= occl
    tex = np.float32(1.0) + MATERIAL_TABLE[M_TEX].take(mat) * hits.tex * np.float32(0.5)
    tex *= np.float32(1.0) - np.float32(0.45) * hits.mortar
    spec = MATERIAL_TABLE[M_SPEC].take(mat)
    # Sky reflected by glass and paint (only where the material reflects): the reflected view ray is
    # r = d - 2 (n.d) n, and only its elevation matters for the sky.
    ridx = np.flatnonzero(spec.ravel() > 0)
    refl: list[np.ndarray] | None = None
    if ridx.size:
        nz_r, dz_r = surf.nz.ravel()[ridx], hits.dz.ravel()[ridx]
        ndd = (surf.nx.ravel()[ridx] * hits.dx.ravel()[ridx] + surf.ny.ravel()[ridx] * hits.dy.ravel()[ridx]
               + nz_r * dz_r)
        r_el = (dz_r - np.float32(2.0) * ndd * nz_r) / hits.norm.ravel()[ridx]
        spec_r = spec.ravel()[ridx]
        refl = [spec_r * r for r in sky_radiance(params, r_el)]
    sidx = np.flatnonzero(hits.sky.ravel())
    sky = sky_radiance(params, hits.dz.ravel()[sidx] / hits.norm.ravel()[sidx])
    if hits.cloud is not None:
        cloud_rgb = (0.85, 0.86, 0.88) if params.sun_rgb[0] > 0 else (0.03, 0.028, 0.026)
        cl = hits.cloud.ravel()[sidx]
        sky = [v + (np.float32(c) - v) * cl for v, c in zip(sky, cloud_rgb)]
    tau = np.exp(-np.float32(params.fog_beta) * hits.dist)
    one_minus_tau = np.float32(1.0) - tau
    out = np.empty((3,) + mat.shape, dtype=np.float32)
    tints = (COL_R, COL_G, COL_B)
    mcols = (M_R, M_G, M_B)
    for ch in range(3):
        albedo = MATERIAL_TABLE[mcols[ch]].take(mat) * hits.object_values(tints[ch], 1.0)
        albedo *= tex
        irr = np.float32(params.sun_rgb[ch]) * ndl + np.float32(params.sky_rgb[ch]) * hemi
        if lamp_irradiance is not None:
            irr += lamp_irradiance
        c = albedo * irr
        if refl is not None:
            c.ravel()[ridx] += refl[ch]
        if params.lights_on:
            c += EMISSION[ch].take(mat) * hits.lit
        c *= tau
        c += np.float32(params.fog_rgb[ch]) * one_minus_tau
        c.ravel()[sidx] = sky[ch]
        out[ch] = c
    return out


def shade_thermal(hits: Hits, params: ScenarioParams) -> np.ndarray:
    """Apparent temperature (...) float32 in kelvin of a block of hits."""
    mat = hits.mat
    surf = hits.surf
    table = MATERIAL_TABLE
    blend = np.float32(params.temp_blend)
    t_night = table[M_TNIGHT].take(mat)
    t_mat = t_night + blend * (table[M_TDAY].take(mat) - t_night)
    air_ref = np.float32(10.0 + 14.0 * params.temp_blend)  # the air temperature the table values assume
    pulled = np.float32(params.air_c) + np.float32(params.contrast) * (t_mat - air_ref)
    temp = pulled + table[M_INTRINSIC].take(mat) * (t_mat - pulled)  # intrinsic (0/1): own heat source
    temp += hits.object_values(COL_TOFF, 0.0)
    if params.solar_scale > 0:
        sun = params.sun
        ndl = np.clip(surf.nx * np.float32(sun[0]) + surf.ny * np.float32(sun[1]) + surf.nz * np.float32(sun[2]),
                      np.float32(0.0), np.float32(1.0))
        if hits.sunlit is not None:
            ndl *= hits.sunlit  # shaded ground does not heat up
        temp += np.float32(params.solar_scale) * table[M_SOLAR].take(mat) * (ndl - np.float32(0.5))
    temp += table[M_TTEX].take(mat) * hits.tex * np.float32(0.6) - np.float32(0.6) * hits.mortar
    temp += hits.engine
    if params.lights_on:
        temp += EMISSION_HEAT.take(mat) * hits.lit
    t_k = temp + np.float32(KELVIN)
    # Reflected surroundings: cold sky for up-facing surfaces, air-temperature scene at the sides.
    sky_mean = np.float32(0.5 * (params.sky_zenith_c + params.sky_horizon_c) + KELVIN)
    air_k = np.float32(params.air_c + KELVIN)
    up = np.float32(0.5) + np.float32(0.5) * surf.nz  # nz is within [-1, 1]
    refl_k = air_k + (sky_mean - air_k) * up
    eps = table[M_EMISS].take(mat)
    t2, r2 = t_k * t_k, refl_k * refl_k
    app = np.sqrt(np.sqrt(eps * t2 * t2 + (np.float32(1.0) - eps) * r2 * r2))
    tau = np.exp(-np.float32(params.thermal_beta) * hits.dist)
    app = app * tau + air_k * (np.float32(1.0) - tau)
    sidx = np.flatnonzero(hits.sky.ravel())
    elev = np.maximum(hits.dz.ravel()[sidx] / hits.norm.ravel()[sidx], np.float32(0.0))
    sky_t = (np.float32(params.sky_horizon_c + KELVIN)
             + np.float32(params.sky_zenith_c - params.sky_horizon_c) * np.sqrt(elev))
    if hits.cloud is not None:
        # Clouds are far warmer than the clear sky in LWIR (low clouds: a few K below the air).
        sky_t = sky_t + (air_k - np.float32(6.0) - sky_t) * hits.cloud.ravel()[sidx]
    app.ravel()[sidx] = sky_t
    return app


@dataclass
class SceneTables:
    """Per-id tables of a primitive set, ground and sky ids included (see ``raycast.padded_params``)."""

    params32: np.ndarray  # (N_COLS, P + 2) float32 columns (raycast.padded_params)
    kinds: np.ndarray
    mat: np.ndarray


LAMP_RADIUS_M = 11.0  # beyond this a street lamp's light is negligible (smoothly windowed to 0)
LAMP_INTENSITY = 7.0


def lamp_irradiance_block(lamps: list[tuple[tuple[float, float, float], slice, slice]], hits: Hits) -> np.ndarray:
    """Irradiance float32 (shape of the block) from street lamps (point lights, no shadows).

    Args:
        lamps: (position, rows, cols): each lamp with the sub-block of ``hits`` its light can reach.
        hits: a 2-D block of hits.
    """
    out = np.zeros(hits.prim.shape, dtype=np.float32)
    surf = hits.surf
    inv_r2 = np.float32(1.0 / LAMP_RADIUS_M**2)
    for (lx, ly, lz), rs, cs in lamps:
        sl = (rs, cs)
        vx = np.float32(lx) - hits.px[sl]
        vy = np.float32(ly) - hits.py[sl]
        vz = np.float32(lz) - hits.pz[sl]
        d2 = vx * vx + vy * vy + vz * vz
        ndl = surf.nx[sl] * vx + surf.ny[sl] * vy + surf.nz[sl] * vz
        window = np.maximum(np.float32(1.0) - d2 * inv_r2, np.float32(0.0))
        out[sl] += np.float32(LAMP_INTENSITY) * np.maximum(ndl, np.float32(0.0)) * window * window / (
            d2 * np.sqrt(d2) + np.float32(0.5))
    out[hits.sky] = 0.0
    return out
