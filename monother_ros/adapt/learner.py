"""Online label-free adaptation of the thermal student (pure logic: torch + numpy, no ROS).

:class:`OnlineLearner` owns a ``MonotherDual`` (thermal student being adapted, frozen RGB teacher and
confidence network) and runs MonoTher-Depth's label-free stage online:

* :meth:`OnlineLearner.offer` gets one thermal/RGB pair (:class:`~monother_ros.adapt.buffer.PairSample`),
  applies the keyframe rule (motion since the last keyframe, RGB contrast, then the teacher's confidence: the frozen
  teacher and confidence network run on the pair with the *running* student, and the mean confidence
  over the consistency mask of ``distill.masks`` must reach a threshold) and admits it to the replay
  buffer or, every ``holdout_every``-th keyframe, to the held-out slice.
* A background thread (:meth:`start`) trains in rounds of ``steps_per_round`` optimiser steps of
  ``distill.step.training_step(stage="label_free")``: the same step as offline training (confidence-
  weighted consistency with the top-k masks + smoothness + the student-confidence NLL), never a second
  loss. A compute budget (``max_steps_per_second`` and ``duty_cycle``: after a step of duration t the
  thread sleeps at least ``t * (1 / duty_cycle - 1)``) and ``num_threads`` keep inference fed.
* After each round the candidate weights are scored on the held-out slice with a label-free score:
  ``distill.losses.consistency_loss`` between the cached teacher depth and the candidate's depth warped
  into the RGB view, weighted by the teacher confidence cached at admission, over the pixels whose
  confidence exceeds ``score_min_confidence``. The confidence is computed once per held-out pair, so a
  candidate cannot lower its own score by changing what the confidence network sees. A candidate worse
  than the running model by more than ``reject_threshold`` (relative) is rejected; ``max_rejections``
  rejections in a row roll the training weights back to the last accepted ones (optimiser state reset).
  Ground truth, when a simulated sample carries it, is scored for reports only (``gt_absrel``).
* Accepted weights are written atomically as a checkpoint (``adapt.checkpoint_store``: folders
  ``<checkpoint_dir>/adapt-NNNNNN``; at most ``keep_checkpoints`` of them, enforced at start and after
  every write attempt; leftovers of interrupted writes removed at start; a failed write retried until one
  succeeds) and handed to ``on_update``. The learner only writes model folders: whatever a depth engine
  needs from one (an ONNX export, a TensorRT refit or build) is made by the depth node's engine holder,
  off this thread. A restart resumes from the newest checkpoint that loads (a corrupt or partial one is
  skipped).

Thread safety: public methods may be called from any thread. A training step holds ``_train_lock``;
reset / save / rollback take it too, so they land between steps. The running student used to admit
pairs is a separate copy guarded by ``_eval_lock``, so admission never waits for a training step.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import logging
import math
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal, Mapping, NamedTuple, Optional, Sequence

import numpy as np
import torch
from torch import nn

from monother_ros.adapt.buffer import (
    Eviction,
    HeldOutSlice,
    KeyframeConfig,
    KeyframeSelector,
    PairSample,
    ReplayBuffer,
    Sampling,
    collate_samples,
)
from monother_ros.adapt.checkpoint_store import CheckpointStore
from monother_ros.errors import CheckpointError, ConfigError

__all__ = [
    "LearnerConfig",
    "ModelUpdate",
    "RoundResult",
    "OnlineLearner",
    "learner_device",
    "load_dual",
    "evaluate_student",
]

LOG = logging.getLogger(__name__)

# Student parameters trained at lr * encoder_lr_factor (as training/: encoder and DPT head slower).
_SLOW_PREFIXES = ("pretrained.", "depth_head.")


@dataclass(frozen=True)
class LearnerConfig:
    """Everything the learner depends on (units in trailing comments)."""

    # --- buffer ---
    buffer_size: int = 64  # replay buffer capacity, pairs
    eviction: Eviction = "fifo"
    sampling: Sampling = "uniform"
    holdout_every: int = 5  # every n-th keyframe goes to the held-out slice (never trained on)
    holdout_size: int = 16  # held-out slice capacity, pairs
    min_buffer: int = 4  # train only with at least this many pairs in the buffer
    min_holdout: int = 2  # score (and so accept) only with at least this many held-out pairs
    # --- keyframe rule ---
    keyframe: KeyframeConfig = KeyframeConfig()
    confidence_gate: bool = True  # refuse pairs whose teacher confidence is low (off: motion only)
    # --- training ---
    distillation: Literal["no_confidence", "full"] = "full"
    consistency_weight: float = 2.0  # label-free weights (the reference ViViD label-free fine-tune uses 2)
    smoothness_weight: float = 0.01
    student_nll_weight: float = 0.1
    batch_size: int = 2
    lr: float = 5e-5
    encoder_lr_factor: float = 0.1  # encoder + DPT head at lr * factor
    weight_decay: float = 0.01
    grad_clip: float = 0.1  # max global gradient norm; 0 = off
    # L2-SP: + anchor_weight * sum((w - w_shipped)^2) over the student's trainable weights. Limits forgetting
    # of the place the shipped model was trained for (the held-out guard only sees the new place). 0 = off.
    anchor_weight: float = 0.0
    steps_per_round: int = 10  # optimiser steps between two candidate evaluations
    max_steps_per_second: float = 2.0  # 0 = unlimited
    duty_cycle: float = 0.5  # largest fraction of wall time spent in training steps, (0, 1]
    num_threads: int = 1  # torch intra-op threads (process-wide!); 0 = leave
    seed: int = 0
    # --- guards ---
    reject_threshold: float = 0.02  # reject a candidate scoring worse than running by more (relative)
    max_rejections: int = 3  # this many rejections in a row roll back to the last accepted weights
    score_min_confidence: float = 1e-3  # held-out pixels scored: teacher confidence above this (the mask's 1e-3)
    # --- checkpoints ---
    checkpoint_dir: str = ""  # "" = no checkpoints
    keep_checkpoints: int = 3
    resume: bool = True  # start from the newest valid checkpoint in checkpoint_dir

    def __post_init__(self) -> None:
        if isinstance(self.keyframe, Mapping):
            object.__setattr__(self, "keyframe", KeyframeConfig(**self.keyframe))
        problems = []
        for name in ("buffer_size", "holdout_every", "holdout_size", "min_buffer", "min_holdout", "batch_size",
                     "steps_per_round", "max_rejections", "keep_checkpoints"):
            if int(getattr(self, name)) < 1:
                problems.append(f"{name} must be >= 1")
        if self.distillation not in ("no_confidence", "full"):
            problems.append(f"distillation must be no_confidence or full, got {self.distillation!r}")
        if not 0 < self.duty_cycle <= 1:
            problems.append("duty_cycle must be in (0, 1]")
        for name in ("lr", "encoder_lr_factor", "weight_decay", "grad_clip", "anchor_weight", "max_steps_per_second", "reject_threshold",
                     "consistency_weight", "smoothness_weight", "student_nll_weight", "score_min_confidence"):
            if not float(getattr(self, name)) >= 0:
                problems.append(f"{name} must be >= 0")
        if self.lr <= 0:
            problems.append("lr must be > 0")
        if self.num_threads < 0:
            problems.append("num_threads must be >= 0")
        if problems:
            raise ConfigError("invalid adaptation settings: " + "; ".join(problems))

    def replace(self, **changes: Any) -> "LearnerConfig":
        return dataclasses.replace(self, **changes)


class ModelUpdate(NamedTuple):
    """Weights to hand to the depth engine.

    Attributes:
        state_dict: the student's complete state dict (CPU tensors, owned by the receiver).
        reason: ``accepted``, ``rollback`` (training weights only: not sent), ``reset`` or ``resume``.
        model_dir: the checkpoint folder holding these weights (``model.safetensors`` + config), or None
            (no checkpoint folder configured, or the write failed).
        round: training round that produced it (0 for the shipped model).
        score: held-out label-free score (lower is better), NaN when not scored.
    """

    state_dict: dict[str, torch.Tensor]
    reason: str
    model_dir: Optional[Path]
    round: int
    score: float


@dataclass
class RoundResult:
    """Outcome of one training round."""

    round: int
    steps: int
    decision: Literal["accepted", "rejected", "rolled_back", "aborted"]
    candidate_score: float
    running_score: float
    train_loss: float
    seconds: float
    gt_absrel: float = float("nan")  # held-out AbsRel of the candidate, only when GT exists (sim)


# ----------------------------------------------------------------------------------- model loading


def learner_device(device: str | torch.device) -> torch.device:
    """The torch device for the learner (teacher, confidence network and student all go there).

    Raises:
        ConfigError: not a torch device, or a CUDA device torch cannot see.
    """
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ConfigError(f"device {device!r} is not a torch device (cpu, cuda or cuda:N)") from exc
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device {device!r}: torch sees no CUDA GPU (CPU-only torch build or no driver); "
                              "use device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ConfigError(f"device {device!r}: only {torch.cuda.device_count()} CUDA device(s) visible")
    return dev


def load_dual(model_dir: str | os.PathLike, teacher_dir: str | os.PathLike | None = None,
              *, device: str | torch.device = "cpu") -> tuple[nn.Module, Any]:
    """``model.dual_loading.load_dual`` on a checked learner device (:func:`learner_device`).

    Raises:
        ConfigError: no teacher/confidence network available, student configurations differ, or the
            device is unusable.
        CheckpointError: unreadable folders.
    """
    from monother_ros.model.dual_loading import load_dual as load_dual_model

    return load_dual_model(model_dir, teacher_dir, device=learner_device(device))


def _state_copy(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in module.state_dict().items()}


# ----------------------------------------------------------------------------------- scoring


@torch.no_grad()
def _student_depth(student: nn.Module, samples: Sequence[PairSample], device: torch.device, chunk: int = 4):
    """Per chunk: (batch, depth (B, 1, h, w) metres)."""
    for start in range(0, len(samples), chunk):
        part = samples[start:start + chunk]
        batch = collate_samples(part, device)
        yield part, batch, student(batch["thermal"], features=False).depth


@torch.no_grad()
def consistency_score(student: nn.Module, samples: Sequence[PairSample], *, device: torch.device,
                      min_confidence: float, max_depth: float, min_depth: float = 1e-3) -> float:
    """Label-free score of a student on held-out samples (lower is better); NaN when nothing scores.

    Per sample: ``distill.losses.consistency_loss(conf, |d_rgb - d_thermal->rgb|, mask)`` with the
    teacher depth and confidence cached at admission, mask = confidence > ``min_confidence`` and both
    depths in range; the mean over samples.
    """
    from monother_ros.core.warp import warp_depth
    from monother_ros.distill.losses import consistency_loss

    was_training = student.training
    student.eval()
    scores: list[float] = []
    try:
        for part, batch, depth in _student_depth(student, samples, device):
            d_rgb = torch.cat([s.teacher_depth for s in part]).to(device)
            conf = torch.cat([s.teacher_confidence for s in part]).to(device)
            warped = warp_depth(depth, d_rgb, batch["K_thermal"], batch["K_rgb"], batch["T_rgb_thermal"], min_z=0.01)
            diff = (d_rgb - warped.depth).abs()
            ok = warped.valid & (conf > min_confidence) & (d_rgb > min_depth) & (d_rgb < max_depth)
            ok &= (warped.depth > min_depth) & (warped.depth < max_depth)
            for i in range(len(part)):
                if bool(ok[i].any()):
                    scores.append(float(consistency_loss(conf[i:i + 1], diff[i:i + 1], ok[i:i + 1])))
    finally:
        student.train(was_training)
    return float(np.mean(scores)) if scores else float("nan")


@torch.no_grad()
def evaluate_student(student: nn.Module, samples: Sequence[PairSample], *, device: torch.device | str = "cpu",
                     max_depth: float = 80.0) -> dict[str, float]:
    """MonoTher metrics (``core.metrics``, per frame then averaged) of a student on samples with ground
    truth (reporting only). Returns {} when no sample has ground truth."""
    from monother_ros.core.metrics import MetricAccumulator

    with_gt = [s for s in samples if s.gt_thermal is not None]
    if not with_gt:
        return {}
    acc = MetricAccumulator(max_depth=max_depth)
    was_training = student.training
    student.eval()
    try:
        for part, _, depth in _student_depth(student, with_gt, torch.device(device)):
            d = depth[:, 0].float().cpu().numpy()
            for s, pred in zip(part, d):
                acc.update(s.gt_thermal, pred)
    finally:
        student.train(was_training)
    if acc.frames == 0:
        return {}
    out = acc.result()
    out["frames"] = acc.frames
    return out


# ----------------------------------------------------------------------------------- learner


class OnlineLearner:
    """Replay buffer + keyframe rule + budgeted background training + guards + checkpoints.

    A checkpoint write that fails (full disk) is retried by the training thread with a growing back-off
    (``SAVE_RETRY_MIN_S`` doubling up to ``SAVE_RETRY_MAX_S``) until one succeeds.

    Args:
        model: ``MonotherDual`` with a confidence network (see :func:`load_dual`); its student is
            trained in place (teacher and confidence network are frozen).
        config: :class:`LearnerConfig`.
        shipped_state: the student weights ``reset`` returns to; default the model's current student.
        on_update: called with a :class:`ModelUpdate` whenever the running weights change (accepted
            candidate, reset, resume); runs on the calling thread (the training thread for accepts).
        device: torch device (cpu, cuda, cuda:N) for the student, the teacher and the confidence network:
            the model is moved there; training, admission (teacher + confidence) and scoring run there.
    """

    SAVE_RETRY_MIN_S = 5.0  # first retry of a failed checkpoint write, seconds
    SAVE_RETRY_MAX_S = 60.0

    def __init__(self, model: nn.Module, config: LearnerConfig = LearnerConfig(), *,
                 shipped_state: Optional[Mapping[str, torch.Tensor]] = None,
                 on_update: Optional[Callable[[ModelUpdate], None]] = None,
                 device: str | torch.device = "cpu") -> None:
        from monother_ros.distill.step import prepare_stage

        if getattr(model, "confidence_net", None) is None and config.distillation == "full":
            raise ConfigError("distillation 'full' needs a dual model with a confidence network")
        self.config = config
        self.device = learner_device(device)
        self.model = model.to(self.device)
        self.student_config = model.student.config
        self.max_depth = float(self.student_config.max_depth_m)
        self.min_depth = float(self.student_config.min_depth_m)
        self._trainable = prepare_stage(self.model, "label_free")
        shipped = shipped_state if shipped_state is not None else self.model.student.state_dict()
        self.shipped_state = {k: v.detach().to("cpu", copy=True) for k, v in shipped.items()}
        self._anchor: Optional[dict[str, torch.Tensor]] = None  # shipped weights on the device (anchor_weight)
        self.on_update = on_update

        self.buffer = ReplayBuffer(config.buffer_size, eviction=config.eviction, sampling=config.sampling,
                                   seed=config.seed)
        self.holdout = HeldOutSlice(config.holdout_size)
        self.keyframes = KeyframeSelector(config.keyframe)
        self._keyframe_count = 0

        # The running (deployed) student: admits pairs and is the reference of the guards.
        self._eval_student = copy.deepcopy(self.model.student).eval()
        for p in self._eval_student.parameters():
            p.requires_grad_(False)
        self.running_state = _state_copy(self.model.student)
        self._running_score: Optional[float] = None
        self._running_version = -1

        self._train_lock = threading.RLock()
        self._eval_lock = threading.Lock()
        self._optimizer = self._make_optimizer()
        self._generator = torch.Generator().manual_seed(config.seed)

        # Opening the store removes leftovers of interrupted writes and prunes to keep_checkpoints.
        self.store = (CheckpointStore(config.checkpoint_dir, config.keep_checkpoints, clean=True)
                      if config.checkpoint_dir else None)
        self._save_pending: Optional[tuple[str, int, float]] = None  # (reason, round, score) of a failed save
        self._save_retry_at = 0.0
        self._save_backoff = self.SAVE_RETRY_MIN_S
        self.resumed_from: Optional[Path] = None
        self.last_checkpoint: Optional[Path] = None
        self.counters = {"rounds": 0, "steps": 0, "accepted": 0, "rejected": 0, "rollbacks": 0, "resets": 0,
                         "checkpoints": 0, "checkpoint_errors": 0, "updates_sent": 0, "update_errors": 0}
        self.consecutive_rejections = 0
        self.last_round: Optional[RoundResult] = None
        self.last_loss = float("nan")
        self.busy_seconds = 0.0
        self._started_at = time.monotonic()
        self._paused = threading.Event()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._closed = threading.Event()
        self._thread: Optional[threading.Thread] = None
        if self.store is not None and config.resume:
            self._resume()

    # ------------------------------------------------------------------ set-up helpers

    def _make_optimizer(self) -> torch.optim.Optimizer:
        slow, fast = [], []
        for name, p in self.model.student.named_parameters():
            if p.requires_grad:
                (slow if name.startswith(_SLOW_PREFIXES) else fast).append(p)
        c = self.config
        groups = [g for g in ({"params": slow, "lr": c.lr * c.encoder_lr_factor}, {"params": fast, "lr": c.lr})
                  if g["params"]]
        if not groups:
            raise ConfigError("the student has no trainable parameters")
        return torch.optim.AdamW(groups, lr=c.lr, weight_decay=c.weight_decay)

    def _resume(self) -> None:
        # Newest first; a corrupt folder is deleted, one of another model skipped (older ones may fit).
        for path, tensors, meta in self.store.valid(remove_invalid=True):
            try:
                self._set_running(tensors, load_training=True)
            except RuntimeError as exc:
                LOG.warning("not resuming from %s: %s", path, exc)
                continue
            break
        else:
            return
        self.resumed_from = path
        self.last_checkpoint = path
        for key in ("rounds", "accepted", "rejected", "rollbacks", "resets"):
            if isinstance(meta.get("adapt_counters", {}).get(key), int):
                self.counters[key] = meta["adapt_counters"][key]
        LOG.info("resumed adaptation from %s (round %s)", path, meta.get("adapt_round"))

    def _set_running(self, state: Mapping[str, torch.Tensor], *, load_training: bool) -> None:
        with self._eval_lock:
            self._eval_student.load_state_dict(state, strict=True)
            self.running_state = {k: v.detach().to("cpu", copy=True) for k, v in state.items()}
            self._running_score = None
        if load_training:
            with self._train_lock:
                self.model.student.load_state_dict(state, strict=True)
                self._optimizer = self._make_optimizer()

    # ------------------------------------------------------------------ admission

    @torch.no_grad()
    def teacher_confidence(self, sample: PairSample) -> tuple[float, float, torch.Tensor, torch.Tensor]:
        """Run the frozen teacher + confidence network with the running student on one pair.

        Returns:
            (mean confidence over the consistency mask (NaN when empty), mask fraction of the RGB grid,
            teacher depth (1, 1, h, w) metres, teacher confidence (1, 1, h, w)), all on the CPU.
        """
        from monother_ros.distill.masks import consistency_mask
        from monother_ros.distill.metadata import build_metadata_from_outputs
        from monother_ros.distill.step import rgb_to_unit

        batch = collate_samples([sample], self.device)
        teacher = self.model.teacher
        with self._eval_lock:
            s_out = self._eval_student(batch["thermal"], features=True)
        t_out = teacher(batch["rgb"], features=True)
        rgb_unit = rgb_to_unit(batch["rgb"], teacher.config.mean, teacher.config.std)
        md = build_metadata_from_outputs(s_out, t_out, rgb_unit, batch["K_thermal"], batch["K_rgb"],
                                         batch["T_rgb_thermal"], min_depth=self.min_depth, max_depth=self.max_depth)
        use_net = self.config.distillation == "full" and self.model.confidence_net is not None
        # The no-confidence ablation weights every pixel 1, in training and in the held-out score.
        conf = self.model.teacher_confidence(md.metadata) if use_net else torch.ones_like(md.diff)
        mask = consistency_mask(md.diff, md.s_b, md.depth_ok, conf)
        fraction = float(mask.float().mean())
        score = float(conf[mask].mean()) if bool(mask.any()) else float("nan")
        return score, fraction, t_out.depth.detach().cpu(), conf.detach().cpu()

    def offer(self, sample: PairSample) -> str:
        """Apply the keyframe rule to one pair and store it when admitted.

        Returns:
            ``paused``, ``rate_limited``, ``no_motion``, ``low_contrast``, ``low_confidence``, ``small_mask``,
            ``held_out`` or ``admitted``.
        """
        kc = self.keyframes.counters
        kc.offered += 1
        if self._paused.is_set():
            return "paused"
        if not self.keyframes.rate_ok(sample.stamp_ns):
            kc.rate_limited += 1
            return "rate_limited"
        moved, _ = self.keyframes.motion(sample)
        if not moved:
            kc.no_motion += 1
            return "no_motion"
        contrast_ok, _ = self.keyframes.rgb_contrast(sample)
        if not contrast_ok:
            kc.low_contrast += 1
            return "low_contrast"
        score, fraction, t_depth, t_conf = self.teacher_confidence(sample)
        sample.confidence_score, sample.mask_fraction = score, fraction
        sample.teacher_depth, sample.teacher_confidence = t_depth, t_conf
        if self.config.confidence_gate:
            refused = self.keyframes.confident(score, fraction)
            if refused is not None:
                setattr(kc, refused, getattr(kc, refused) + 1)
                return refused
        self.keyframes.accept(sample)
        kc.admitted += 1
        self._keyframe_count += 1
        if self._keyframe_count % self.config.holdout_every == 0:
            self.holdout.add(sample)
            decision = "held_out"
        else:
            self.buffer.add(sample)
            decision = "admitted"
        self._wake.set()
        return decision

    def ready(self) -> bool:
        """Enough data to train and score."""
        return len(self.buffer) >= self.config.min_buffer and len(self.holdout) >= self.config.min_holdout

    # ------------------------------------------------------------------ training

    def _step(self) -> float:
        from monother_ros.distill.step import training_step

        c = self.config
        samples = self.buffer.sample(c.batch_size)
        batch = collate_samples(samples, self.device)
        weights = {"consistency": c.consistency_weight, "smoothness": c.smoothness_weight,
                   "student_nll": c.student_nll_weight}
        with self._train_lock:
            result = training_step(self.model, batch, stage="label_free", distillation=c.distillation, weights=weights,
                                   min_depth=self.min_depth)
            total = result.total
            if c.anchor_weight > 0:
                total = total + c.anchor_weight * self._anchor_penalty()
            self._optimizer.zero_grad(set_to_none=True)
            total.backward()
            if c.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(self._trainable, c.grad_clip)
            self._optimizer.step()
            self.counters["steps"] += 1
        return float(result.losses["total"])

    def _anchor_penalty(self) -> torch.Tensor:
        """sum((w - w_shipped)^2) over the student's trainable weights (L2-SP)."""
        if self._anchor is None:
            self._anchor = {k: v.to(self.device) for k, v in self.shipped_state.items()}
        terms = [((p - self._anchor[name]) ** 2).sum() for name, p in self.model.student.named_parameters()
                 if p.requires_grad and name in self._anchor]
        return torch.stack(terms).sum()

    def _budget_wait(self, step_seconds: float) -> None:
        c = self.config
        wait = step_seconds * (1.0 / c.duty_cycle - 1.0)
        if c.max_steps_per_second > 0:
            wait = max(wait, 1.0 / c.max_steps_per_second - step_seconds)
        if wait > 0:
            self._stop.wait(wait)

    def running_score(self) -> float:
        """Held-out score of the running weights (cached until the held-out slice changes)."""
        version, held = self.holdout.snapshot()
        with self._eval_lock:
            if self._running_score is None or self._running_version != version:
                self._running_score = consistency_score(self._eval_student, held, device=self.device,
                                                        min_confidence=self.config.score_min_confidence,
                                                        max_depth=self.max_depth, min_depth=self.min_depth)
                self._running_version = version
            return self._running_score

    def train_round(self, *, budget: bool = True) -> Optional[RoundResult]:
        """Train ``steps_per_round`` steps, then score, accept / reject / roll back.

        Args:
            budget: respect the compute budget between steps (False for offline experiments).

        Returns:
            The :class:`RoundResult`, or None when paused, stopped or not ready.
        """
        c = self.config
        if self._paused.is_set() or self._stop.is_set() or not self.ready():
            return None
        t0 = time.monotonic()
        self.counters["rounds"] += 1
        rnd = self.counters["rounds"]
        losses = []
        for _ in range(c.steps_per_round):
            if self._paused.is_set() or self._stop.is_set():
                result = RoundResult(rnd, len(losses), "aborted", float("nan"), float("nan"),
                                     float(np.mean(losses)) if losses else float("nan"), time.monotonic() - t0)
                self.last_round = result
                return result
            s0 = time.monotonic()
            losses.append(self._step())
            dt = time.monotonic() - s0
            self.busy_seconds += dt
            if budget:
                self._budget_wait(dt)
        self.last_loss = float(np.mean(losses))
        e0 = time.monotonic()
        with self._train_lock:
            running = self.running_score()
            _, held = self.holdout.snapshot()
            candidate = consistency_score(self.model.student, held, device=self.device,
                                          min_confidence=c.score_min_confidence, max_depth=self.max_depth,
                                          min_depth=self.min_depth)
            gt = evaluate_student(self.model.student, held, device=self.device, max_depth=self.max_depth)
            worse = (not math.isfinite(candidate)) or (
                math.isfinite(running) and candidate > running * (1.0 + c.reject_threshold) + 1e-12)
            if not worse:
                decision = "accepted"
                self.counters["accepted"] += 1
                self.consecutive_rejections = 0
                state = _state_copy(self.model.student)
                self._set_running(state, load_training=False)
                with self._eval_lock:
                    self._running_score, self._running_version = candidate, self.holdout.version
            else:
                self.counters["rejected"] += 1
                self.consecutive_rejections += 1
                decision = "rejected"
                if self.consecutive_rejections >= c.max_rejections:
                    self.model.student.load_state_dict(self.running_state, strict=True)
                    self._optimizer = self._make_optimizer()
                    self.counters["rollbacks"] += 1
                    self.consecutive_rejections = 0
                    decision = "rolled_back"
            if decision == "accepted":
                # Under the training lock, so a concurrent reset cannot be overtaken by this hand-over.
                self._publish(state, "accepted", rnd, candidate)
        # Scoring (and the checkpoint) is compute too: the same budget follows it.
        dt = time.monotonic() - e0
        self.busy_seconds += dt
        if budget:
            self._budget_wait(dt)
        result = RoundResult(rnd, len(losses), decision, candidate, running, self.last_loss,
                             time.monotonic() - t0, gt.get("abs_rel", float("nan")))
        self.last_round = result
        LOG.info("adaptation round %d: %s (candidate %.4f vs running %.4f, loss %.4f, %.1f s)", rnd, decision,
                 candidate, running, self.last_loss, result.seconds)
        return result

    # ------------------------------------------------------------------ hand-over and checkpoints

    def _checkpoint(self, state: Mapping[str, torch.Tensor], reason: str, rnd: int, score: float) -> Optional[Path]:
        if self.store is None:
            return None
        holder = copy.deepcopy(self._eval_student)
        holder.load_state_dict(state, strict=True)
        meta = {"adapt_reason": reason, "adapt_round": rnd, "adapt_score": None if not math.isfinite(score) else score,
                "adapt_counters": dict(self.counters), "adapt_distillation": self.config.distillation}
        path = self.store.write(holder, self.student_config, meta)
        self.counters["checkpoints"] += 1
        self.last_checkpoint = path
        self._save_pending = None
        self._save_backoff = self.SAVE_RETRY_MIN_S
        return path

    def _checkpoint_or_retry_later(self, state: Mapping[str, torch.Tensor], reason: str, rnd: int,
                                   score: float) -> Optional[Path]:
        """``_checkpoint``; on failure (full disk...) log, and let the training thread retry later."""
        try:
            return self._checkpoint(state, reason, rnd, score)
        except Exception as exc:  # noqa: BLE001 - a full disk must not stop adaptation
            self.counters["checkpoint_errors"] += 1
            self._save_pending = (reason, rnd, score)
            self._save_retry_at = time.monotonic() + self._save_backoff
            LOG.error("could not write the adaptation checkpoint (retry in %.0f s): %s", self._save_backoff, exc)
            self._save_backoff = min(2 * self._save_backoff, self.SAVE_RETRY_MAX_S)
            return None

    def retry_failed_save(self, *, now: bool = False) -> Optional[Path]:
        """Write the running weights again after a failed save, once the back-off has passed (or ``now``).

        Called by the training thread; returns the folder written, None when nothing was due or it failed.
        """
        pending = self._save_pending
        if pending is None or (not now and time.monotonic() < self._save_retry_at):
            return None
        with self._train_lock:
            path = self._checkpoint_or_retry_later(self.running_state, *pending)
        if path is not None:
            LOG.info("adaptation checkpoint written after an earlier failure: %s", path)
        return path

    def _publish(self, state: Mapping[str, torch.Tensor], reason: str, rnd: int, score: float) -> Optional[ModelUpdate]:
        path = self._checkpoint_or_retry_later(state, reason, rnd, score)
        update = ModelUpdate({k: v.clone() for k, v in state.items()}, reason, path, rnd, score)
        if self.on_update is not None:
            try:
                self.on_update(update)
                self.counters["updates_sent"] += 1
            except Exception as exc:  # noqa: BLE001 - the receiver's failure is reported, training goes on
                self.counters["update_errors"] += 1
                LOG.error("handing the adapted weights over failed: %s", exc)
        return update

    def save(self) -> Optional[Path]:
        """Checkpoint the running weights now; returns the folder (None without a checkpoint_dir).

        Raises:
            CheckpointError: the write failed (the training thread retries it later).
        """
        if self.store is None:
            return None
        with self._train_lock:
            if self._closed.is_set():  # queued behind the lock while the node shut down
                return None
            path = self._checkpoint_or_retry_later(self.running_state, "save", self.counters["rounds"], float("nan"))
        if path is None:
            raise CheckpointError(f"checkpoint not written ({self.store.last_error}); it is retried")
        return path

    def reset(self) -> ModelUpdate:
        """Back to the shipped weights (training and running), optimiser and rejection count reset; the
        depth engine gets them too and a checkpoint records it (a restart resumes from the shipped model)."""
        with self._train_lock:
            self._set_running(self.shipped_state, load_training=True)
            self.consecutive_rejections = 0
            update = self._publish(self.shipped_state, "reset", self.counters["rounds"], float("nan"))
            self.counters["resets"] += 1
        return update

    def announce(self) -> Optional[ModelUpdate]:
        """Hand the running weights over once (after a resume, so the depth engine runs them)."""
        if self.resumed_from is None or self.on_update is None:
            return None
        update = ModelUpdate({k: v.clone() for k, v in self.running_state.items()}, "resume", self.resumed_from,
                             self.counters["rounds"], float("nan"))
        try:
            self.on_update(update)
            self.counters["updates_sent"] += 1
        except Exception as exc:  # noqa: BLE001
            self.counters["update_errors"] += 1
            LOG.error("handing the resumed weights over failed: %s", exc)
        return update

    # ------------------------------------------------------------------ thread control

    def start(self) -> "OnlineLearner":
        """Start the background training thread (idempotent)."""
        if self._thread is not None and self._thread.is_alive():
            return self
        if self.config.num_threads > 0:
            # Process-wide: keeps a torch depth engine in the same process from starving.
            torch.set_num_threads(self.config.num_threads)
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="adaptation-learner", daemon=True)
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.retry_failed_save()
            except Exception:  # noqa: BLE001 - logged; the next retry or round tries again
                LOG.exception("checkpoint retry failed")
            if self._paused.is_set() or not self.ready():
                self._wake.wait(0.2)
                self._wake.clear()
                continue
            try:
                self.train_round()
            except Exception:  # noqa: BLE001 - keep the thread alive; the error is in the log and counters
                LOG.exception("adaptation round failed")
                self.counters["update_errors"] += 1
                self._stop.wait(1.0)

    def stop(self, timeout: float = 10.0) -> bool:
        """Stop the thread after the current step; True when it ended within ``timeout``."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)
        return self._thread is None or not self._thread.is_alive()

    def close(self, timeout: float = 10.0) -> bool:
        """Stop for good: :meth:`save` calls still waiting for the training lock return without writing
        (a shutdown mid-save finishes the write in flight only), then :meth:`stop`."""
        self._closed.set()
        return self.stop(timeout)

    def pause(self) -> None:
        """Stop admitting pairs and training (the current step finishes)."""
        self._paused.set()

    def resume(self) -> None:
        self._paused.clear()
        self._wake.set()

    @property
    def paused(self) -> bool:
        return self._paused.is_set()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # ------------------------------------------------------------------ status

    def status(self) -> dict[str, Any]:
        """JSON-serialisable state: counters, buffer sizes, keyframe refusals, last round, budget use."""
        kc = self.keyframes.counters
        last = self.last_round
        elapsed = max(time.monotonic() - self._started_at, 1e-9)

        def num(x: float) -> Optional[float]:
            return None if x is None or not math.isfinite(x) else round(float(x), 6)

        return {
            "state": "paused" if self.paused else ("training" if self.ready() else "collecting"),
            "buffer": len(self.buffer),
            "held_out": len(self.holdout),
            "keyframes": {"offered": kc.offered, "admitted": kc.admitted, "rate_limited": kc.rate_limited,
                          "no_motion": kc.no_motion,
                          "low_contrast": kc.low_contrast, "low_confidence": kc.low_confidence,
                          "small_mask": kc.small_mask},
            **{k: int(v) for k, v in self.counters.items()},
            "consecutive_rejections": self.consecutive_rejections,
            "last_loss": num(self.last_loss),
            "running_score": num(self._running_score) if self._running_score is not None else None,
            "last_round": None if last is None else {
                "round": last.round, "decision": last.decision, "candidate_score": num(last.candidate_score),
                "running_score": num(last.running_score), "steps": last.steps, "seconds": num(last.seconds),
                "gt_absrel": num(last.gt_absrel)},
            "duty_cycle_used": round(self.busy_seconds / elapsed, 4),
            "last_checkpoint": str(self.last_checkpoint) if self.last_checkpoint else None,
            # Why the last checkpoint write failed; None once a write succeeds again.
            "checkpoint_error": self.store.last_error if self.store is not None else None,
            "resumed_from": str(self.resumed_from) if self.resumed_from else None,
            "distillation": self.config.distillation,
        }

    def status_json(self) -> str:
        return json.dumps(self.status(), sort_keys=True)
