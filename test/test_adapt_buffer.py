"""adapt/buffer.py: pair samples, replay buffer, held-out slice, keyframe rule (numpy only, fast)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from monother_ros.adapt.buffer import (
    HeldOutSlice,
    KeyframeConfig,
    KeyframeSelector,
    PairSample,
    ReplayBuffer,
    collate_samples,
)


def _sample(value: float = 0.5, *, hw=(4, 6), pose=None, rgb_noise: float = 0.0, seed: int = 0) -> PairSample:
    rng = np.random.default_rng(seed)
    rgb = np.full((3, *hw), 0.5, np.float32) + rgb_noise * rng.standard_normal((3, *hw)).astype(np.float32)
    return PairSample(thermal=np.full(hw, value, np.float32), rgb=np.clip(rgb, 0, 1), K_thermal=np.eye(3),
                      K_rgb=np.eye(3), T_rgb_thermal=np.eye(4), stamp_ns=int(value * 1e9), pose=pose)


def test_pair_sample_refuses_bad_shapes():
    with pytest.raises(ValueError, match="sizes differ"):
        PairSample(np.zeros((4, 6), np.float32), np.zeros((3, 4, 5), np.float32), np.eye(3), np.eye(3), np.eye(4))
    with pytest.raises(ValueError, match=r"\(3, h, w\)"):
        PairSample(np.zeros((4, 6), np.float32), np.zeros((4, 6, 3), np.float32), np.eye(3), np.eye(3), np.eye(4))
    with pytest.raises(ValueError, match="T_rgb_thermal"):
        PairSample(np.zeros((4, 6), np.float32), np.zeros((3, 4, 6), np.float32), np.eye(3), np.eye(3), np.eye(3))


def test_collate_normalises_like_the_network_and_never_carries_ground_truth():
    a, b = _sample(0.45), _sample(0.9)
    a.gt_thermal = np.ones((4, 6), np.float32)
    batch = collate_samples([a, b])
    assert batch["thermal"].shape == (2, 3, 4, 6) and batch["rgb"].shape == (2, 3, 4, 6)
    # thermal mean 0.45 / std 0.225; ImageNet for RGB.
    assert torch.allclose(batch["thermal"][0], torch.zeros(3, 4, 6), atol=1e-6)
    assert torch.allclose(batch["thermal"][1], torch.full((3, 4, 6), 2.0), atol=1e-6)
    assert batch["rgb"][0, 0, 0, 0].item() == pytest.approx((0.5 - 0.485) / 0.229, rel=1e-5)
    assert batch["gt_depth_thermal"] is None and batch["gt_depth_rgb"] is None
    assert batch["T_rgb_thermal"].shape == (2, 4, 4)
    with pytest.raises(ValueError):
        collate_samples([])


def test_fifo_buffer_keeps_the_newest_and_samples_without_replacement():
    buf = ReplayBuffer(3, eviction="fifo", seed=0)
    for v in range(5):
        buf.add(_sample(v / 10))
    assert len(buf) == 3 and buf.added == 5
    assert [s.stamp_ns for s in buf.items()] == [int(v / 10 * 1e9) for v in (2, 3, 4)]
    drawn = buf.sample(3)
    assert sorted(s.stamp_ns for s in drawn) == sorted(s.stamp_ns for s in buf.items())
    assert len(buf.sample(7)) == 7  # with replacement when asked for more
    assert ReplayBuffer(2).sample(1) == []


def test_reservoir_keeps_old_samples_with_the_right_probability():
    kept_first = 0
    for seed in range(200):
        buf = ReplayBuffer(5, eviction="reservoir", seed=seed)
        for v in range(50):
            buf.add(_sample(v / 100))
        assert len(buf) == 5
        kept_first += any(s.stamp_ns == 0 for s in buf.items())
    # Each sample survives with probability 5 / 50 = 0.1: 20 expected of 200 (binomial sd ~4.2).
    assert 7 <= kept_first <= 35


def test_recent_sampling_prefers_new_pairs():
    buf = ReplayBuffer(10, sampling="recent", seed=1)
    for v in range(10):
        buf.add(_sample(v / 10))
    counts = np.zeros(10)
    for _ in range(300):
        for s in buf.sample(1):
            counts[int(round(s.stamp_ns / 1e8))] += 1
    # Weights 1..10: the newest is drawn ~10x as often as the oldest.
    assert counts[9] > 4 * max(counts[0], 1)


def test_held_out_slice_is_bounded_and_versioned():
    held = HeldOutSlice(2)
    v0 = held.version
    for v in range(3):
        held.add(_sample(v / 10))
    version, items = held.snapshot()
    assert len(items) == 2 and version == v0 + 3
    assert [s.stamp_ns for s in items] == [int(0.1e9), int(0.2e9)]


def test_keyframe_motion_by_image_change_and_by_odometry():
    sel = KeyframeSelector(KeyframeConfig(min_image_change=0.05, min_translation_m=0.5, min_rotation_deg=5.0))
    first = _sample(0.5)
    assert sel.motion(first)[0]  # nothing to compare with yet
    sel.accept(first)
    moved, change = sel.motion(_sample(0.52))
    assert not moved and change == pytest.approx(0.02, abs=1e-6)
    assert sel.motion(_sample(0.6))[0]

    def pose(x=0.0, yaw_deg=0.0):
        T = np.eye(4)
        c, s = np.cos(np.radians(yaw_deg)), np.sin(np.radians(yaw_deg))
        T[:2, :2] = [[c, -s], [s, c]]
        T[0, 3] = x
        return T

    sel.accept(_sample(0.5, pose=pose(10.0)))
    # Odometry wins over the image change: same image, but moved 0.6 m / turned 6 degrees.
    assert not sel.motion(_sample(0.5, pose=pose(10.3)))[0]
    assert sel.motion(_sample(0.5, pose=pose(10.6)))[0]
    assert sel.motion(_sample(0.5, pose=pose(10.0, 6.0)))[0]
    assert not sel.motion(_sample(0.9, pose=pose(10.1, 1.0)))[0]


def test_keyframe_contrast_and_confidence_rules():
    sel = KeyframeSelector(KeyframeConfig(min_confidence=0.01, min_mask_fraction=0.05, min_rgb_contrast=0.1))
    ok, contrast = sel.rgb_contrast(_sample(rgb_noise=0.0))
    assert not ok and contrast == pytest.approx(0.0, abs=1e-7)
    assert sel.rgb_contrast(_sample(rgb_noise=0.3))[0]
    assert sel.confident(0.02, 0.1) is None
    assert sel.confident(0.005, 0.1) == "low_confidence"
    assert sel.confident(0.02, 0.01) == "small_mask"
    assert sel.confident(float("nan"), float("nan")) == "small_mask"
    with pytest.raises(ValueError):
        KeyframeConfig(min_confidence=2.0)


def test_keyframe_rate_limit_uses_stamps_and_restarts_after_a_jump_back():
    sel = KeyframeSelector(KeyframeConfig(max_rate_hz=2.0))
    ok = [sel.rate_ok(int(t * 1e9)) for t in (10.0, 10.1, 10.4, 10.5, 10.9, 11.0)]
    assert ok == [True, False, False, True, False, True]
    assert sel.rate_ok(int(3e9))  # bag loop: stamps went back
    assert all(KeyframeSelector(KeyframeConfig(max_rate_hz=0.0)).rate_ok(i) for i in range(3))
