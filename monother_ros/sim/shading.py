"""Materials, scenario lighting and the per-pixel appearance models (visible radiance and temperature).

Both models work on any block of hit points (the renderer passes bands of image rows so that the
temporaries stay in cache). Radiance is linear, relative to a white surface in full daylight; temperature
is the apparent (radiometric) temperature in kelvin seen by a long-wave infrared camera.

Thermal model: every material has a day and a night temperature; by day sun-facing surfaces gain
``solar * cos(sun angle)`` kelvin; the emitted radiance mixes the surface's own (emissivity e) with the
reflected surroundings (1 - e: sky above, air-temperature surroundings at the side), in T^4; the air
path attenuates towards the air temperature. People, engines, lit windows and lamps are warm at night,
the sky is cold, and sun-heated asphalt dominates by day.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

from monother_ros.sim.raycast import Surface
from monother_ros.sim.scene import (
    COL_AUX, COL_B, COL_G, COL_HASH, COL_HX, COL_HY, COL_LIT, COL_R, COL_TOFF, COL_WIN_FRAC, COL_WIN_SX,
    COL_WIN_SZ, COL_Z0, COL_Z1, FIRST_OBJECT, GROUND_ID, SKY_ID, Mat,
)

Scenario = Literal["day", "night", "fog"]
SCENARIOS: tuple[str, ...] = ("day", "night", "fog")
KELVIN = 273.15

# Per-material table. Columns: albedo r, g, b (linear); texture amplitude; texture scale (m);
# T day, T night (deg C); solar gain (K at normal sun); emissivity; thermal texture (K); LiDAR
# reflectivity (0-1); specular sky reflection; intrinsic (1: own heat source, not pulled to air temp).
_MATERIALS: dict[int, tuple[float, ...]] = {
    Mat.SKY:          (0.0, 0.0, 0.0, 0.0, 1.0, -20, -30, 0, 1.00, 0.0, 0.00, 0.0, 0),
    Mat.ASPHALT:      (0.085, 0.085, 0.09, 0.45, 0.35, 33, 13, 14, 0.95, 1.6, 0.10, 0.0, 0),
    Mat.PAINT:        (0.70, 0.70, 0.66, 0.15, 0.40, 28, 11, 8, 0.92, 0.5, 0.90, 0.0, 0),
    Mat.CONCRETE:     (0.40, 0.38, 0.35, 0.30, 0.50, 29, 11, 10, 0.93, 1.2, 0.35, 0.0, 0),
    Mat.GRASS:        (0.08, 0.20, 0.045, 0.65, 0.30, 24, 4, 4, 0.98, 2.0, 0.45, 0.0, 0),
    Mat.BRICK:        (0.40, 0.16, 0.09, 0.35, 0.80, 22, 12, 12, 0.93, 1.0, 0.30, 0.0, 0),
    Mat.PLASTER:      (0.58, 0.55, 0.48, 0.25, 1.50, 22, 11, 10, 0.92, 0.8, 0.50, 0.0, 0),
    Mat.GLASS_FACADE: (0.10, 0.13, 0.16, 0.10, 2.00, 20, 12, 4, 0.85, 0.5, 0.15, 0.35, 0),
    Mat.ROOF:         (0.18, 0.18, 0.18, 0.30, 1.00, 40, 7, 20, 0.93, 1.5, 0.20, 0.0, 0),
    Mat.CAR_PAINT:    (0.90, 0.90, 0.90, 0.06, 0.50, 31, 8, 15, 0.85, 0.3, 0.60, 0.12, 0),
    Mat.CAR_GLASS:    (0.04, 0.05, 0.06, 0.05, 0.50, 25, 6, 6, 0.85, 0.2, 0.10, 0.45, 0),
    Mat.TIRE:         (0.03, 0.03, 0.03, 0.10, 0.20, 30, 10, 6, 0.95, 0.3, 0.05, 0.0, 0),
    Mat.CLOTHING:     (0.80, 0.80, 0.80, 0.25, 0.08, 31, 27, 3, 0.97, 0.8, 0.40, 0.0, 1),
    Mat.SKIN:         (0.60, 0.44, 0.35, 0.10, 0.05, 34.5, 33.5, 1, 0.98, 0.3, 0.40, 0.0, 1),
    Mat.BARK:         (0.14, 0.10, 0.06, 0.40, 0.10, 23, 9, 4, 0.95, 0.8, 0.30, 0.0, 0),
    Mat.FOLIAGE:      (0.05, 0.15, 0.04, 0.70, 0.25, 21, 6, 2, 0.97, 1.5, 0.40, 0.0, 0),
    Mat.METAL:        (0.50, 0.50, 0.50, 0.10, 0.30, 30, 7, 12, 0.30, 0.3, 0.70, 0.25, 0),
    Mat.LAMP:         (0.80, 0.80, 0.75, 0.05, 0.30, 30, 8, 8, 0.90, 0.2, 0.50, 0.0, 0),
    Mat.WOOD:         (0.33, 0.21, 0.11, 0.35, 0.10, 27, 8, 8, 0.93, 0.8, 0.30, 0.0, 0),
    Mat.HEADLIGHT:    (0.85, 0.85, 0.85, 0.00, 0.50, 30, 8, 4, 0.90, 0.0, 0.80, 0.3, 0),
    Mat.TAILLIGHT:    (0.45, 0.04, 0.04, 0.00, 0.50, 30, 8, 4, 0.90, 0.0, 0.60, 0.3, 0),
    Mat.WINDOW:       (0.06, 0.08, 0.10, 0.08, 1.00, 19, 14, 3, 0.85, 0.3, 0.10, 0.45, 0),
    Mat.ENGINE:       (0.04, 0.04, 0.04, 0.10, 0.20, 31, 8, 10, 0.95, 0.3, 0.20, 0.0, 0),
    Mat.CURB:         (0.50, 0.50, 0.48, 0.25, 0.30, 30, 11, 10, 0.93, 1.0, 0.40, 0.0, 0),
}
MATERIAL_TABLE = np.array([_MATERIALS[m] for m in range(Mat.COUNT)], dtype=np.float32).T.copy()
(M_R, M_G, M_B, M_TEX, M_SCALE, M_TDAY, M_TNIGHT, M_SOLAR, M_EMISS, M_TTEX, M_REFL, M_SPEC,
 M_INTRINSIC) = range(13)
LIDAR_REFLECTIVITY = MATERIAL_TABLE[M_REFL]


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


def _sun(azimuth_deg: float, elevation_deg: float) -> tuple[float, float, float]:
    a, e = math.radians(azimuth_deg), math.radians(elevation_deg)
    return (math.cos(e) * math.cos(a), math.cos(e) * math.sin(a), math.sin(e))


SCENARIO_PARAMS: dict[str, ScenarioParams] = {
    "day": ScenarioParams(
        "day", _sun(35.0, 38.0), (1.0, 0.96, 0.88), (0.30, 0.34, 0.42), (0.72, 0.80, 0.90), (0.30, 0.48, 0.82),
        (0.70, 0.76, 0.85), 0.0025, 1.0, 0.004, 0.0004, False,
        24.0, 1.0, 1.0, 1.0, -25.0, 5.0, 0.002),
    "night": ScenarioParams(
        "night", _sun(35.0, -30.0), (0.0, 0.0, 0.0), (0.010, 0.011, 0.016), (0.012, 0.011, 0.012),
        (0.002, 0.003, 0.007), (0.010, 0.009, 0.009), 0.002, 6.0, 0.025, 0.004, True,
        10.0, 0.0, 1.0, 0.0, -35.0, -5.0, 0.002),
    "fog": ScenarioParams(
        "fog", _sun(35.0, 20.0), (0.0, 0.0, 0.0), (0.62, 0.64, 0.66), (0.66, 0.68, 0.70), (0.62, 0.64, 0.67),
        (0.66, 0.68, 0.70), 0.055, 1.05, 0.006, 0.0006, True,
        8.0, 0.35, 0.5, 0.0, 4.0, 7.0, 0.012),
}


def make_noise_tile(size: int = 256, seed: int = 12345) -> np.ndarray:
    """(size, size) float32 tileable fractal value noise in [0, 1], mean ~0.5."""
    rng = np.random.default_rng(seed)
    out = np.zeros((size, size), dtype=np.float64)
    total = 0.0
    cells, amp = 4, 1.0
    while cells <= size:
        grid = rng.uniform(0, 1, (cells, cells))
        coords = np.arange(size) * cells / size
        i0 = np.floor(coords).astype(int)
        f = coords - i0
        f = f * f * (3 - 2 * f)  # smoothstep: no visible grid creases
        i1 = (i0 + 1) % cells
        rows = grid[i0] * (1 - f)[:, None] + grid[i1] * f[:, None]
        layer = rows[:, i0] * (1 - f)[None, :] + rows[:, i1] * f[None, :]
        out += amp * layer
        total += amp
        cells *= 2
        amp *= 0.6
    out /= total
    out = (out - out.min()) / (out.max() - out.min())
    return out.astype(np.float32)


def _sample_bilinear(tile: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    size = tile.shape[0]
    mask = size - 1
    flat = tile.ravel()
    fu, fv = np.floor(u), np.floor(v)
    au, av = u - fu, v - fv
    iu = fu.astype(np.int64) & mask
    iv = fv.astype(np.int64) & mask
    iu1 = (iu + 1) & mask
    row0, row1 = iv * size, ((iv + 1) & mask) * size
    top = flat[row0 + iu] * (1 - au) + flat[row0 + iu1] * au
    bottom = flat[row1 + iu] * (1 - au) + flat[row1 + iu1] * au
    return top * (1 - av) + bottom * av


def _sample_nearest(tile: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    size = tile.shape[0]
    mask = size - 1
    return tile.ravel()[(v.astype(np.int64) & mask) * size + (u.astype(np.int64) & mask)]


def _hash01(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Deterministic per-cell pseudo-random number in [0, 1) from integer cell coordinates."""
    h = (a.astype(np.int64) * 73856093) ^ (b.astype(np.int64) * 19349663) ^ (c.astype(np.int64) * 83492791)
    h = (h ^ (h >> 13)) * 1274126177
    return ((h >> 8) & 1023).astype(np.float32) / np.float32(1024.0)


@dataclass
class Hits:
    """A block of shaded rays (all arrays of one shape).

    Attributes:
        prim: int32 primitive ids; t: float32 ray parameter (inf = sky); dist: float32 distance, metres;
        dx, dy, dz: float32 world ray directions; norm: float32 their length; px, py, pz: float32 hit
        points (garbage where sky); surf: normals and local coordinates; mat: int16 material ids after
        pattern overrides; footprint: float32 metres covered by one pixel on the surface.
    """

    prim: np.ndarray
    t: np.ndarray
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
    footprint: np.ndarray
    sky: np.ndarray
    tex: np.ndarray
    window: np.ndarray
    lit: np.ndarray
    mortar: np.ndarray
    engine: np.ndarray


def _fade(footprint: np.ndarray, size: float) -> np.ndarray:
    """1 where a pattern of feature ``size`` metres is resolved, falling to 0 where a pixel covers it."""
    return np.clip(np.float32(1.5) - footprint * np.float32(2.0 / size), 0.0, 1.0)


def classify(hits_prim: np.ndarray, t: np.ndarray, dx: np.ndarray, dy: np.ndarray, dz: np.ndarray,
             norm: np.ndarray, origin: np.ndarray, focal_px: float, surf_fn, ground_fn, mat_of_prim: np.ndarray,
             tile: np.ndarray) -> Hits:
    """Hit points, normals, material ids (with windows, roofs, car details) and surface texture.

    Args:
        hits_prim, t: from ``raycast.trace`` (a block of rows).
        dx, dy, dz, norm: the block's ray directions and their lengths.
        origin: (3,) ray origin (world).
        focal_px: focal length in pixels (for the pixel footprint that fades fine patterns).
        surf_fn: ``(prim, px, py, pz) -> Surface``; ground_fn: ``(x, y) -> material ids``.
        mat_of_prim: (P + 2,) int16 material of every id (ground and sky included).
        tile: noise tile from ``make_noise_tile``.
    """
    sky = hits_prim == SKY_ID
    tt = np.where(sky, np.float32(0.0), t)
    px = np.float32(origin[0]) + tt * dx
    py = np.float32(origin[1]) + tt * dy
    pz = np.float32(origin[2]) + tt * dz
    pz = np.where(hits_prim == GROUND_ID, np.float32(0.0), pz)
    dist = tt * norm
    surf = surf_fn(hits_prim, px, py, pz)
    mat = mat_of_prim[hits_prim]
    ground = hits_prim == GROUND_ID
    if ground.any():
        mat = np.where(ground, ground_fn(px, py), mat)
    cos_inc = np.abs(surf.nx * dx + surf.ny * dy + surf.nz * dz) / norm
    footprint = dist / (np.float32(focal_px) * np.maximum(cos_inc, np.float32(0.12)))
    rows = surf.rows
    vertical = np.abs(surf.nz) < 0.5
    # Face coordinates: s along the face (from the object's corner for windows), w up the face.
    s = np.where(surf.on_x, surf.ly + rows[..., COL_HY], surf.lx + rows[..., COL_HX])
    s = np.where(vertical, s, surf.lx)
    w = np.where(vertical, pz, surf.ly)
    # Surface texture: two octaves of the noise tile, the fine one faded out where a pixel spans it.
    scale = MATERIAL_TABLE[M_SCALE][mat]
    inv = np.float32(1.0) / scale
    h = rows[..., COL_HASH]
    off = np.mod(h, np.float32(256.0))
    tex = _sample_bilinear(tile, s * inv + off, w * inv + off * np.float32(0.37)) - np.float32(0.5)
    fine = _sample_nearest(tile, s * inv * np.float32(5.0) + off, w * inv * np.float32(5.0)) - np.float32(0.5)
    tex += np.float32(0.6) * _fade(footprint, 0.4 * float(np.median(scale)) if scale.size else 0.1) * fine
    tex *= _fade(footprint, 2.0) * np.float32(0.7) + np.float32(0.3)

    is_obj = hits_prim >= FIRST_OBJECT
    building = is_obj & ((mat == Mat.BRICK) | (mat == Mat.PLASTER) | (mat == Mat.GLASS_FACADE))
    window = np.zeros(mat.shape, dtype=np.float32)
    lit = np.zeros(mat.shape, dtype=bool)
    mortar = np.zeros(mat.shape, dtype=np.float32)
    engine = np.zeros(mat.shape, dtype=np.float32)
    if building.any():
        roof = building & (surf.nz > 0.5)
        mat = np.where(roof, np.int16(Mat.ROOF), mat)
        wall = building & vertical
        sx, sz, frac = rows[..., COL_WIN_SX], rows[..., COL_WIN_SZ], rows[..., COL_WIN_FRAC]
        with np.errstate(divide="ignore", invalid="ignore"):
            cs = s / sx
            cw = (w - np.float32(0.6)) / sz
        fs, fw = cs - np.floor(cs), cw - np.floor(cw)
        upper = (w > 3.4) & (w < rows[..., COL_Z1] - 0.7)
        shop = (w > 0.5) & (w < 2.8)
        in_win = (np.abs(fs - 0.5) < 0.5 * frac) & ((upper & (fw > 0.3) & (fw < 0.85)) | shop)
        sharp = _fade(footprint, 0.8)
        window = np.where(wall, sharp * in_win + (1 - sharp) * frac * np.float32(0.45), np.float32(0.0))
        lit = wall & in_win & (_hash01(np.floor(cs), np.floor(cw), h) < rows[..., COL_LIT])
        brick = wall & (mat == Mat.BRICK)
        if brick.any():
            course = w * np.float32(1.0 / 0.15)
            row_i = np.floor(course)
            along = s * np.float32(1.0 / 0.4) + np.float32(0.5) * np.mod(row_i, 2)
            line = ((course - row_i) < 0.14) | ((along - np.floor(along)) < 0.06)
            sharp_b = _fade(footprint, 0.15)
            mortar = np.where(brick, sharp_b * line + (1 - sharp_b) * np.float32(0.2), mortar)
    paving = (mat == Mat.CONCRETE) & (hits_prim == GROUND_ID)
    if paving.any():
        gx, gy = px * np.float32(1.0 / 0.6), py * np.float32(1.0 / 0.6)
        line = ((gx - np.floor(gx)) < 0.05) | ((gy - np.floor(gy)) < 0.05)
        sharp_p = _fade(footprint, 0.3)
        mortar = np.where(paving, sharp_p * line + (1 - sharp_p) * np.float32(0.1), mortar)
    car = mat == Mat.CAR_PAINT
    if car.any():
        hx, hy, z0 = rows[..., COL_HX], rows[..., COL_HY], rows[..., COL_Z0]
        zrel = pz - z0
        front = car & surf.on_x & (surf.lx > 0)
        rear = car & surf.on_x & (surf.lx < 0)
        lamp_band = (np.abs(surf.ly) > hy - 0.45) & (np.abs(surf.ly) < hy - 0.1) & (zrel > 0.38) & (zrel < 0.55)
        grille = (np.abs(surf.ly) < hy - 0.5) & (zrel > 0.15) & (zrel < 0.45)
        wheel = car & surf.on_y & (np.abs(np.abs(surf.lx) - (hx - 0.85)) < 0.34) & (zrel < 0.42)
        mat = np.where(front & lamp_band, np.int16(Mat.HEADLIGHT), mat)
        mat = np.where(rear & lamp_band, np.int16(Mat.TAILLIGHT), mat)
        mat = np.where(front & grille, np.int16(Mat.ENGINE), mat)
        mat = np.where(wheel, np.int16(Mat.TIRE), mat)
        hood = car & (surf.nz > 0.5) & (surf.lx > 0.3 * hx)
        engine = np.where((front & grille) | hood, rows[..., COL_AUX], np.float32(0.0))
        engine = np.where(wheel, rows[..., COL_AUX] * np.float32(0.3), engine)
        lit = lit | ((mat == Mat.HEADLIGHT) | (mat == Mat.TAILLIGHT)) & (rows[..., COL_LIT] > 0.5)
    lamp = mat == Mat.LAMP
    if lamp.any():
        lit = lit | (lamp & (rows[..., COL_AUX] > 0.5) & (surf.nz < -0.5))
    mat = np.where(window > 0.5, np.int16(Mat.WINDOW), mat)
    return Hits(hits_prim, t, dist, dx, dy, dz, norm, px, py, pz, surf, mat, footprint, sky, tex, window, lit,
                mortar, engine)


def sky_radiance(params: ScenarioParams, elevation: np.ndarray) -> list[np.ndarray]:
    """Linear RGB of the sky for rays of sine-elevation ``elevation`` (float32 array)."""
    k = np.sqrt(np.clip(elevation, 0.0, 1.0))
    return [np.float32(h) + (np.float32(z) - np.float32(h)) * k for h, z in zip(params.sky_horizon, params.sky_zenith)]


def shade_rgb(hits: Hits, params: ScenarioParams, lamp_irradiance: np.ndarray | None) -> np.ndarray:
    """Linear RGB radiance (3, ...) float32 of a block of hits (before the camera's exposure)."""
    mat = hits.mat
    surf = hits.surf
    rows = surf.rows
    is_obj = hits.prim >= FIRST_OBJECT
    sun = params.sun
    ndl = np.maximum(surf.nx * np.float32(sun[0]) + surf.ny * np.float32(sun[1]) + surf.nz * np.float32(sun[2]),
                     np.float32(0.0))
    hemi = np.float32(0.6) + np.float32(0.4) * surf.nz
    tex = np.float32(1.0) + MATERIAL_TABLE[M_TEX][mat] * hits.tex * np.float32(2.0)
    tex *= np.float32(1.0) - np.float32(0.45) * hits.mortar
    spec = MATERIAL_TABLE[M_SPEC][mat]
    # Reflected view ray (for glass and paint): r = d - 2 (n.d) n; only its elevation matters here.
    ndd = surf.nx * hits.dx + surf.ny * hits.dy + surf.nz * hits.dz
    r_el = (hits.dz - np.float32(2.0) * ndd * surf.nz) / hits.norm
    refl = sky_radiance(params, r_el)
    elev = hits.dz / hits.norm
    sky = sky_radiance(params, elev)
    tau = np.exp(-np.float32(params.fog_beta) * hits.dist)
    lights = params.lights_on
    out = np.empty((3,) + mat.shape, dtype=np.float32)
    tints = (COL_R, COL_G, COL_B)
    mcols = (M_R, M_G, M_B)
    emis_lit = {0: (2.5, 2.0, 1.1, 0.02), 1: (2.2, 1.6, 0.8, 0.02), 2: (1.2, 0.7, 0.35, 0.02)}
    for ch in range(3):
        albedo = MATERIAL_TABLE[mcols[ch]][mat] * np.where(is_obj, rows[..., tints[ch]], np.float32(1.0)) * tex
        irr = np.float32(params.sun_rgb[ch]) * ndl + np.float32(params.sky_rgb[ch]) * hemi
        if lamp_irradiance is not None:
            irr = irr + lamp_irradiance
        c = albedo * irr + spec * refl[ch]
        if lights:
            # Emitters: lit windows (warm), headlights (white), tail lights (red), lamp heads.
            emit = np.where(hits.lit & (mat == Mat.WINDOW), np.float32(emis_lit[0][ch] * 0.4), np.float32(0.0))
            emit = np.where(hits.lit & (mat == Mat.HEADLIGHT), np.float32((40.0, 38.0, 32.0)[ch]), emit)
            emit = np.where(hits.lit & (mat == Mat.TAILLIGHT), np.float32((8.0, 0.4, 0.3)[ch]), emit)
            emit = np.where(hits.lit & (mat == Mat.LAMP), np.float32((60.0, 48.0, 30.0)[ch]), emit)
            c = c + emit
        c = c * tau + np.float32(params.fog_rgb[ch]) * (np.float32(1.0) - tau)
        out[ch] = np.where(hits.sky, sky[ch], c)
    return out


def shade_thermal(hits: Hits, params: ScenarioParams) -> np.ndarray:
    """Apparent temperature (...) float32 in kelvin of a block of hits."""
    mat = hits.mat
    surf = hits.surf
    rows = surf.rows
    is_obj = hits.prim >= FIRST_OBJECT
    table = MATERIAL_TABLE
    blend = np.float32(params.temp_blend)
    t_mat = table[M_TNIGHT][mat] + blend * (table[M_TDAY][mat] - table[M_TNIGHT][mat])
    air_ref = np.float32(10.0 + 14.0 * params.temp_blend)  # the air temperature the table values assume
    pulled = np.float32(params.air_c) + np.float32(params.contrast) * (t_mat - air_ref)
    temp = np.where(table[M_INTRINSIC][mat] > 0.5, t_mat, pulled)
    temp = temp + np.where(is_obj, rows[..., COL_TOFF], np.float32(0.0))
    if params.solar_scale > 0:
        sun = params.sun
        ndl = np.maximum(surf.nx * np.float32(sun[0]) + surf.ny * np.float32(sun[1]) + surf.nz * np.float32(sun[2]),
                         np.float32(0.0))
        temp = temp + np.float32(params.solar_scale) * table[M_SOLAR][mat] * (ndl - np.float32(0.5))
    temp = temp + table[M_TTEX][mat] * hits.tex * np.float32(2.0) - np.float32(0.6) * hits.mortar
    temp = temp + hits.engine
    if params.lights_on:
        # Heat leaking through lit windows, hot lamp heads, warm head/tail lights.
        temp = temp + np.where(hits.lit & (mat == Mat.WINDOW), np.float32(4.0), np.float32(0.0))
        temp = temp + np.where(hits.lit & (mat == Mat.LAMP), np.float32(35.0), np.float32(0.0))
        temp = temp + np.where(hits.lit & (mat == Mat.HEADLIGHT), np.float32(12.0), np.float32(0.0))
    t_k = temp + np.float32(KELVIN)
    # Reflected surroundings: cold sky for up-facing surfaces, air-temperature scene at the sides.
    sky_mean = np.float32(0.5 * (params.sky_zenith_c + params.sky_horizon_c) + KELVIN)
    air_k = np.float32(params.air_c + KELVIN)
    up = np.clip(np.float32(0.5) + np.float32(0.5) * surf.nz, 0.0, 1.0)
    refl_k = air_k + (sky_mean - air_k) * up
    eps = table[M_EMISS][mat]
    t2, r2 = t_k * t_k, refl_k * refl_k
    app = np.sqrt(np.sqrt(eps * t2 * t2 + (np.float32(1.0) - eps) * r2 * r2))
    tau = np.exp(-np.float32(params.thermal_beta) * hits.dist)
    app = app * tau + air_k * (np.float32(1.0) - tau)
    elev = np.clip(hits.dz / hits.norm, 0.0, 1.0)
    sky_t = np.float32(params.sky_horizon_c + KELVIN) + np.float32(params.sky_zenith_c - params.sky_horizon_c) * np.sqrt(elev)
    return np.where(hits.sky, sky_t, app)


LAMP_RADIUS_M = 18.0  # beyond this a street lamp's light is negligible (smoothly windowed to 0)
LAMP_INTENSITY = 6.0


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
