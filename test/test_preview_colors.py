"""Picture helpers: the confidence colour scale is logarithmic (NLL-calibrated confidences are small)."""
from __future__ import annotations

import numpy as np

from monother_ros.sim.preview import colorize_confidence


def test_confidence_log_scale_separates_small_values_and_blanks_nan():
    conf = np.array([[1e-5, 1e-4, 1e-3, 1e-2], [1e-1, 1.0, np.nan, 0.002]], np.float32)
    rgb = colorize_confidence(conf).astype(int)
    assert rgb.shape == (2, 4, 3)
    brightness = rgb.sum(axis=-1)
    # Below the floor and NaN are black; each decade is visibly brighter than the one before.
    assert brightness[0, 0] == brightness[0, 1] and brightness[1, 2] == 0
    steps = [brightness[0, 1], brightness[0, 2], brightness[0, 3], brightness[1, 0], brightness[1, 1]]
    assert all(b - a > 60 for a, b in zip(steps, steps[1:])), steps
    # 0.002 (the NLL optimum at a 1 m error) sits between 1e-3 and 1e-2, not at black as on a 0-1 scale.
    assert brightness[0, 2] < brightness[1, 3] < brightness[0, 3]
