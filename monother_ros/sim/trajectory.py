"""Smooth vehicle trajectory: a drive along the street (world +x) with gentle weaving and yaw.

The pose of ``base_link`` in the world is an analytic function of time (sums of sinusoids), so it is
smooth (C-infinity), defined for any t, and identical wherever it is evaluated.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from monother_ros.core.se3 import make_transform, rotation_about_axis

BASE_HEIGHT_M = 0.35  # base_link (axle centre) above the ground


@dataclass(frozen=True)
class Trajectory:
    """Drive along +x at ``speed_mps`` in the lane centred at ``lane_y``.

    Attributes:
        speed_mps: mean forward speed, m/s.
        lane_y: mean lateral position (world y), metres.
        weave_m: amplitude of the lateral weave, metres.
        weave_period_s: period of the weave, seconds.
        yaw_wobble_rad: amplitude of an extra yaw oscillation (looking around), radians.
        phase: phase offset (from the seed) so different seeds do not weave identically.
        x0: world x at t = 0.
    """

    speed_mps: float
    lane_y: float
    weave_m: float = 0.5
    weave_period_s: float = 11.0
    yaw_wobble_rad: float = math.radians(4.0)
    phase: float = 0.0
    x0: float = 0.0

    @classmethod
    def for_family(cls, family: str, seed: int) -> "Trajectory":
        rng = np.random.default_rng([abs(int(seed)), 7919])
        phase = float(rng.uniform(0, 2 * math.pi))
        x0 = float(rng.uniform(0, 1000.0))
        if family == "urban":
            return cls(speed_mps=float(rng.uniform(5.0, 7.5)), lane_y=-1.75, weave_m=0.45, phase=phase, x0=x0)
        return cls(speed_mps=float(rng.uniform(3.0, 4.5)), lane_y=-1.5, weave_m=0.3, phase=phase, x0=x0)

    def _speed(self, t: float) -> float:
        # Slight speed variation (accelerating / easing off).
        return self.speed_mps * (1.0 + 0.08 * math.sin(2 * math.pi * t / 17.0 + self.phase))

    def position(self, t: float) -> np.ndarray:
        """(3,) world position of base_link at time t (seconds)."""
        w = 2 * math.pi / 17.0
        # x = integral of the speed: closed form keeps it exact and cheap.
        x = self.x0 + self.speed_mps * (t - 0.08 / w * (math.cos(w * t + self.phase) - math.cos(self.phase)))
        y = self.lane_y + self.weave_m * math.sin(2 * math.pi * t / self.weave_period_s + self.phase)
        z = BASE_HEIGHT_M + 0.01 * math.sin(2 * math.pi * t / 0.9)
        return np.array([x, y, z])

    def pose(self, t: float) -> np.ndarray:
        """4x4 T_world_base at time t: heading along the path tangent plus a gentle yaw wobble."""
        p = self.position(t)
        dy = self.weave_m * (2 * math.pi / self.weave_period_s) * math.cos(
            2 * math.pi * t / self.weave_period_s + self.phase)
        yaw = math.atan2(dy, self._speed(t)) + self.yaw_wobble_rad * math.sin(2 * math.pi * t / 7.0 + 2 * self.phase)
        pitch = math.radians(0.4) * math.sin(2 * math.pi * t / 1.3)
        roll = math.radians(0.3) * math.sin(2 * math.pi * t / 1.7 + 1.0)
        R = rotation_about_axis(np.array([0.0, 0.0, 1.0]), yaw) @ rotation_about_axis(
            np.array([0.0, 1.0, 0.0]), pitch) @ rotation_about_axis(np.array([1.0, 0.0, 0.0]), roll)
        return make_transform(R, p)
