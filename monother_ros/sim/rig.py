"""The simulated thermal + RGB + LiDAR rig: cameras, extrinsics, sensor models, timing.

Frames (REP 103 / 105): ``base_link`` (x forward, y left, z up) moves along the trajectory; the cameras'
optical frames (z forward, x right, y down) and ``lidar_link`` (x forward, z up) are rigidly mounted on
it. Transforms are 4x4 float64, ``T_a_b`` maps points of frame b into frame a (p_a = T_a_b @ p_b).

Sensor models:
- thermal: 640x512, HFOV ~50 deg; counts (uint16, ``mono16``) = ``COUNTS_AT_0C + COUNTS_PER_K * T`` of
  the apparent temperature T (deg C), then per-pixel gain and offset fixed-pattern noise plus column
  stripes (seeded per camera, constant over time), radial vignetting (gain fall-off and an additive
  housing term), and temporal noise (NETD ~60 mK) with per-frame row noise.
- RGB: 1280x720, HFOV ~70 deg, ``rgb8``: linear radiance x exposure, vignetting, glare around bright
  lights, shot + read noise, sRGB-like gamma.
- LiDAR: 16 beams from -15 to +15 deg, 0.2 deg azimuth steps, 80 m, 1 cm range noise, 2 % dropouts.
Rendering at a reduced size is done by passing a resized camera (``camera.resized(w, h)``).
"""
from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass
from typing import Callable, Literal

import numpy as np

from monother_ros.core.camera import PinholeCamera
from monother_ros.core.se3 import OPTICAL_FROM_BODY_ROTATION, invert, make_transform, rotation_about_axis
from monother_ros.sim import raycast, shading
from monother_ros.sim.scene import FAMILIES, GROUND_ID, Family, Mat, Primitives, Scene
from monother_ros.sim.shading import SCENARIO_PARAMS, SCENARIOS, Scenario
from monother_ros.sim.shadows import GroundShadows
from monother_ros.sim.trajectory import Trajectory

BASE_FRAME = "base_link"
THERMAL_FRAME = "thermal_optical_frame"
RGB_FRAME = "rgb_optical_frame"
LIDAR_FRAME = "lidar_link"

MAX_DEPTH_M = 80.0  # ground truth (and LiDAR) range; farther is NaN / no return
DRAW_DISTANCE_M = 220.0  # the renderer still draws beyond the GT range, up to this distance
THERMAL_RATE_HZ = 30.0
RGB_RATE_HZ = 20.0
LIDAR_RATE_HZ = 10.0
RGB_OFFSET_S = 0.008  # RGB exposures sit between thermal stamps: +-3 ms jitter keeps them >= 5 ms apart
RGB_JITTER_S = 0.003
LIDAR_OFFSET_S = 0.025

COUNTS_AT_0C = 7600.0
COUNTS_PER_K = 40.0
THERMAL_NOISE_COUNTS = 2.4
LIDAR_BEAMS = 16
LIDAR_COLUMNS = 1800
LIDAR_RANGE_NOISE_M = 0.01
LIDAR_DROPOUT = 0.02
_NOISE_BANK_SIZE = 1 << 23
_BAND_PIXELS = 32768  # shading works on bands of rows this large (temporaries stay in the CPU cache)
_KIND_CODE = {"thermal": 1, "rgb": 2, "lidar": 3}


@dataclass(frozen=True)
class ThermalFrame:
    """One thermal image. counts: (H, W) uint16 mono16 counts; depth: (H, W) float32 optical z-depth in
    metres, NaN for sky / beyond ``MAX_DEPTH_M``; t: time, seconds."""

    counts: np.ndarray
    depth: np.ndarray
    t: float


@dataclass(frozen=True)
class RgbFrame:
    """One RGB image. rgb: (H, W, 3) uint8; depth: (H, W) float32 optical z-depth, metres (NaN invalid)."""

    rgb: np.ndarray
    depth: np.ndarray
    t: float


@dataclass(frozen=True)
class SensorEvent:
    """A sensor sample time. stamp_ns: nanoseconds since the start of the simulation; kind: which sensor."""

    stamp_ns: int
    kind: Literal["thermal", "rgb", "lidar"]

    @property
    def t(self) -> float:
        return self.stamp_ns * 1e-9


def _optical_mount(translation: tuple[float, float, float], yaw_deg: float, pitch_down_deg: float,
                   roll_deg: float) -> np.ndarray:
    """T_base_optical of a camera at ``translation`` looking forward, turned by small angles."""
    R_body = (rotation_about_axis(np.array([0.0, 0.0, 1.0]), math.radians(yaw_deg))
              @ rotation_about_axis(np.array([0.0, 1.0, 0.0]), math.radians(pitch_down_deg))
              @ rotation_about_axis(np.array([1.0, 0.0, 0.0]), math.radians(roll_deg)))
    return make_transform(R_body @ OPTICAL_FROM_BODY_ROTATION.T, np.array(translation))


class SimRig:
    """A seeded, deterministic simulated rig.

    Args:
        seed: scene / trajectory / noise seed.
        scenario: ``"day"``, ``"night"`` or ``"fog"``.
        family: ``"urban"`` or ``"campus"``.

    Attributes:
        thermal_camera, rgb_camera: ``PinholeCamera`` intrinsics (640x512 ~50 deg; 1280x720 ~70 deg).
        T_base_thermal, T_base_rgb, T_base_lidar: (4, 4) child frames in base_link.
        T_rgb_thermal: (4, 4) p_rgb = T_rgb_thermal @ p_thermal.
    """

    BASE_FRAME = BASE_FRAME
    THERMAL_FRAME = THERMAL_FRAME
    RGB_FRAME = RGB_FRAME
    LIDAR_FRAME = LIDAR_FRAME

    def __init__(self, seed: int, scenario: Scenario = "day", family: Family = "urban") -> None:
        if scenario not in SCENARIOS:
            raise ValueError(f"unknown scenario {scenario!r}; expected one of {SCENARIOS}")
        if family not in FAMILIES:
            raise ValueError(f"unknown scene family {family!r}; expected one of {FAMILIES}")
        self.seed = int(seed)
        self.scenario = scenario
        self.family = family
        params = SCENARIO_PARAMS[scenario]
        if params.solar_scale > 0:
            # The sun's position varies with the seed (time of day / street orientation): shadows then fall
            # into the street for some seeds and beside it for others.
            sun_rng = np.random.default_rng([abs(self.seed), 31337])
            params = dataclasses.replace(params, sun=shading.sun_direction(
                float(sun_rng.uniform(-70.0, 70.0)), float(sun_rng.uniform(32.0, 62.0))))
        self.params = params
        self.scene = Scene(self.seed, family)
        self.trajectory = Trajectory.for_family(family, self.seed)
        # Calibrated-looking intrinsics: principal points off centre, slightly non-square RGB pixels.
        th = PinholeCamera.from_hfov(640, 512, 50.0)
        self.thermal_camera = PinholeCamera(640, 512, th.fx, th.fx, th.cx + 3.2, th.cy - 2.1)
        rgb = PinholeCamera.from_hfov(1280, 720, 70.0)
        self.rgb_camera = PinholeCamera(1280, 720, rgb.fx, rgb.fx * 1.002, rgb.cx - 4.5, rgb.cy + 3.0)
        self.T_base_thermal = _optical_mount((1.20, 0.035, 1.25), 0.0, 2.0, 0.0)
        self.T_base_rgb = _optical_mount((1.21, -0.030, 1.27), 1.3, 1.2, 0.5)
        self.T_base_lidar = make_transform(rotation_about_axis(np.array([0.0, 0.0, 1.0]), math.radians(0.7)),
                                           np.array([0.9, 0.0, 1.75]))
        self.T_rgb_thermal = invert(self.T_base_rgb) @ self.T_base_thermal
        self._tile = shading.make_noise_tile()
        self._bank = _noise_bank(self.seed)
        self._fpn: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}
        self._response: dict[tuple[str, PinholeCamera], object] = {}
        # Cast shadows on the ground where the sun shines (day).
        sun_on = self.params.solar_scale > 0 or max(self.params.sun_rgb) > 0
        self._shadows = GroundShadows(self.scene, self.params.sun) if sun_on else None
        # Cloud cover varies with the seed; in fog the sky is the fog itself.
        self._cloud_cover = 0.0 if scenario == "fog" else float(
            np.random.default_rng([abs(self.seed), 4711]).uniform(0.1, 0.6))
        el = np.radians(np.linspace(-15.0, 15.0, LIDAR_BEAMS))
        self._lidar_az = (np.arange(LIDAR_COLUMNS) * (2 * math.pi / LIDAR_COLUMNS) - math.pi).astype(np.float64)
        self._lidar_dirs = np.stack(
            (np.cos(el)[:, None] * np.cos(self._lidar_az)[None, :],
             np.cos(el)[:, None] * np.sin(self._lidar_az)[None, :],
             np.repeat(np.sin(el)[:, None], LIDAR_COLUMNS, axis=1)), axis=-1)  # (beams, columns, 3) lidar frame

    # ---------------------------------------------------------------------------------------------
    def pose(self, t: float) -> np.ndarray:
        """T_world_base at time t (seconds)."""
        return self.trajectory.pose(t)

    def _prims_near(self, T_world_sensor: np.ndarray, t: float, behind: float = 30.0,
                    ahead: float = DRAW_DISTANCE_M) -> Primitives:
        x = float(T_world_sensor[0, 3])
        return self.scene.primitives_near(x - behind, x + ahead, t)

    def _rng(self, kind: str, t: float) -> np.random.Generator:
        return np.random.default_rng([abs(self.seed), _KIND_CODE[kind], int(round(t * 1e9)) + 2**40])

    def _noise(self, rng: np.random.Generator, n: int) -> np.ndarray:
        start = int(rng.integers(0, _NOISE_BANK_SIZE - n))
        return self._bank[start:start + n]

    def _render(self, camera: PinholeCamera, T_world_cam: np.ndarray, t_s: float, mode: Literal["rgb", "thermal"],
                finish: Callable[[slice, np.ndarray], None] | None = None) -> tuple[np.ndarray | None, np.ndarray]:
        """Shade every pixel; returns (values, z-depth (H, W) float32, NaN invalid).

        Values are linear radiance (3, H, W) or apparent temperature (1, H, W) in kelvin. With ``finish``,
        each band of rows is handed to ``finish(rows, values)`` while it is still in the CPU cache and
        no full-frame array is returned.
        """
        prims = self._prims_near(T_world_cam, t_s)
        rays = raycast.pinhole_rays(camera, T_world_cam)
        regions = raycast.pinhole_regions(prims, camera, T_world_cam, DRAW_DISTANCE_M)
        t, prim = raycast.trace(rays, prims, regions, max_distance=DRAW_DISTANCE_M)
        depth = np.where(t <= MAX_DEPTH_M, t, np.float32(np.nan)).astype(np.float32)
        tables = _tables(prims)
        lamp_regions = self._lamp_regions(prims, camera, T_world_cam) if (
            mode == "rgb" and self.params.lights_on) else []
        H, W = camera.height, camera.width
        out = None if finish else np.empty((3 if mode == "rgb" else 1, H, W), dtype=np.float32)
        band = max(1, _BAND_PIXELS // W)
        focal = 0.5 * (camera.fx + camera.fy)
        for r0 in range(0, H, band):
            r1 = min(H, r0 + band)
            rs = slice(r0, r1)
            hits = shading.classify(prim[rs], t[rs], rays.dx[rs], rays.dy[rs], rays.dz[rs], rays.norm[rs],
                                    rays.origin, focal, tables, self.scene.ground_material, self._tile,
                                    self._shadows.sunlit if self._shadows is not None else None, self._cloud_cover)
            if mode == "thermal":
                values = shading.shade_thermal(hits, self.params)[None]
            else:
                lamps = []
                for pos, lr0, lr1, c0, c1 in lamp_regions:
                    a, b = max(lr0, r0), min(lr1, r1)
                    if b > a:
                        lamps.append((pos, slice(a - r0, b - r0), slice(c0, c1)))
                irr = shading.lamp_irradiance_block(lamps, hits) if lamps else None
                values = shading.shade_rgb(hits, self.params, irr)
            if finish is not None:
                finish(rs, values)
            else:
                assert out is not None
                out[:, rs] = values
        return out, depth

    def _lamp_regions(self, prims: Primitives, camera: PinholeCamera, T_world_cam: np.ndarray
                      ) -> list[tuple[tuple[float, float, float], int, int, int, int]]:
        lamps = prims.lamps
        if lamps.shape[0] == 0:
            return []
        r = shading.LAMP_RADIUS_M
        n = lamps.shape[0]
        params = np.zeros((n, prims.params.shape[1]))
        params[:, 0], params[:, 1], params[:, 2] = lamps[:, 0], lamps[:, 1], 1.0
        params[:, 4] = params[:, 5] = r
        params[:, 6], params[:, 7] = 0.0, lamps[:, 2] + r
        boxes = Primitives(np.zeros(n, np.int8), np.zeros(n, np.int16), params, np.zeros((0, 3)))
        regs = raycast.pinhole_regions(boxes, camera, T_world_cam, DRAW_DISTANCE_M)
        return [(tuple(lamps[g.index].tolist()), g.r0, g.r1, g.c0, g.c1) for g in regs]  # type: ignore[misc]

    def _thermal_response(self, camera: PinholeCamera) -> tuple[np.ndarray, np.ndarray]:
        """Per-pixel (gain, offset) mapping apparent temperature (K) to counts: radiometric scale, fixed
        pattern, vignetting (gain fall-off) and the housing term, cached per camera."""
        key = ("thermal", camera)
        if key not in self._response:
            r2 = self._vignetting_r2(camera)
            fpn_gain, fpn_offset = self._thermal_fpn(camera)
            gain = np.float32(COUNTS_PER_K) * fpn_gain * (np.float32(1.0) - np.float32(0.05) * r2)
            # counts = COUNTS_AT_0C + gain * (T - 273.15) + fixed offset - housing term
            offset = np.float32(COUNTS_AT_0C) - gain * np.float32(shading.KELVIN) + fpn_offset - np.float32(110.0) * r2
            self._response[key] = (gain.astype(np.float32), offset.astype(np.float32))
        return self._response[key]  # type: ignore[return-value]

    def _rgb_vignette(self, camera: PinholeCamera) -> np.ndarray:
        """(1, H, W) exposure x vignetting gain of the RGB camera, cached per camera."""
        key = ("rgb", camera)
        if key not in self._response:
            r2 = self._vignetting_r2(camera)
            self._response[key] = (np.float32(self.params.exposure) * (np.float32(1.0) - np.float32(0.22) * r2))[None]
        return self._response[key]  # type: ignore[return-value]

    def _vignetting_r2(self, camera: PinholeCamera) -> np.ndarray:
        u = (np.arange(camera.width, dtype=np.float32) - np.float32(camera.cx)) / np.float32(camera.width / 2)
        v = (np.arange(camera.height, dtype=np.float32) - np.float32(camera.cy)) / np.float32(camera.width / 2)
        return u[None, :] ** 2 + (v**2)[:, None]

    def _thermal_fpn(self, camera: PinholeCamera) -> tuple[np.ndarray, np.ndarray]:
        """Per-pixel (gain, offset) of this camera at this size: seeded, constant over time."""
        key = (camera.width, camera.height)
        if key not in self._fpn:
            rng = np.random.default_rng([abs(self.seed), 4242, camera.width, camera.height])
            gain = (1.0 + 0.012 * rng.standard_normal((camera.height, camera.width))).astype(np.float32)
            pixel = 14.0 * rng.standard_normal((camera.height, camera.width))
            offset = pixel + 7.0 * rng.standard_normal(camera.width)[None, :]  # plus column stripes
            self._fpn[key] = (gain, offset.astype(np.float32))
        return self._fpn[key]

    # --- public sensor API -----------------------------------------------------------------------
    def render_thermal(self, t: float, camera: PinholeCamera | None = None, *, scale: float | None = None,
                       noise: bool = True) -> ThermalFrame:
        """Thermal image at time t (seconds).

        Args:
            t: simulation time, seconds.
            camera: intrinsics to render with (default ``thermal_camera``; pass ``thermal_camera.resized``
                for a smaller image: same pose, same scene). Rendering cost scales with the pixel count.
            scale: shorthand for ``camera=thermal_camera.resized(round(640 * scale), round(512 * scale))``.
            noise: add temporal noise (the fixed pattern and vignetting are always there).

        Returns:
            ThermalFrame with counts (H, W) uint16 and depth (H, W) float32 metres (NaN invalid).
        """
        camera = _pick_camera(self.thermal_camera, camera, scale)
        T_world_cam = self.pose(t) @ self.T_base_thermal
        gain, offset = self._thermal_response(camera)
        H, W = camera.height, camera.width
        counts = np.empty((H, W), dtype=np.uint16)
        if noise:
            rng = self._rng("thermal", t)
            temporal = self._noise(rng, H * W).reshape(H, W)
            row_noise = np.float32(1.2) * rng.standard_normal((H, 1), dtype=np.float32)

        def finish(rs: slice, temp: np.ndarray) -> None:
            c = temp[0] * gain[rs]
            c += offset[rs]
            if noise:
                c += np.float32(THERMAL_NOISE_COUNTS) * temporal[rs]
                c += row_noise[rs]
            np.rint(c, out=c)
            np.clip(c, np.float32(0.0), np.float32(65535.0), out=c)
            counts[rs] = c

        _, depth = self._render(camera, T_world_cam, t, "thermal", finish)
        return ThermalFrame(counts, depth, float(t))

    def render_rgb(self, t: float, camera: PinholeCamera | None = None, *, scale: float | None = None,
                   noise: bool = True) -> RgbFrame:
        """RGB image at time t (seconds); see ``render_thermal`` for the arguments.

        Returns:
            RgbFrame with rgb (H, W, 3) uint8 and depth (H, W) float32 metres (NaN invalid).
        """
        camera = _pick_camera(self.rgb_camera, camera, scale)
        T_world_cam = self.pose(t) @ self.T_base_rgb
        p = self.params
        H, W = camera.height, camera.width
        vignette = self._rgb_vignette(camera)
        rgb = np.empty((H, W, 3), dtype=np.uint8)
        if noise:
            temporal = self._noise(self._rng("rgb", t), 3 * H * W).reshape(3, H, W)
        read2, shot = np.float32(p.read_noise**2), np.float32(p.shot_noise)

        def develop(rs: slice, lin: np.ndarray) -> None:
            lin = lin * vignette[:, rs]
            if noise:
                sigma = np.maximum(lin, np.float32(0.0))
                sigma *= shot
                sigma += read2
                np.sqrt(sigma, out=sigma)
                sigma *= temporal[:, rs]
                lin += sigma
            rgb[rs] = _tone_map(lin)

        if p.lights_on:
            # Glare spreads light over the whole frame, so it needs the full linear image first.
            lin, depth = self._render(camera, T_world_cam, t, "rgb")
            assert lin is not None
            lin *= vignette
            lin += _glare(lin)
            lin /= vignette  # develop() applies the vignetting once more
            band = max(1, _BAND_PIXELS // W)
            for r0 in range(0, H, band):
                rs = slice(r0, min(H, r0 + band))
                develop(rs, lin[:, rs])
        else:
            _, depth = self._render(camera, T_world_cam, t, "rgb", develop)
        return RgbFrame(rgb, depth, float(t))

    def lidar_scan(self, t: float, *, noise: bool = True) -> np.ndarray:
        """LiDAR sweep at time t (taken instantaneously): (N, 4) float32 x, y, z (metres, lidar_link) and
        intensity (0-255, from material reflectivity and incidence)."""
        T_world_lidar = self.pose(t) @ self.T_base_lidar
        prims = self._prims_near(T_world_lidar, t, behind=MAX_DEPTH_M + 10, ahead=MAX_DEPTH_M + 10)
        d_world = self._lidar_dirs @ T_world_lidar[:3, :3].T
        rays = raycast.RayGrid(T_world_lidar[:3, 3].copy(), d_world[..., 0].astype(np.float32),
                               d_world[..., 1].astype(np.float32), d_world[..., 2].astype(np.float32),
                               np.ones(d_world.shape[:2], np.float32))
        regions = raycast.azimuth_regions(prims, T_world_lidar, self._lidar_az, LIDAR_BEAMS, MAX_DEPTH_M)
        rng_t, prim = raycast.trace(rays, prims, regions, max_distance=MAX_DEPTH_M)
        valid = np.isfinite(rng_t)
        rng = self._rng("lidar", t)
        if noise:
            valid &= rng.uniform(size=valid.shape) >= LIDAR_DROPOUT
        idx = np.nonzero(valid)
        r = rng_t[idx]
        tables = _tables(prims)
        o = T_world_lidar[:3, 3]
        px = np.float32(o[0]) + r * rays.dx[idx]
        py = np.float32(o[1]) + r * rays.dy[idx]
        pz = np.float32(o[2]) + r * rays.dz[idx]
        surf = raycast.surface_at(tables.params32, tables.kinds, prim[idx], px, py, pz)
        mat = tables.mat[prim[idx]]
        ground = prim[idx] == GROUND_ID
        mat = np.where(ground, self.scene.ground_material(px, py), mat)
        cos_inc = np.abs(surf.nx * rays.dx[idx] + surf.ny * rays.dy[idx] + surf.nz * rays.dz[idx])
        intensity = np.clip(255.0 * shading.LIDAR_REFLECTIVITY[mat] * (0.3 + 0.7 * cos_inc), 0, 255)
        if noise:
            r = r + np.float32(LIDAR_RANGE_NOISE_M) * rng.standard_normal(r.shape, dtype=np.float32)
        pts = self._lidar_dirs[idx] * r[:, None]
        return np.concatenate((pts, intensity[:, None]), axis=1).astype(np.float32)

    def cast_rays(self, t: float, origin: np.ndarray, directions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Cast arbitrary rays from one world origin (no screen-space culling; for checks).

        Args:
            t: time (selects the scene part near the vehicle).
            origin: (3,) world point.
            directions: (N, 3) world directions (any length).

        Returns:
            t (N,) float32 ray parameter of the nearest hit (inf for none within ``DRAW_DISTANCE_M``) and the
            hit primitive ids (N,) int32.
        """
        pose = self.pose(t)
        prims = self._prims_near(pose, t)
        d = np.asarray(directions, dtype=np.float32).reshape(1, -1, 3)
        rays = raycast.RayGrid(np.asarray(origin, np.float64), d[..., 0].copy(), d[..., 1].copy(), d[..., 2].copy(),
                               np.linalg.norm(d, axis=-1).astype(np.float32))
        regions = [raycast.Region(k, 0, 1, 0, d.shape[1], 0.0) for k in range(len(prims))]
        tt, prim = raycast.trace(rays, prims, regions, max_distance=DRAW_DISTANCE_M)
        return tt[0], prim[0]

    def schedule(self, seconds: float) -> list[SensorEvent]:
        """Sensor events in [0, seconds), sorted by time: thermal at 30 Hz, RGB at ~20 Hz with seeded jitter
        (never at a thermal stamp), LiDAR at 10 Hz."""
        if seconds < 0 or not math.isfinite(seconds):
            raise ValueError(f"duration must be a finite non-negative number of seconds, got {seconds}")
        events: list[SensorEvent] = []
        n_th = int(math.ceil(seconds * THERMAL_RATE_HZ - 1e-9))
        events += [SensorEvent(int(round(k * 1e9 / THERMAL_RATE_HZ)), "thermal") for k in range(n_th)]
        rng = np.random.default_rng([abs(self.seed), 777])
        n_rgb = int(math.ceil((seconds - RGB_OFFSET_S) * RGB_RATE_HZ)) + 1
        jitter = rng.uniform(-RGB_JITTER_S, RGB_JITTER_S, max(n_rgb, 0))
        for k in range(max(n_rgb, 0)):
            stamp = k / RGB_RATE_HZ + RGB_OFFSET_S + jitter[k]
            if stamp < seconds:
                events.append(SensorEvent(int(round(stamp * 1e9)), "rgb"))
        n_li = int(math.ceil((seconds - LIDAR_OFFSET_S) * LIDAR_RATE_HZ)) + 1
        for k in range(max(n_li, 0)):
            stamp = k / LIDAR_RATE_HZ + LIDAR_OFFSET_S
            if stamp < seconds:
                events.append(SensorEvent(int(round(stamp * 1e9)), "lidar"))
        order = {"thermal": 0, "rgb": 1, "lidar": 2}
        events.sort(key=lambda e: (e.stamp_ns, order[e.kind]))
        return events


@functools.lru_cache(maxsize=4)
def _noise_bank(seed: int) -> np.ndarray:
    """Standard normal samples (read-only, float32) that per-frame noise is sliced from at seeded offsets;
    shared by the rigs of one seed (generating it takes ~0.1 s)."""
    bank = np.random.default_rng([abs(seed), 99]).standard_normal(_NOISE_BANK_SIZE, dtype=np.float32)
    bank.flags.writeable = False
    return bank


def _pick_camera(native: PinholeCamera, camera: PinholeCamera | None, scale: float | None) -> PinholeCamera:
    if camera is not None and scale is not None:
        raise ValueError("pass either camera or scale, not both")
    if scale is not None:
        if not (0 < scale <= 4):
            raise ValueError(f"scale must be in (0, 4], got {scale}")
        return native.resized(max(1, round(native.width * scale)), max(1, round(native.height * scale)))
    return camera or native


def _tables(prims: Primitives) -> shading.SceneTables:
    return shading.SceneTables(raycast.padded_params(prims), raycast.padded_kinds(prims),
                               np.concatenate((np.array([Mat.ASPHALT, Mat.SKY], np.intp), prims.mat.astype(np.intp))))


def _glare(lin: np.ndarray) -> np.ndarray:
    """Veiling glare around over-exposed lights: the excess above white, blurred wide, at low gain.

    Computed on the luminance excess (one channel) at 1/8 resolution and tinted by the mean colour of
    the excess, which is what a lens' veiling glare looks like and three times cheaper than per channel.
    """
    from PIL import Image

    _, H, W = lin.shape
    f = 8
    h, w = H // f, W // f
    # Lights are the only things far above white: a quick max test avoids the work on frames without.
    excess = np.maximum(lin[:, : h * f, : w * f] - np.float32(1.5), np.float32(0.0))
    total = excess.sum(axis=0)
    small = total.reshape(h, f, w, f).mean(axis=(1, 3))
    if not small.any():
        return np.zeros((1, H, W), np.float32)
    tint = excess.reshape(3, -1).sum(axis=1)
    tint = (tint / max(float(tint.sum()), 1e-12)).astype(np.float32)
    blurred = small
    for _ in range(2):  # two box blurs ~ a soft Gaussian halo
        blurred = _box_blur(blurred, 3)
    img = Image.fromarray(blurred.astype(np.float32), mode="F").resize((W, H), Image.BILINEAR)
    return (np.float32(0.06) * np.asarray(img, dtype=np.float32))[None] * tint[:, None, None]


def _box_blur(a: np.ndarray, radius: int) -> np.ndarray:
    p = np.pad(a, radius, mode="edge")
    c = np.cumsum(np.cumsum(p, axis=0), axis=1)
    c = np.pad(c, ((1, 0), (1, 0)))
    k = 2 * radius + 1
    return (c[k:, k:] - c[:-k, k:] - c[k:, :-k] + c[:-k, :-k]) / (k * k)


def _srgb_lut() -> np.ndarray:
    x = np.linspace(0.0, 1.0, 4096)
    # sRGB transfer curve: its linear toe keeps dark-region noise from being blown up by the gamma.
    y = np.where(x <= 0.0031308, 12.92 * x, 1.055 * np.power(x, 1 / 2.4) - 0.055)
    return np.clip(np.round(255.0 * y), 0, 255).astype(np.uint8)


_GAMMA_LUT = _srgb_lut()


def _tone_map(lin: np.ndarray) -> np.ndarray:
    """(3, h, W) linear -> (h, W, 3) uint8 view through a 12-bit sRGB lookup table."""
    scaled = lin * np.float32(4095.0)
    np.clip(scaled, np.float32(0.0), np.float32(4095.0), out=scaled)
    return np.moveaxis(_GAMMA_LUT.take(scaled.astype(np.intp)), 0, -1)
