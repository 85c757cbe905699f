"""Training configuration: one frozen dataclass, YAML files in ``config/train/``, ``key=value`` overrides.

A YAML file holds any subset of ``TrainConfig`` fields; ``base: other.yaml`` (relative to the file) makes
it an override of another file, so the ablations are three-line files on top of the stage-2 config.
CLI overrides are ``key=value`` strings whose values are parsed as YAML scalars/lists
(``epochs=2``, ``train_data=[a.mcap,b.mcap]``, ``distillation=none``). The resolved configuration is
stored in every checkpoint (``TrainConfig.to_dict``) and in the run's ``config.yaml``.

Defaults follow MonoTher-Depth / ZoeDepth (the reference implementation): AdamW lr 8.5e-5 with the encoder and DPT head at
lr/50, weight decay 0.01, OneCycle (pct_start 0.7, div_factor 1, final_div_factor 1e4, momentum cycled
0.85-0.95), gradient clip 0.1, frozen BatchNorm, 5 epochs, batch 4.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Mapping, Sequence, get_args, get_origin, get_type_hints

import yaml

from monother_ros.errors import ConfigError

Stage = Literal["supervised", "label_free"]
Distillation = Literal["none", "no_confidence", "full"]
GtSource = Literal["auto", "depth", "lidar", "none"]
Switch = Literal["auto", "on", "off"]
Amp = Literal["off", "bf16", "fp16"]


@dataclass(frozen=True)
class LossWeights:
    """Weights of the loss terms (names as ``distill.losses.SupervisedWeights``); 0 switches a term off.

    Defaults are the MS2 stage-1 weights (the reference implementation); the label-free stage uses ``consistency``,
    ``smoothness`` and ``student_nll`` (the stage-2 YAML sets consistency 2, the ViViD label-free value).
    """

    silog_rgb: float = 1.0  # SILog of the RGB teacher vs GT (stage 1)
    silog_thermal: float = 1.0  # SILog of the thermal student vs GT (stage 1)
    consistency: float = 0.2  # confidence-weighted |d_rgb - d_thermal->rgb|
    nll: float = 0.1  # confidence network NLL vs the teacher's GT residual (stage 1)
    smoothness: float = 0.01  # edge-aware smoothness of the RGB depth
    confidence_smoothness: float = 1e-4
    student_nll: float = 0.1  # student confidence head NLL: vs GT (stage 1), vs confident teacher depth (stage 2)


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run depends on (units in trailing comments)."""

    # --- I/O ---
    out_dir: str = "runs/train"  # checkpoints/, metrics.jsonl, config.yaml, model/ go here
    init_from: str = "scratch"  # scratch | resume (latest checkpoint in out_dir) | a checkpoint or model dir
    student_init: str = ""  # optional model dir (our format) for the student weights
    teacher_init: str = ""  # optional model dir for the RGB teacher weights
    checkpoint_every_steps: int = 0  # 0: once per epoch
    keep_checkpoints: int = 2  # older step checkpoints are deleted
    log_every_steps: int = 10

    # --- data ---
    train_data: tuple[str, ...] = ()  # bag paths (dir, .mcap, .db3) or "ms2:<root>:<split>"
    val_data: tuple[str, ...] = ()  # held-out bags / MS2 splits scored after each epoch
    cache_dir: str = ""  # .npz cache of decoded, resized frames ("" = in memory only)
    thermal_topic: str = "/thermal/image_raw"
    thermal_info_topic: str = "/thermal/camera_info"
    rgb_topic: str = "/rgb/image_raw"
    rgb_info_topic: str = "/rgb/camera_info"
    tf_topic: str = "/tf_static"
    gt_depth_topic: str = "/gt/depth"
    lidar_topic: str = "/lidar/points"
    gt_source: GtSource = "auto"  # auto: /gt/depth if present, else LiDAR, else none
    pair_tolerance_s: float = 0.03  # thermal/RGB stamps further apart are not paired
    max_frames_per_source: int = 0  # 0: all
    frame_stride: int = 1  # keep every n-th pair
    input_size: tuple[int, ...] = ()  # thermal (H, W), multiples of 14; () = the model's input_size
    rgb_input_size: tuple[int, ...] = ()  # () = same as input_size
    augment: bool = True  # photometric only (brightness, contrast, gamma), seeded
    brightness: float = 0.1  # additive jitter range +/- (images in [0, 1])
    contrast: float = 0.1  # multiplicative jitter range 1 +/- contrast
    gamma: tuple[float, ...] = (0.9, 1.1)  # gamma range
    rgb_low_light: float = 0.0  # probability of a night-like RGB (dim, lamp-lit pools, read noise); 0 = reference recipe
    num_workers: int = 0  # DataLoader worker processes (0: load in the training process)
    pin_memory: bool = True  # page-locked batches for faster host-to-GPU copies (CUDA only)

    # --- model ---
    model: str = "monother-default"  # student preset (model.variants.PRESETS)
    teacher_model: str = ""  # teacher preset; "" = the student's preset with RGB normalisation
    confidence_width: int = 64  # confidence U-Net base width (official 64; smaller trains faster on CPU)

    # --- stage and losses ---
    stage: Stage = "supervised"
    distillation: Distillation = "full"
    weights: LossWeights = field(default_factory=LossWeights)
    student_nll_keep_fraction: float = 0.5  # stage 2: student NLL on the most confident teacher pixels

    # --- optimiser / schedule ---
    epochs: int = 5
    batch_size: int = 4  # global batch (split over the ranks)
    micro_batch_size: int = 0  # > 0: gradient accumulation over micro-batches of this many samples per rank
    lr: float = 8.5e-5
    encoder_lr_factor: float = 0.02  # encoder (pretrained.*) and DPT head (depth_head.*) at lr * factor
    confidence_lr_factor: float = 1.0  # confidence network at lr * factor
    teacher_lr_factor: float = 1.0  # every RGB-teacher parameter at lr * (its group's factor) * this
    weight_decay: float = 0.01
    betas: tuple[float, ...] = (0.9, 0.999)
    pct_start: float = 0.7
    div_factor: float = 1.0
    final_div_factor: float = 1e4
    cycle_momentum: bool = True
    grad_clip: float = 0.1  # max global grad norm; 0 = off
    freeze_batchnorm: bool = True

    # --- system ---
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda
    # torch.use_deterministic_algorithms (warn-only) and no cuDNN autotuning: bit-identical repeats, but on a
    # GPU several times slower. auto = on for the CPU, off on CUDA (where off also turns cuDNN benchmark on).
    deterministic: Switch = "auto"
    amp: Amp = "off"  # mixed precision for the networks' forward (losses and warping stay fp32); fp16 adds a GradScaler
    threads: int = 0  # torch.set_num_threads per process; 0 = leave
    stop_after_steps: int = 0  # stop (after a checkpoint) once this many optimiser steps are done; 0 = off

    def __post_init__(self) -> None:
        hints = get_type_hints(type(self))
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "weights":
                if isinstance(value, Mapping):
                    object.__setattr__(self, "weights", _build(LossWeights, value, "weights."))
                continue
            object.__setattr__(self, f.name, _coerce(value, hints[f.name], f.name))
        self._validate()

    def _validate(self) -> None:
        if self.confidence_width <= 0:
            raise ConfigError(f"confidence_width must be positive, got {self.confidence_width}")
        if self.epochs <= 0 or self.batch_size <= 0:
            raise ConfigError(f"epochs and batch_size must be positive, got {self.epochs}, {self.batch_size}")
        if self.lr <= 0 or not 0 < self.pct_start < 1:
            raise ConfigError(f"need lr > 0 and 0 < pct_start < 1, got {self.lr}, {self.pct_start}")
        if min(self.encoder_lr_factor, self.confidence_lr_factor, self.teacher_lr_factor, self.weight_decay, self.grad_clip) < 0:
            raise ConfigError("encoder_lr_factor, confidence_lr_factor, teacher_lr_factor, weight_decay and grad_clip must be >= 0")
        for name in ("input_size", "rgb_input_size"):
            size = getattr(self, name)
            if size and (len(size) != 2 or any(s <= 0 or s % 14 for s in size)):
                raise ConfigError(f"{name} must be () or (H, W) positive multiples of 14, got {size}")
        if len(self.gamma) != 2 or not 0 < self.gamma[0] <= self.gamma[1]:
            raise ConfigError(f"gamma must be (low, high) with 0 < low <= high, got {self.gamma}")
        if not 0.0 <= self.rgb_low_light <= 1.0:
            raise ConfigError(f"rgb_low_light is a probability in [0, 1], got {self.rgb_low_light}")
        if self.pair_tolerance_s < 0 or self.frame_stride < 1:
            raise ConfigError("pair_tolerance_s must be >= 0 and frame_stride >= 1")
        if self.stage == "label_free" and self.distillation == "none":
            raise ConfigError(
                "stage=label_free needs distillation no_confidence or full: without distillation there is no "
                "label-free training signal (the no-distillation ablation is the stage-1 model itself)"
            )
        if self.num_workers < 0:
            raise ConfigError(f"num_workers must be >= 0, got {self.num_workers}")
        if not 0 < self.student_nll_keep_fraction <= 1:
            raise ConfigError(f"student_nll_keep_fraction must be in (0, 1], got {self.student_nll_keep_fraction}")

    # ------------------------------------------------------------------ (de)serialisation
    def to_dict(self) -> dict[str, Any]:
        """Plain YAML/JSON-compatible dict (tuples become lists, weights a nested dict)."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if dataclasses.is_dataclass(value):
                value = dataclasses.asdict(value)
            out[f.name] = list(value) if isinstance(value, tuple) else value
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "TrainConfig":
        return _build(cls, data, "")

    def deterministic_on(self, device_type: str) -> bool:
        """Whether deterministic algorithms are used on a device of ``device_type`` (``cpu``, ``cuda``)."""
        return self.deterministic == "on" or (self.deterministic == "auto" and device_type != "cuda")

    def replace(self, **overrides: Any) -> "TrainConfig":
        data = self.to_dict()
        for key, value in overrides.items():
            _set_dotted(data, key, value)
        return TrainConfig.from_dict(data)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


def _build(cls: type, data: Mapping[str, Any], prefix: str):
    if not isinstance(data, Mapping):
        raise ConfigError(f"{prefix or 'config'} must be a mapping, got {type(data).__name__}")
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"unknown config key(s): {', '.join(prefix + u for u in unknown)}; known: {', '.join(sorted(known))}")
    if cls is LossWeights:
        hints = get_type_hints(cls)
        data = {k: _coerce(v, hints[k], prefix + k) for k, v in data.items()}
    try:
        return cls(**dict(data))
    except TypeError as exc:
        raise ConfigError(f"invalid {cls.__name__}: {exc}") from exc


def _coerce(value: Any, hint: Any, name: str) -> Any:
    """Check/convert ``value`` to the field type ``hint``; ``ConfigError`` names the field otherwise."""
    origin = get_origin(hint)
    if origin is Literal:
        # YAML 1.1 reads on/off as booleans (and older configs stored deterministic as true/false).
        if isinstance(value, bool) and {"on", "off"} <= set(get_args(hint)):
            value = "on" if value else "off"
        elif value is False and "off" in get_args(hint):
            value = "off"
        if value not in get_args(hint):
            raise ConfigError(f"{name}={value!r} is not one of {get_args(hint)}")
        return value
    if origin is tuple:
        if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
            value = (value,) if name in ("train_data", "val_data") and isinstance(value, str) else value
        if not isinstance(value, Sequence) or isinstance(value, (str, bytes)):
            raise ConfigError(f"{name} must be a list, got {value!r}")
        inner = get_args(hint)[0]
        return tuple(_coerce(v, inner, f"{name}[{i}]") for i, v in enumerate(value))
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{name} must be true/false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{name} must be an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, str):
            # YAML 1.1 reads "1e-3" (no dot) as a string; accept any numeric text for float fields.
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{name} must be a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{name} must be a string, got {value!r}")
        return value
    return value


def _set_dotted(data: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    node = data
    for part in parts[:-1]:
        if not isinstance(node.get(part), dict):
            raise ConfigError(f"config key {key!r}: {part!r} is not a group")
        node = node[part]
    node[parts[-1]] = value


def read_yaml(path: str | Path, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """The mapping of a config file with its ``base:`` chain merged in (the file's own keys win)."""
    path = Path(path).resolve()
    if path in _seen:
        raise ConfigError(f"config files include each other: {' -> '.join(map(str, _seen + (path,)))}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except OSError as exc:
        raise ConfigError(f"cannot read training config {path}: {exc}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"training config {path} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"training config {path} must hold a mapping")
    base = data.pop("base", None)
    if base is None:
        return data
    merged = read_yaml(path.parent / str(base), _seen + (path,))
    for key, value in data.items():
        if key == "weights" and isinstance(value, dict):
            merged.setdefault("weights", {}).update(value)
        else:
            merged[key] = value
    return merged


def parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    """``["epochs=2", "weights.consistency=2.0"]`` -> ``{"epochs": 2, "weights.consistency": 2.0}``."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {item!r} is not key=value")
        try:
            out[key.strip()] = yaml.safe_load(text) if text.strip() else ""
        except yaml.YAMLError as exc:
            raise ConfigError(f"override {item!r}: value is not valid YAML: {exc}") from exc
    return out


def load_config(path: str | Path | None = None, overrides: Sequence[str] | Mapping[str, Any] = ()) -> TrainConfig:
    """Defaults <- YAML file (with its ``base`` chain) <- overrides; validated.

    Raises:
        ConfigError: unreadable file, unknown key, wrong type or invalid value.
    """
    config = TrainConfig.from_dict(read_yaml(path)) if path else TrainConfig()
    if overrides:
        values = dict(overrides) if isinstance(overrides, Mapping) else parse_overrides(overrides)
        config = config.replace(**values)
    return config
