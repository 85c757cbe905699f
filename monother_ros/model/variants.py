"""Every size fact of the depth network family, in one frozen, JSON-serialisable ``ModelConfig``.

One configuration describes any single-branch network of the family: a DINOv2 ViT/14 encoder
(Depth Anything v1 or v2), the DPT decoder and one of three heads:

* ``relative``: the official Depth Anything ReLU output (affine-invariant inverse depth, *not* metres);
* ``metric_sigmoid``: Depth Anything V2 metric, ``sigmoid(.) * max_depth_m`` (metres);
* ``zoe_bins``: the ZoeDepth metric-bins head used by MonoTher-Depth (metres), on top of the
  relative output and the DPT intermediates.

The official layouts are named presets (``PRESETS``, ``get_preset``); ``ModelConfig.replace`` makes
overrides (``get_preset("dav2-metric-vits").replace(max_depth_m=20.0)`` for the indoor model).
The configuration is copied into every checkpoint (``config.json``) and into ONNX metadata so that
backends read the sizes instead of restating them.

Thermal input: MonoTher-Depth feeds the thermal image replicated to 3 channels (a 1-channel image
copied into R, G and B) normalised with mean 0.45 / std 0.225, so ``in_chans`` stays 3 and the
ImageNet-pretrained patch embedding is reused unchanged; ``modality`` records which normalisation a
checkpoint was trained with (``thermal``: 0.45/0.225, ``rgb``: ImageNet mean/std).
"""
from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass
from typing import Any, Literal, Mapping, get_args

from monother_ros.errors import ConfigError

__all__ = [
    "HeadKind",
    "Generation",
    "Modality",
    "ModelConfig",
    "PRESETS",
    "get_preset",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "THERMAL_MEAN",
    "THERMAL_STD",
]

_logger = logging.getLogger(__name__)

HeadKind = Literal["relative", "metric_sigmoid", "zoe_bins"]
Generation = Literal["v1", "v2"]
Modality = Literal["rgb", "thermal"]
AttractorKind = Literal["mean", "sum"]
AttractorType = Literal["inv", "exp"]
BinCentersType = Literal["normed", "softplus", "hybrid1", "hybrid2"]

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
# MonoTher-Depth thermal normalisation (the thermal image is copied into 3 channels first).
THERMAL_MEAN: tuple[float, float, float] = (0.45, 0.45, 0.45)
THERMAL_STD: tuple[float, float, float] = (0.225, 0.225, 0.225)

# Fields stored as tuples (JSON gives lists back).
_TUPLE_FIELDS = ("taps", "out_channels", "input_size", "mean", "std", "n_attractors")


@dataclass(frozen=True)
class ModelConfig:
    """Configuration of one depth branch (encoder + DPT + head).

    Attributes are grouped as encoder, decoder, head, input and ZoeDepth-bins options; every
    length is in pixels or channels, every depth in metres.
    """

    name: str = "custom"
    generation: Generation = "v2"  # v1 = Depth Anything v1 (taps = last 4 blocks), v2 = DAv2

    # --- encoder: DINOv2 ViT ---
    in_chans: int = 3  # thermal is replicated to 3 channels (see module docstring)
    patch_size: int = 14
    embed_dim: int = 384
    depth: int = 12  # number of transformer blocks
    num_heads: int = 6
    mlp_ratio: float = 4.0
    layerscale_init: float = 1.0  # LayerScale gamma init (DINOv2 hub models: 1.0)
    pos_embed_grid: int = 37  # pos_embed holds 1 + grid*grid tokens (518 / 14 = 37)
    interpolate_offset: float = 0.1  # DINOv2 pos-embed resize offset (scale = (n + 0.1) / grid)
    taps: tuple[int, ...] = (2, 5, 8, 11)  # block indices feeding the DPT (final norm applied)

    # --- decoder: DPT ---
    features: int = 64
    out_channels: tuple[int, int, int, int] = (48, 96, 192, 384)
    head_features_2: int = 32  # channels of the last hidden conv ("out_conv" activation)
    use_bn: bool = False
    use_clstoken: bool = False

    # --- head ---
    head: HeadKind = "metric_sigmoid"
    max_depth_m: float = 80.0
    min_depth_m: float = 1e-3
    confidence_head: bool = False  # student per-pixel confidence (keys under confidence_head.*)
    confidence_hidden: int = 16  # hidden channels of the confidence head

    # --- input ---
    modality: Modality = "rgb"
    input_size: tuple[int, int] = (518, 518)  # default (H, W), multiples of patch_size
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    # --- ZoeDepth metric bins (head == "zoe_bins") ---
    n_bins: int = 64
    bin_embedding_dim: int = 128
    n_attractors: tuple[int, ...] = (16, 8, 4, 1)
    attractor_alpha: float = 1000.0
    attractor_gamma: float = 2.0
    attractor_kind: AttractorKind = "mean"
    attractor_type: AttractorType = "inv"
    min_temp: float = 0.0212
    max_temp: float = 50.0
    bin_centers_type: BinCentersType = "normed"

    def __post_init__(self) -> None:
        for name in _TUPLE_FIELDS:
            value = getattr(self, name)
            if isinstance(value, (list, tuple)):
                object.__setattr__(self, name, tuple(value))
        self._validate()

    # ------------------------------------------------------------------ validation
    def _validate(self) -> None:
        def bad(msg: str) -> ConfigError:
            return ConfigError(f"ModelConfig {self.name!r}: {msg}")

        for fname, kind in (
            ("head", HeadKind),
            ("generation", Generation),
            ("modality", Modality),
            ("attractor_kind", AttractorKind),
            ("attractor_type", AttractorType),
            ("bin_centers_type", BinCentersType),
        ):
            if getattr(self, fname) not in get_args(kind):
                raise bad(f"{fname}={getattr(self, fname)!r} is not one of {get_args(kind)}")
        for fname in ("in_chans", "patch_size", "embed_dim", "depth", "num_heads", "pos_embed_grid",
                      "features", "head_features_2", "confidence_hidden", "n_bins",
                      "bin_embedding_dim"):
            value = getattr(self, fname)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise bad(f"{fname} must be a positive int, got {value!r}")
        if self.embed_dim % self.num_heads:
            raise bad(f"embed_dim {self.embed_dim} is not divisible by num_heads {self.num_heads}")
        if self.mlp_ratio <= 0:
            raise bad(f"mlp_ratio must be > 0, got {self.mlp_ratio}")
        if len(self.taps) != 4:
            raise bad(f"the DPT needs exactly 4 taps, got {self.taps}")
        if any((not isinstance(t, int)) or t < 0 or t >= self.depth for t in self.taps):
            raise bad(f"taps {self.taps} must be block indices in [0, {self.depth})")
        if list(self.taps) != sorted(set(self.taps)):
            raise bad(f"taps {self.taps} must be strictly increasing")
        if len(self.out_channels) != 4 or any(c <= 0 for c in self.out_channels):
            raise bad(f"out_channels must be 4 positive ints, got {self.out_channels}")
        if len(self.input_size) != 2 or any(
            s <= 0 or s % self.patch_size for s in self.input_size
        ):
            raise bad(f"input_size {self.input_size} must be 2 positive multiples of {self.patch_size}")
        if len(self.mean) != self.in_chans or len(self.std) != self.in_chans:
            raise bad(f"mean/std need {self.in_chans} values, got {self.mean} / {self.std}")
        if any(s <= 0 for s in self.std):
            raise bad(f"std must be > 0, got {self.std}")
        if not 0 < self.min_depth_m < self.max_depth_m:
            raise bad(f"need 0 < min_depth_m < max_depth_m, got {self.min_depth_m}, {self.max_depth_m}")
        if self.head == "zoe_bins":
            if not self.n_attractors or any(n <= 0 for n in self.n_attractors):
                raise bad(f"n_attractors must be positive ints, got {self.n_attractors}")
            if not 0 < self.min_temp < self.max_temp:
                raise bad(f"need 0 < min_temp < max_temp, got {self.min_temp}, {self.max_temp}")
        if self.generation == "v1" and tuple(self.taps) != tuple(range(self.depth - 4, self.depth)):
            # Depth Anything v1 always taps the last 4 blocks; other taps are a new variant.
            _logger.warning("v1 config %r taps %s, not the last 4 blocks", self.name, self.taps)

    # ------------------------------------------------------------------ derived
    @property
    def mlp_hidden_dim(self) -> int:
        """Hidden width of each block's MLP (``int(embed_dim * mlp_ratio)``, as DINOv2)."""
        return int(self.embed_dim * self.mlp_ratio)

    @property
    def patch_grid(self) -> tuple[int, int]:
        """Token grid (rows, cols) of the default input size."""
        return (self.input_size[0] // self.patch_size, self.input_size[1] // self.patch_size)

    @property
    def is_metric(self) -> bool:
        """Whether the branch outputs metres (``relative`` outputs inverse-depth-like values)."""
        return self.head != "relative"

    # ------------------------------------------------------------------ (de)serialisation
    def replace(self, **overrides: Any) -> "ModelConfig":
        """Copy with some fields changed (validated again).

        Raises:
            ConfigError: an unknown field or an invalid value.
        """
        unknown = set(overrides) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise ConfigError(f"unknown ModelConfig field(s): {sorted(unknown)}")
        return dataclasses.replace(self, **overrides)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-compatible dict (tuples become lists)."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            out[f.name] = list(value) if isinstance(value, tuple) else value
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "ModelConfig":
        """Inverse of ``to_dict``.

        Raises:
            ConfigError: unknown keys or invalid values.
        """
        if not isinstance(data, Mapping):
            raise ConfigError(f"ModelConfig data must be a mapping, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ConfigError(f"unknown ModelConfig field(s): {sorted(unknown)}")
        try:
            return cls(**dict(data))
        except TypeError as exc:  # wrong types that slip past the field checks
            raise ConfigError(f"invalid ModelConfig: {exc}") from exc

    def to_json(self, indent: int | None = 2) -> str:
        """JSON text of ``to_dict()`` (keys in field order)."""
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_json(cls, text: str) -> "ModelConfig":
        """Inverse of ``to_json``.

        Raises:
            ConfigError: malformed JSON, unknown keys or invalid values.
        """
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"ModelConfig JSON is malformed: {exc}") from exc
        return cls.from_dict(data)


# ---------------------------------------------------------------------- presets
_ENCODERS: dict[str, dict[str, Any]] = {
    # DINOv2 ViT/14 sizes and the DPT widths Depth Anything pairs with each.
    "vits": dict(embed_dim=384, depth=12, num_heads=6, features=64, out_channels=(48, 96, 192, 384)),
    "vitb": dict(embed_dim=768, depth=12, num_heads=12, features=128,
                 out_channels=(96, 192, 384, 768)),
    "vitl": dict(embed_dim=1024, depth=24, num_heads=16, features=256,
                 out_channels=(256, 512, 1024, 1024)),
}
# DAv2 picks intermediate blocks; DA v1 takes the last 4.
_V2_TAPS = {"vits": (2, 5, 8, 11), "vitb": (2, 5, 8, 11), "vitl": (4, 11, 17, 23)}


def _official(name: str, size: str, generation: Generation, head: HeadKind, **extra: Any) -> ModelConfig:
    enc = _ENCODERS[size]
    taps = _V2_TAPS[size] if generation == "v2" else tuple(range(enc["depth"] - 4, enc["depth"]))
    return ModelConfig(name=name, generation=generation, taps=taps, head=head, **enc, **extra)


def _build_presets() -> dict[str, ModelConfig]:
    presets: dict[str, ModelConfig] = {}
    for size in ("vits", "vitb", "vitl"):
        presets[f"dav2-{size}"] = _official(f"dav2-{size}", size, "v2", "relative")
        # Metric DAv2: 80 m is the outdoor (Virtual KITTI) model; indoor is replace(max_depth_m=20).
        presets[f"dav2-metric-{size}"] = _official(
            f"dav2-metric-{size}", size, "v2", "metric_sigmoid", max_depth_m=80.0
        )
        presets[f"dav1-{size}"] = _official(f"dav1-{size}", size, "v1", "relative")
    # Official MonoTher-Depth thermal branch: DA v1 ViT-L + ZoeDepth bins, MS2 input 644x252.
    presets["monother-ms2-vitl"] = _official(
        "monother-ms2-vitl", "vitl", "v1", "zoe_bins",
        max_depth_m=80.0, min_depth_m=1e-3, modality="thermal", input_size=(252, 644),
        mean=THERMAL_MEAN, std=THERMAL_STD,
    )
    # Shipped default student: a small ViT/14 sized for real time on one CPU core, metric sigmoid
    # head plus its own confidence output; 1.94 M parameters. Measured on the 2-core dev machine
    # (shared, so noisy): ONNX Runtime 1 thread ~27-29 ms at 224x280 (vs ~17 ms for a 96-wide,
    # 4-block variant at 182x238 and ~43 ms for 192-wide/6 blocks at 224x280). 224x280 keeps the
    # 4:5 aspect of 640x512 thermal cameras.
    presets["monother-default"] = ModelConfig(
        name="monother-default", generation="v2", embed_dim=128, depth=6, num_heads=4,
        taps=(1, 2, 4, 5), features=32, out_channels=(32, 64, 128, 128), head_features_2=32,
        head="metric_sigmoid", max_depth_m=80.0, confidence_head=True, confidence_hidden=16,
        modality="thermal", input_size=(224, 280), mean=THERMAL_MEAN, std=THERMAL_STD,
    )
    # Unit tests: as small as the structure allows.
    presets["test-tiny"] = ModelConfig(
        name="test-tiny", generation="v2", embed_dim=32, depth=4, num_heads=2, taps=(0, 1, 2, 3),
        features=16, out_channels=(8, 16, 32, 32), head_features_2=8, head="metric_sigmoid",
        max_depth_m=80.0, confidence_head=True, confidence_hidden=4, pos_embed_grid=37,
        input_size=(56, 70),
    )
    return presets


PRESETS: dict[str, ModelConfig] = _build_presets()


def get_preset(name: str) -> ModelConfig:
    """Named configuration.

    Raises:
        ConfigError: unknown name (the message lists the known ones).
    """
    try:
        return PRESETS[name]
    except KeyError:
        raise ConfigError(f"unknown model preset {name!r}; known: {', '.join(sorted(PRESETS))}") from None
