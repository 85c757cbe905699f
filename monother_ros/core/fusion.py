"""Confidence-weighted fusion of a teacher depth map with the student's (numpy only).

With ``c_t`` and ``d_t`` the teacher's confidence and depth warped into the thermal frame, and ``c_s``,
``d_s`` the student's, per pixel:

    w_t = c_t * [d_t valid],  w_s = c_s * [d_s valid]
    d   = (w_t * d_t + w_s * d_s) / (w_t + w_s)        (d_s where w_t + w_s = 0)
    c   = (w_t * c_t + w_s * c_s) / (w_t + w_s)        (0 where w_t + w_s = 0)

Confidences are clipped to [0, 1] first; "valid" means finite.
"""
from __future__ import annotations

import numpy as np

__all__ = ["fuse"]


def fuse(student_depth: np.ndarray, student_confidence: np.ndarray, teacher_depth: np.ndarray,
         teacher_confidence: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Confidence-weighted fusion of teacher and student depth (formula in the module docstring).

    Args:
        student_depth, teacher_depth: (H, W) metres, NaN invalid.
        student_confidence, teacher_confidence: (H, W) in [0, 1].

    Returns:
        (depth (H, W) float32 metres, NaN where neither is valid; confidence (H, W) float32 in [0, 1]).
    """
    d_s = np.asarray(student_depth, np.float32)
    d_t = np.asarray(teacher_depth, np.float32)
    teacher_ok = np.isfinite(d_t)
    student_ok = np.isfinite(d_s)
    w_t = np.where(teacher_ok, np.clip(teacher_confidence, 0.0, 1.0), 0.0).astype(np.float32)
    w_s = np.where(student_ok, np.clip(student_confidence, 0.0, 1.0), 0.0).astype(np.float32)
    total = w_t + w_s
    with np.errstate(invalid="ignore", divide="ignore"):
        depth = (w_t * np.where(teacher_ok, d_t, 0.0) + w_s * np.where(student_ok, d_s, 0.0)) / total
        # The weights are the clipped confidences, so w * w is the weighted confidence.
        confidence = (w_t * w_t + w_s * w_s) / total
    no_weight = total <= 0
    depth = np.where(no_weight, d_s, depth).astype(np.float32)
    confidence = np.where(no_weight, 0.0, confidence).astype(np.float32)
    return depth, confidence
