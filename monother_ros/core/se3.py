"""Rigid transforms as 4x4 float64 matrices, quaternions as (x, y, z, w) like geometry_msgs."""
from __future__ import annotations

import math

import numpy as np

from monother_ros.errors import CalibrationError

QUATERNION_UNIT_TOLERANCE = 1e-3


def quaternion_to_matrix(q: np.ndarray) -> np.ndarray:
    """(3, 3) rotation from a unit quaternion (x, y, z, w)."""
    x, y, z, w = (float(c) for c in q)
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )


def matrix_to_quaternion(R: np.ndarray) -> np.ndarray:
    """Unit quaternion (x, y, z, w), w >= 0, from a (3, 3) rotation matrix."""
    R = np.asarray(R, dtype=np.float64)
    trace = R[0, 0] + R[1, 1] + R[2, 2]
    if trace > 0:
        s = 2.0 * math.sqrt(trace + 1.0)
        q = np.array([(R[2, 1] - R[1, 2]) / s, (R[0, 2] - R[2, 0]) / s, (R[1, 0] - R[0, 1]) / s, 0.25 * s])
    elif R[0, 0] > R[1, 1] and R[0, 0] > R[2, 2]:
        s = 2.0 * math.sqrt(1.0 + R[0, 0] - R[1, 1] - R[2, 2])
        q = np.array([0.25 * s, (R[0, 1] + R[1, 0]) / s, (R[0, 2] + R[2, 0]) / s, (R[2, 1] - R[1, 2]) / s])
    elif R[1, 1] > R[2, 2]:
        s = 2.0 * math.sqrt(1.0 + R[1, 1] - R[0, 0] - R[2, 2])
        q = np.array([(R[0, 1] + R[1, 0]) / s, 0.25 * s, (R[1, 2] + R[2, 1]) / s, (R[0, 2] - R[2, 0]) / s])
    else:
        s = 2.0 * math.sqrt(1.0 + R[2, 2] - R[0, 0] - R[1, 1])
        q = np.array([(R[0, 2] + R[2, 0]) / s, (R[1, 2] + R[2, 1]) / s, 0.25 * s, (R[1, 0] - R[0, 1]) / s])
    q /= np.linalg.norm(q)
    return -q if q[3] < 0 else q


def validate_quaternion(q: np.ndarray, *, tolerance: float = QUATERNION_UNIT_TOLERANCE) -> np.ndarray:
    """Return ``q`` normalised; raise ``CalibrationError`` when it is non-finite or far from unit length."""
    q = np.asarray(q, dtype=np.float64)
    if q.shape != (4,) or not np.all(np.isfinite(q)):
        raise CalibrationError(f"quaternion is not 4 finite numbers: {q}")
    norm = float(np.linalg.norm(q))
    if abs(norm - 1.0) > tolerance:
        raise CalibrationError(f"quaternion is not unit length (|q| = {norm:.6f})")
    return q / norm


def make_transform(rotation: np.ndarray, translation: np.ndarray) -> np.ndarray:
    """4x4 from a (3, 3) rotation or (4,) quaternion (x, y, z, w) and a (3,) translation."""
    rotation = np.asarray(rotation, dtype=np.float64)
    T = np.eye(4)
    T[:3, :3] = quaternion_to_matrix(rotation) if rotation.shape == (4,) else rotation
    T[:3, 3] = np.asarray(translation, dtype=np.float64)
    return T


def invert(T: np.ndarray) -> np.ndarray:
    """Inverse of a rigid 4x4 transform (uses R^T rather than a general inverse)."""
    out = np.eye(4)
    R = T[:3, :3]
    out[:3, :3] = R.T
    out[:3, 3] = -R.T @ T[:3, 3]
    return out


def transform_points(T: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply a 4x4 transform to (..., 3) points."""
    points = np.asarray(points, dtype=np.float64)
    return points @ T[:3, :3].T + T[:3, 3]


def rotation_about_axis(axis: np.ndarray, angle_rad: float) -> np.ndarray:
    """(3, 3) rotation of ``angle_rad`` about ``axis`` (Rodrigues)."""
    axis = np.asarray(axis, dtype=np.float64)
    axis = axis / np.linalg.norm(axis)
    K = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + math.sin(angle_rad) * K + (1 - math.cos(angle_rad)) * (K @ K)


def slerp(q0: np.ndarray, q1: np.ndarray, fraction: float) -> np.ndarray:
    """Spherical linear interpolation between unit quaternions (x, y, z, w), shortest path."""
    q0 = np.asarray(q0, dtype=np.float64)
    q1 = np.asarray(q1, dtype=np.float64)
    dot = float(np.dot(q0, q1))
    if dot < 0.0:
        q1, dot = -q1, -dot
    if dot > 0.9995:  # nearly parallel: linear interpolation is exact enough and avoids 0/0
        q = q0 + fraction * (q1 - q0)
        return q / np.linalg.norm(q)
    theta = math.acos(min(dot, 1.0))
    s = math.sin(theta)
    return (math.sin((1 - fraction) * theta) / s) * q0 + (math.sin(fraction * theta) / s) * q1


def interpolate_transform(T0: np.ndarray, T1: np.ndarray, fraction: float) -> np.ndarray:
    """Transform between T0 (fraction 0) and T1 (fraction 1): slerp rotation, lerp translation (as tf2)."""
    q = slerp(matrix_to_quaternion(T0[:3, :3]), matrix_to_quaternion(T1[:3, :3]), fraction)
    t = (1 - fraction) * T0[:3, 3] + fraction * T1[:3, 3]
    return make_transform(q, t)


# Optical frame (z forward, x right, y down) expressed in a body frame (x forward, y left, z up), REP 103.
OPTICAL_FROM_BODY_ROTATION = np.array([[0.0, -1.0, 0.0], [0.0, 0.0, -1.0], [1.0, 0.0, 0.0]])
