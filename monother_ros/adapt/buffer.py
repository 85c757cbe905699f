"""Replay buffer, held-out slice and keyframe rule of the online adaptation (numpy/torch, no ROS).

A :class:`PairSample` is one thermal/RGB pair already at the network resolution (the same content as a
``training.data.FrameRecord``): thermal in [0, 1], RGB in [0, 1], intrinsics of the network grids and the
thermal -> RGB extrinsic. Ground truth, when a simulated rig provides it, rides along for reporting only:
:func:`collate_samples` never puts it in a training batch.

Keyframe rule (:class:`KeyframeSelector`), checked in this order, cheapest first:

0. rate: at most ``max_rate_hz`` pairs per second (by header stamp, so bag replay behaves the same) are
   considered at all: the teacher forward of step 3 costs about a third of a training step, and must
   not run at the camera rate beside the depth engine.
1. motion since the last keyframe: with odometry (a (4, 4) pose per sample, e.g. ``odom -> base`` from
   TF), translation >= ``min_translation_m`` or rotation >= ``min_rotation_deg``; without odometry, the
   mean absolute change of the [0, 1] thermal image (at network resolution) >= ``min_image_change``.
   A robot standing still therefore adds nothing: the buffer keeps its diversity.
2. RGB contrast: the standard deviation of the grey RGB image (in [0, 1]) >= ``min_rgb_contrast``. A dark
   (night) or washed-out (dense fog) RGB image cannot support the teacher; the check is cheap, runs
   before the teacher, and backs up the confidence network, which a briefly trained small model does
   not calibrate well enough to tell night from day (measured at tiny scale: mean confidence 0.020 at
   night vs 0.021 by day, while the simulated rig's RGB contrast is 0.05-0.10 at night vs 0.16-0.21 by day).
3. teacher confidence (needs the teacher + confidence forward, done by the learner): the mean teacher
   confidence over the consistency mask >= ``min_confidence`` and the mask covering at least
   ``min_mask_fraction`` of the RGB grid. At night or in fog the confidence network rates the RGB
   teacher low and the pair is refused: the node refrains from learning from an unreliable teacher.
   Scale: the confidence is trained with the NLL ``mean(r c) - 0.002 mean(log c)`` (as the reference implementation), whose
   minimiser is c = 0.002 / r for a teacher error r in metres: a threshold c0 means "expected teacher
   error below 0.002 / c0 metres" (0.002 -> 1 m); thresholds like 0.5 would refuse everything.

Admitted keyframes go to the replay buffer, except every ``holdout_every``-th, which goes to the
held-out slice used only to score candidate weights (never trained on). Both are bounded: the replay
buffer evicts its oldest sample (``fifo``) or a random one (``reservoir``, keeps older places in the
mix); the held-out slice evicts its oldest.
"""
from __future__ import annotations

import logging
import math
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Literal, Optional, Sequence

import numpy as np
import torch

from monother_ros.core import preprocess

__all__ = [
    "PairSample",
    "ReplayBuffer",
    "HeldOutSlice",
    "KeyframeConfig",
    "KeyframeSelector",
    "collate_samples",
    "Eviction",
    "Sampling",
]

LOG = logging.getLogger(__name__)

Eviction = Literal["fifo", "reservoir"]
Sampling = Literal["uniform", "recent"]


@dataclass
class PairSample:
    """One thermal/RGB pair at the network resolution.

    Attributes:
        thermal: (h, w) float32 in [0, 1] (per-frame percentile normalised).
        rgb: (3, h, w) float32 in [0, 1] (same size as the thermal: the dual model needs it).
        K_thermal, K_rgb: (3, 3) intrinsics of the two network grids (pixels).
        T_rgb_thermal: (4, 4) thermal optical frame -> RGB optical frame (metres).
        stamp_ns: thermal header stamp.
        pose: optional (4, 4) odometry pose (e.g. odom -> base) at the stamp, for the motion rule.
        gt_thermal: optional (h, w) metres, 0 = invalid; scoring/reporting only, never trained on.
        gt_rgb: optional (h, w) metres in the RGB view; only for supervised pre-training in experiments.
        teacher_depth: (1, 1, h, w) teacher depth on the RGB grid, filled at admission (held-out scoring).
        teacher_confidence: (1, 1, h, w) teacher confidence, filled at admission.
        confidence_score: mean teacher confidence over the consistency mask, filled at admission.
        mask_fraction: fraction of the RGB grid in the consistency mask, filled at admission.
    """

    thermal: np.ndarray
    rgb: np.ndarray
    K_thermal: np.ndarray
    K_rgb: np.ndarray
    T_rgb_thermal: np.ndarray
    stamp_ns: int = 0
    pose: Optional[np.ndarray] = None
    gt_thermal: Optional[np.ndarray] = None
    gt_rgb: Optional[np.ndarray] = None
    teacher_depth: Optional[torch.Tensor] = None
    teacher_confidence: Optional[torch.Tensor] = None
    confidence_score: float = float("nan")
    mask_fraction: float = float("nan")

    def __post_init__(self) -> None:
        if self.thermal.ndim != 2:
            raise ValueError(f"thermal must be (h, w), got {self.thermal.shape}")
        if self.rgb.ndim != 3 or self.rgb.shape[0] != 3:
            raise ValueError(f"rgb must be (3, h, w), got {self.rgb.shape}")
        if self.rgb.shape[1:] != self.thermal.shape:
            raise ValueError(f"rgb {self.rgb.shape[1:]} and thermal {self.thermal.shape} sizes differ")
        if np.shape(self.K_thermal) != (3, 3) or np.shape(self.K_rgb) != (3, 3):
            raise ValueError("K_thermal and K_rgb must be (3, 3)")
        if np.shape(self.T_rgb_thermal) != (4, 4):
            raise ValueError("T_rgb_thermal must be (4, 4)")

    @classmethod
    def from_record(cls, record: Any) -> "PairSample":
        """From a ``training.data.FrameRecord`` (duck-typed: same field names)."""
        return cls(thermal=np.asarray(record.thermal, np.float32), rgb=np.asarray(record.rgb, np.float32),
                   K_thermal=np.asarray(record.K_thermal), K_rgb=np.asarray(record.K_rgb),
                   T_rgb_thermal=np.asarray(record.T_rgb_thermal),
                   stamp_ns=int(getattr(record, "meta", {}).get("stamp_ns", 0)),
                   gt_thermal=None if record.gt_thermal is None else np.asarray(record.gt_thermal, np.float32))


def collate_samples(samples: Sequence[PairSample], device: torch.device | str = "cpu") -> dict[str, Any]:
    """A ``distill.step.training_step`` batch from samples (no ground truth: the stage is label-free).

    Returns:
        dict with ``thermal`` / ``rgb`` (B, 3, h, w) network-normalised, ``K_thermal`` / ``K_rgb``
        (B, 3, 3), ``T_rgb_thermal`` (B, 4, 4), ``gt_depth_thermal`` / ``gt_depth_rgb`` None.
    """
    if not samples:
        raise ValueError("cannot collate an empty list of samples")
    thermal = torch.from_numpy(np.stack([s.thermal for s in samples]).astype(np.float32))[:, None]
    rgb = torch.from_numpy(np.stack([s.rgb for s in samples]).astype(np.float32))
    hw = tuple(thermal.shape[-2:])
    as_t = lambda key: torch.from_numpy(np.stack([np.asarray(getattr(s, key), np.float32) for s in samples]))  # noqa: E731
    batch = {
        "thermal": preprocess.to_network_input_torch(thermal, hw, modality="thermal"),
        "rgb": preprocess.to_network_input_torch(rgb, hw, modality="rgb"),
        "K_thermal": as_t("K_thermal"),
        "K_rgb": as_t("K_rgb"),
        "T_rgb_thermal": as_t("T_rgb_thermal"),
        "gt_depth_thermal": None,
        "gt_depth_rgb": None,
    }
    return {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}


class ReplayBuffer:
    """Bounded, thread-safe replay buffer of :class:`PairSample`.

    Args:
        capacity: most samples kept (>= 1).
        eviction: ``fifo`` (drop the oldest) or ``reservoir`` (reservoir sampling over every sample
            ever added: each one stays with probability capacity / added).
        sampling: ``uniform`` or ``recent`` (probability growing linearly with recency).
        seed: random seed (eviction and sampling).
    """

    def __init__(self, capacity: int, *, eviction: Eviction = "fifo", sampling: Sampling = "uniform",
                 seed: int = 0) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        if eviction not in ("fifo", "reservoir"):
            raise ValueError(f"eviction must be fifo or reservoir, got {eviction!r}")
        if sampling not in ("uniform", "recent"):
            raise ValueError(f"sampling must be uniform or recent, got {sampling!r}")
        self.capacity = int(capacity)
        self.eviction = eviction
        self.sampling = sampling
        self._items: list[PairSample] = []
        self._added = 0
        self._rng = np.random.default_rng(seed)
        self._lock = threading.Lock()

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    @property
    def added(self) -> int:
        """Samples ever offered to ``add`` (admitted keyframes)."""
        return self._added

    def add(self, sample: PairSample) -> None:
        with self._lock:
            self._added += 1
            if len(self._items) < self.capacity:
                self._items.append(sample)
                return
            if self.eviction == "fifo":
                self._items.pop(0)
                self._items.append(sample)
                return
            j = int(self._rng.integers(0, self._added))
            if j < self.capacity:
                # Keep the list in arrival order so that "recent" sampling still means recent.
                self._items.pop(j)
                self._items.append(sample)

    def sample(self, n: int) -> list[PairSample]:
        """``n`` samples (without replacement when the buffer holds enough); [] when empty."""
        with self._lock:
            m = len(self._items)
            if m == 0 or n <= 0:
                return []
            if self.sampling == "recent":
                p = np.arange(1, m + 1, dtype=np.float64)
                p /= p.sum()
            else:
                p = None
            idx = self._rng.choice(m, size=n, replace=n > m, p=p)
            return [self._items[int(i)] for i in idx]

    def items(self) -> list[PairSample]:
        with self._lock:
            return list(self._items)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


class HeldOutSlice:
    """Bounded FIFO of held-out samples with a version number (bumped on every change, so cached scores
    of the running model can be invalidated)."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self._items: deque[PairSample] = deque(maxlen=int(capacity))
        self.version = 0
        self._lock = threading.Lock()

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    def add(self, sample: PairSample) -> None:
        with self._lock:
            self._items.append(sample)
            self.version += 1

    def snapshot(self) -> tuple[int, list[PairSample]]:
        with self._lock:
            return self.version, list(self._items)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self.version += 1


@dataclass(frozen=True)
class KeyframeConfig:
    """Keyframe rule parameters (see the module docstring)."""

    min_confidence: float = 0.002  # mean teacher confidence over the consistency mask (0.002 ~ 1 m error)
    min_mask_fraction: float = 0.02  # fraction of the RGB grid inside the consistency mask
    min_rgb_contrast: float = 0.1  # std of the grey RGB image in [0, 1]; 0 = off
    min_image_change: float = 0.02  # mean |thermal - last keyframe thermal|, [0, 1] units (no odometry)
    min_translation_m: float = 0.5  # with odometry
    min_rotation_deg: float = 5.0  # with odometry
    max_rate_hz: float = 2.0  # pairs considered per second of stamps; 0 = every pair

    def __post_init__(self) -> None:
        for name in ("min_confidence", "min_mask_fraction"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        for name in ("min_image_change", "min_translation_m", "min_rotation_deg", "min_rgb_contrast", "max_rate_hz"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")


@dataclass
class KeyframeCounters:
    """Why offered pairs were refused."""

    offered: int = 0
    admitted: int = 0
    rate_limited: int = 0
    no_motion: int = 0
    low_contrast: int = 0
    low_confidence: int = 0
    small_mask: int = 0
    extra: dict[str, int] = field(default_factory=dict)


def _rotation_deg(R: np.ndarray) -> float:
    c = (float(np.trace(R)) - 1.0) / 2.0
    return math.degrees(math.acos(max(-1.0, min(1.0, c))))


class KeyframeSelector:
    """The motion and confidence parts of the keyframe rule; remembers the last keyframe."""

    def __init__(self, config: KeyframeConfig = KeyframeConfig()) -> None:
        self.config = config
        self._last_thermal: Optional[np.ndarray] = None
        self._last_pose: Optional[np.ndarray] = None
        self._last_considered_ns: Optional[int] = None
        self.counters = KeyframeCounters()

    def rate_ok(self, stamp_ns: int) -> bool:
        """Whether a pair stamped ``stamp_ns`` may be considered (and if so, remember it). A stamp going
        back (bag loop) restarts the rule."""
        rate = self.config.max_rate_hz
        last = self._last_considered_ns
        if rate > 0 and last is not None and 0 <= stamp_ns - last < 1e9 / rate:
            return False
        self._last_considered_ns = int(stamp_ns)
        return True

    def motion(self, sample: PairSample) -> tuple[bool, float]:
        """(enough motion since the last keyframe, the measured amount: metres or degrees with
        odometry, mean image change without). The first sample always counts as moved."""
        c = self.config
        if sample.pose is not None and self._last_pose is not None:
            delta = np.linalg.inv(self._last_pose) @ np.asarray(sample.pose, np.float64)
            trans = float(np.linalg.norm(delta[:3, 3]))
            rot = _rotation_deg(delta[:3, :3])
            return (trans >= c.min_translation_m or rot >= c.min_rotation_deg), trans
        if self._last_thermal is None or self._last_thermal.shape != sample.thermal.shape:
            return True, float("inf")
        change = float(np.mean(np.abs(sample.thermal - self._last_thermal)))
        return change >= c.min_image_change, change

    def rgb_contrast(self, sample: PairSample) -> tuple[bool, float]:
        """(contrast high enough, std of the grey RGB image)."""
        contrast = float(np.std(sample.rgb.mean(axis=0)))
        return contrast >= self.config.min_rgb_contrast, contrast

    def confident(self, confidence_score: float, mask_fraction: float) -> Optional[str]:
        """None when the teacher is trusted enough, else the refusal reason (``low_confidence`` or
        ``small_mask``)."""
        if not mask_fraction >= self.config.min_mask_fraction:  # NaN refuses too
            return "small_mask"
        if not confidence_score >= self.config.min_confidence:
            return "low_confidence"
        return None

    def accept(self, sample: PairSample) -> None:
        """Make ``sample`` the last keyframe."""
        self._last_thermal = sample.thermal.copy()
        self._last_pose = None if sample.pose is None else np.asarray(sample.pose, np.float64).copy()

    def reset(self) -> None:
        self._last_thermal = None
        self._last_pose = None
        self._last_considered_ns = None
