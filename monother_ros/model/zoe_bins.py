"""ZoeDepth metric-bins head, as MonoTher-Depth configures it on top of a Depth Anything v1 DPT.

Reference: Bhat et al., "ZoeDepth: Zero-shot Transfer by Combining Relative and Metric Depth"
(arXiv 2302.12288); MonoTher-Depth (arXiv 2504.16127) uses it with 64 "normed" bins in
[min_depth, max_depth], bin embedding 128, attractors [16, 8, 4, 1] of the inverse kind averaged
("mean"), and the conditional log-binomial output with temperature in [0.0212, 50].

Data flow (shapes for a (B, 3, H, W) input to the DPT, h_i the decoder resolutions):

1. ``conv2`` (1x1) on the bottleneck ``l4_rn`` (B, F, h0, w0);
2. ``seed_bin_regressor``: n_bins normalised widths -> bin centres in metres, renormalised to [0, 1];
   ``seed_projector``: the first bin embedding (B, E, h0, w0);
3. four (``projectors[i]``, ``attractors[i]``) steps on ``r4, r3, r2, r1``: each projector embeds the
   decoder feature, the previous embedding is resized (bilinear, align_corners) and added, the
   attractor MLP predicts n_attractors points and moves every (resized) bin centre by the mean of
   ``dx / (1 + alpha dx^2)`` over the attractors; the metric centres are sorted and clipped;
4. ``conditional_log_binomial``: on ``[out_conv (32 ch), relative depth (1 ch)]`` concatenated with
   the last embedding (resized to the output size) an MLP predicts a success probability p and a
   temperature t per pixel; the bin probabilities are ``softmax(log_binom(K-1, k) + k log p +
   (K-1-k) log(1-p)) / t)`` over k = 0..K-1;
5. metric depth = sum over bins of probability x (resized) bin centre.

Fidelity notes (behaviours of the reference code that this module reproduces on purpose):

* The reference attractor layers call the distance function without passing their ``alpha`` and
  ``gamma``, so the function defaults (alpha 300, gamma 2) are what the released weights were
  trained with; the configured ``attractor_alpha`` (1000 in MonoTher's config) has no effect.
  ``REFERENCE_ATTRACTOR_ALPHA`` / ``REFERENCE_ATTRACTOR_GAMMA`` hold the effective values.
* In the "normed" attractor the channel pairs are normalised and then the normalisation is
  discarded (the first channel of each pair plus 1e-3 is the attractor position).
* ``b_prev`` passed to the next attractor is the *unsorted* normalised centre set.
* The log-binomial uses a Stirling-like ``n log n - k log k - (n-k) log(n-k)`` (with its epsilons),
  not the exact binomial coefficient; ``k_idx`` (int64) and ``K_minus_1`` (float) are persistent
  buffers, so they appear in the official state dict under
  ``conditional_log_binomial.log_binomial_transform.{k_idx,K_minus_1}``.

Not implemented: the reference's ``inverse_midas`` option (invert and min-max normalise the relative
depth before conditioning), False in every released ZoeDepth / Depth Anything / MonoTher config.

Parameter names equal the official ones (``conv2``, ``seed_bin_regressor._net.{0,2}``,
``seed_projector._net.{0,2}``, ``projectors.N._net.{0,2}``, ``attractors.N._net.{0,2}``,
``conditional_log_binomial.mlp.{0,2}``), so an official head state dict loads with identity keys.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from monother_ros.errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover - typing only
    from monother_ros.model.dpt import DptIntermediates
    from monother_ros.model.variants import ModelConfig

__all__ = [
    "REFERENCE_ATTRACTOR_ALPHA",
    "REFERENCE_ATTRACTOR_GAMMA",
    "ZoeBinsSpec",
    "SeedBinRegressor",
    "Projector",
    "AttractorLayer",
    "LogBinomial",
    "ConditionalLogBinomial",
    "ZoeBinsHead",
    "inv_attractor",
    "exp_attractor",
    "log_binom_stirling",
]

_logger = logging.getLogger(__name__)

# The reference AttractorLayer calls ``dist(dx)`` with the function defaults (see module docstring).
REFERENCE_ATTRACTOR_ALPHA = 300.0
REFERENCE_ATTRACTOR_GAMMA = 2
# Constants of the reference layers.
_SEED_MLP_DIM = 256  # SeedBinRegressor hidden width
_PROJECTOR_MLP_DIM = 128  # Projector hidden width
_ATTRACTOR_MLP_DIM = 128  # AttractorLayer hidden width
_BIN_EPS = 1e-3  # added to ReLU outputs before normalising widths / attractor positions
_P_EPS = 1e-4  # ConditionalLogBinomial p/t linear-norm epsilon and LogBinomial clamp


def _resize(x: Tensor, size: Sequence[int]) -> Tensor:
    """Bilinear resize with align_corners=True, the interpolation the reference uses everywhere."""
    return F.interpolate(x, size=(int(size[0]), int(size[1])), mode="bilinear", align_corners=True)


def inv_attractor(dx: Tensor, alpha: float = REFERENCE_ATTRACTOR_ALPHA,
                  gamma: int = REFERENCE_ATTRACTOR_GAMMA) -> Tensor:
    """Inverse attractor shift ``dx / (1 + alpha * dx**gamma)`` (dx = attractor - centre)."""
    return dx.div(1 + alpha * dx.pow(gamma))


def exp_attractor(dx: Tensor, alpha: float = REFERENCE_ATTRACTOR_ALPHA,
                  gamma: int = REFERENCE_ATTRACTOR_GAMMA) -> Tensor:
    """Exponential attractor shift ``exp(-alpha * |dx|**gamma) * dx``."""
    return torch.exp(-alpha * (torch.abs(dx) ** gamma)) * dx


def log_binom_stirling(n: Tensor, k: Tensor, eps: float = 1e-7) -> Tensor:
    """Stirling-like ``log C(n, k)`` of the reference: ``n log n - k log k - (n-k) log(n-k+eps)``.

    ``eps`` is added to n and k first, exactly as the reference does.
    """
    n = n + eps
    k = k + eps
    return n * torch.log(n) - k * torch.log(k) - (n - k) * torch.log(n - k + eps)


@dataclass(frozen=True)
class ZoeBinsSpec:
    """Sizes and constants of the bins head (derived from a ``ModelConfig``).

    Attributes:
        bottleneck_channels: channels of ``l4_rn`` (the DPT ``features``).
        decoder_channels: channels of ``r4, r3, r2, r1`` (all ``features`` in the DPT).
        out_conv_channels: channels of the ``out_conv`` activation (32 in Depth Anything).
        n_bins, bin_embedding_dim, n_attractors: bins head sizes.
        min_depth, max_depth: bin range in metres.
        attractor_kind: "mean" or "sum" over attractors.
        attractor_type: "inv" or "exp".
        bin_centers_type: "normed", "softplus", "hybrid1" (normed seed, unbounded attractors) or
            "hybrid2" (unbounded seed, normed attractors), as in the reference.
        min_temp, max_temp: temperature range of the log-binomial output.
    """

    bottleneck_channels: int
    decoder_channels: tuple[int, ...]
    out_conv_channels: int = 32
    n_bins: int = 64
    bin_embedding_dim: int = 128
    n_attractors: tuple[int, ...] = (16, 8, 4, 1)
    min_depth: float = 1e-3
    max_depth: float = 80.0
    attractor_kind: Literal["mean", "sum"] = "mean"
    attractor_type: Literal["inv", "exp"] = "inv"
    bin_centers_type: Literal["normed", "softplus", "hybrid1", "hybrid2"] = "normed"
    min_temp: float = 0.0212
    max_temp: float = 50.0

    def __post_init__(self) -> None:
        if len(self.decoder_channels) != len(self.n_attractors):
            raise ConfigError(
                f"zoe_bins: {len(self.decoder_channels)} decoder features but "
                f"{len(self.n_attractors)} attractor counts {self.n_attractors}"
            )
        if self.attractor_kind not in ("mean", "sum"):
            raise ConfigError(f"zoe_bins: attractor_kind {self.attractor_kind!r} not in ('mean', 'sum')")
        if self.attractor_type not in ("inv", "exp"):
            raise ConfigError(f"zoe_bins: attractor_type {self.attractor_type!r} not in ('inv', 'exp')")
        if self.bin_centers_type not in ("normed", "softplus", "hybrid1", "hybrid2"):
            raise ConfigError(f"zoe_bins: bin_centers_type {self.bin_centers_type!r} is unknown")
        if not 0 < self.min_depth < self.max_depth:
            raise ConfigError(
                f"zoe_bins: need 0 < min_depth < max_depth, got {self.min_depth}, {self.max_depth}"
            )
        if not 0 < self.min_temp < self.max_temp:
            raise ConfigError(f"zoe_bins: need 0 < min_temp < max_temp, got {self.min_temp}, {self.max_temp}")

    @classmethod
    def from_config(cls, config: "ModelConfig") -> "ZoeBinsSpec":
        """Spec of the head a ``ModelConfig`` describes (the DPT gives every decoder level
        ``features`` channels, and ``head_features_2`` channels to ``out_conv``)."""
        n_levels = len(config.n_attractors)
        return cls(
            bottleneck_channels=int(config.features),
            decoder_channels=(int(config.features),) * n_levels,
            out_conv_channels=int(config.head_features_2),
            n_bins=int(config.n_bins),
            bin_embedding_dim=int(config.bin_embedding_dim),
            n_attractors=tuple(int(n) for n in config.n_attractors),
            min_depth=float(config.min_depth_m),
            max_depth=float(config.max_depth_m),
            attractor_kind=config.attractor_kind,
            attractor_type=config.attractor_type,
            bin_centers_type=config.bin_centers_type,
            min_temp=float(config.min_temp),
            max_temp=float(config.max_temp),
        )

    @property
    def normed_seed(self) -> bool:
        return self.bin_centers_type in ("normed", "hybrid1")

    @property
    def normed_attractors(self) -> bool:
        return self.bin_centers_type in ("normed", "hybrid2")


class SeedBinRegressor(nn.Module):
    """First bin centres per pixel.

    Normed (``normed=True``): ReLU widths + 1e-3, normalised to sum 1, scaled to the depth range,
    edges = min_depth + cumulative widths, centres = edge midpoints (bounded in the range).
    Unbounded: the Softplus outputs are the centres.
    """

    def __init__(self, in_features: int, n_bins: int, min_depth: float, max_depth: float,
                 *, normed: bool = True, mlp_dim: int = _SEED_MLP_DIM) -> None:
        super().__init__()
        self.normed = normed
        self.min_depth = float(min_depth)
        self.max_depth = float(max_depth)
        self._net = nn.Sequential(
            nn.Conv2d(in_features, mlp_dim, 1, 1, 0),
            nn.ReLU(),
            nn.Conv2d(mlp_dim, n_bins, 1, 1, 0),
            nn.ReLU() if normed else nn.Softplus(),
        )

    def forward(self, x: Tensor) -> Tensor:
        """Bin centres (B, n_bins, h, w), metres when normed."""
        widths = self._net(x)
        if not self.normed:
            return widths
        widths = widths + _BIN_EPS
        widths = widths / widths.sum(dim=1, keepdim=True)
        widths = (self.max_depth - self.min_depth) * widths
        # Prepend min_depth along the bin axis so that the cumulative sum gives the bin edges.
        widths = F.pad(widths, (0, 0, 0, 0, 1, 0), mode="constant", value=self.min_depth)
        edges = torch.cumsum(widths, dim=1)
        return 0.5 * (edges[:, :-1, ...] + edges[:, 1:, ...])


class Projector(nn.Module):
    """1x1 conv MLP (in -> 128 -> out) embedding a feature map into the bin-embedding space."""

    def __init__(self, in_features: int, out_features: int, mlp_dim: int = _PROJECTOR_MLP_DIM) -> None:
        super().__init__()
        self._net = nn.Sequential(
            nn.Conv2d(in_features, mlp_dim, 1, 1, 0),
            nn.ReLU(),
            nn.Conv2d(mlp_dim, out_features, 1, 1, 0),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self._net(x)


class AttractorLayer(nn.Module):
    """One attractor step moving every bin centre towards per-pixel attractor points.

    Args:
        in_features: bin-embedding channels.
        n_attractors: attractor points per pixel.
        min_depth, max_depth: metric range (normed variant).
        kind: "mean" or "sum" of the shifts over attractors.
        attractor_type: "inv" or "exp" distance function.
        normed: bounded ("normed") variant; otherwise the unbounded Softplus variant.
        alpha, gamma: distance-function strength; the defaults are the values the reference uses
            in practice (see module docstring).
    """

    def __init__(self, in_features: int, n_attractors: int, min_depth: float, max_depth: float, *,
                 kind: Literal["mean", "sum"] = "mean", attractor_type: Literal["inv", "exp"] = "inv",
                 normed: bool = True, alpha: float = REFERENCE_ATTRACTOR_ALPHA,
                 gamma: int = REFERENCE_ATTRACTOR_GAMMA, mlp_dim: int = _ATTRACTOR_MLP_DIM) -> None:
        super().__init__()
        self.n_attractors = int(n_attractors)
        self.min_depth = float(min_depth)
        self.max_depth = float(max_depth)
        self.kind = kind
        self.attractor_type = attractor_type
        self.normed = normed
        self.alpha = float(alpha)
        self.gamma = int(gamma)
        # Normed: 2 channels per attractor (a linear-norm pair of which only the first is used).
        out = self.n_attractors * 2 if normed else self.n_attractors
        self._net = nn.Sequential(
            nn.Conv2d(in_features, mlp_dim, 1, 1, 0),
            nn.ReLU(),
            nn.Conv2d(mlp_dim, out, 1, 1, 0),
            nn.ReLU() if normed else nn.Softplus(),
        )

    def forward(self, x: Tensor, b_prev: Tensor,
                prev_b_embedding: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Move the bin centres.

        Args:
            x: bin embedding (B, E, h, w).
            b_prev: previous centres (B, n_bins, h', w'), normalised to [0, 1] in the normed variant.
            prev_b_embedding: previous embedding (B, E, h'', w''), resized and added to ``x``.

        Returns:
            (new centres as passed to the next step (B, n_bins, h, w), centres in metres (B,
            n_bins, h, w): sorted and clipped to the range in the normed variant).
        """
        if prev_b_embedding is not None:
            x = x + _resize(prev_b_embedding, x.shape[-2:])
        a = self._net(x)
        n, _, h, w = a.shape
        if self.normed:
            a = (a + _BIN_EPS).view(n, self.n_attractors, 2, h, w)
            # The reference normalises the pair and then overwrites it with the raw first channel.
            a = a[:, :, 0, ...]
        centres = _resize(b_prev, (h, w))
        dist = inv_attractor if self.attractor_type == "inv" else exp_attractor
        shifts = dist(a.unsqueeze(2) - centres.unsqueeze(1), self.alpha, self.gamma)  # (n, na, nbins, h, w)
        delta = torch.mean(shifts, dim=1) if self.kind == "mean" else torch.sum(shifts, dim=1)
        new_centres = centres + delta
        if not self.normed:
            return new_centres, new_centres
        metric = (self.max_depth - self.min_depth) * new_centres + self.min_depth
        metric, _ = torch.sort(metric, dim=1)
        metric = torch.clip(metric, self.min_depth, self.max_depth)
        return new_centres, metric


class LogBinomial(nn.Module):
    """Log-binomial distribution over ``n_classes`` ordered bins given p and a temperature.

    Buffers (persistent, as in the reference state dict): ``k_idx`` (1, K, 1, 1) int64 = 0..K-1,
    ``K_minus_1`` (1, 1, 1, 1) float = K-1.
    """

    def __init__(self, n_classes: int) -> None:
        super().__init__()
        self.n_classes = int(n_classes)
        self.register_buffer("k_idx", torch.arange(0, self.n_classes).view(1, -1, 1, 1))
        self.register_buffer("K_minus_1", torch.tensor([float(self.n_classes - 1)]).view(1, -1, 1, 1))

    def forward(self, p: Tensor, t: Tensor | float = 1.0, eps: float = _P_EPS) -> Tensor:
        """Bin probabilities.

        Args:
            p: success probability (B, H, W) or (B, 1, H, W) in [0, 1].
            t: temperature, scalar or (B, 1, H, W) > 0.
            eps: clamp of p and 1 - p away from 0.

        Returns:
            (B, K, H, W) probabilities (softmax over K).
        """
        if p.ndim == 3:
            p = p.unsqueeze(1)
        # Float copies of the index buffers: same values as the reference's int64 arithmetic,
        # without mixed int/float ops in exported graphs.
        k = self.k_idx.to(p.dtype)
        k_max = self.K_minus_1.to(p.dtype)
        # Float bounds (the reference passes an int 1; same values) keep torch.export/ONNX happy.
        one_minus_p = torch.clamp(1 - p, min=eps, max=1.0)
        p = torch.clamp(p, min=eps, max=1.0)
        logits = (log_binom_stirling(k_max, k) + k * torch.log(p)
                  + (self.n_classes - 1 - k) * torch.log(one_minus_p))
        return torch.softmax(logits / t, dim=1)


class ConditionalLogBinomial(nn.Module):
    """MLP predicting p and t per pixel from (main features, condition), then ``LogBinomial``.

    Args:
        in_features: main feature channels (out_conv + relative depth = 33 in the reference).
        condition_dim: condition channels (bin embedding, 128).
        n_classes: number of bins.
        min_temp, max_temp: temperature range.
        bottleneck_factor: hidden width = (in_features + condition_dim) // bottleneck_factor.
        p_eps: epsilon of the linear normalisation of the p and t pairs.
    """

    def __init__(self, in_features: int, condition_dim: int, n_classes: int, *, min_temp: float,
                 max_temp: float, bottleneck_factor: int = 2, p_eps: float = _P_EPS) -> None:
        super().__init__()
        self.p_eps = float(p_eps)
        self.min_temp = float(min_temp)
        self.max_temp = float(max_temp)
        self.log_binomial_transform = LogBinomial(n_classes)
        bottleneck = (in_features + condition_dim) // bottleneck_factor
        self.mlp = nn.Sequential(
            nn.Conv2d(in_features + condition_dim, bottleneck, kernel_size=1, stride=1, padding=0),
            nn.GELU(),
            nn.Conv2d(bottleneck, 4, kernel_size=1, stride=1, padding=0),  # 2 for p, 2 for t
            nn.Softplus(),
        )

    def forward(self, x: Tensor, cond: Tensor) -> Tensor:
        """Bin probabilities (B, n_classes, H, W) from x (B, C_x, H, W) and cond (B, C_c, H, W)."""
        pt = self.mlp(torch.cat((x, cond), dim=1))
        p, t = pt[:, :2, ...], pt[:, 2:, ...]
        p = p + self.p_eps
        p = p[:, 0, ...] / (p[:, 0, ...] + p[:, 1, ...])
        t = t + self.p_eps
        t = t[:, 0, ...] / (t[:, 0, ...] + t[:, 1, ...])
        t = t.unsqueeze(1)
        t = (self.max_temp - self.min_temp) * t + self.min_temp
        return self.log_binomial_transform(p, t)


def _get(dpt: Any, name: str) -> Tensor:
    """Field of a DPT-intermediates object (attribute or mapping)."""
    if isinstance(dpt, Mapping):
        return dpt[name]
    return getattr(dpt, name)


class ZoeBinsHead(nn.Module):
    """ZoeDepth metric-bins head over DPT intermediates (official parameter names).

    Args:
        config: a ``ModelConfig`` (head "zoe_bins") or a ``ZoeBinsSpec``.
    """

    def __init__(self, config: "ModelConfig | ZoeBinsSpec") -> None:
        super().__init__()
        spec = config if isinstance(config, ZoeBinsSpec) else ZoeBinsSpec.from_config(config)
        self.spec = spec
        self.min_depth = spec.min_depth
        self.max_depth = spec.max_depth
        btl = spec.bottleneck_channels
        emb = spec.bin_embedding_dim
        self.conv2 = nn.Conv2d(btl, btl, kernel_size=1, stride=1, padding=0)
        self.seed_bin_regressor = SeedBinRegressor(btl, spec.n_bins, spec.min_depth, spec.max_depth,
                                                   normed=spec.normed_seed)
        self.seed_projector = Projector(btl, emb)
        self.projectors = nn.ModuleList([Projector(c, emb) for c in spec.decoder_channels])
        self.attractors = nn.ModuleList([
            AttractorLayer(emb, n, spec.min_depth, spec.max_depth, kind=spec.attractor_kind,
                           attractor_type=spec.attractor_type, normed=spec.normed_attractors)
            for n in spec.n_attractors
        ])
        self.conditional_log_binomial = ConditionalLogBinomial(
            spec.out_conv_channels + 1, emb, spec.n_bins, min_temp=spec.min_temp, max_temp=spec.max_temp
        )

    def forward(self, rel_depth: Tensor,
                dpt: "DptIntermediates | Mapping[str, Tensor]") -> tuple[Tensor, Tensor]:
        """Metric depth from the relative depth and the DPT intermediates.

        Args:
            rel_depth: (B, 1, H, W) relative depth (the DPT's ReLU output), any resolution: it is
                resized (bilinear, align_corners) to ``out_conv``'s size as in the reference.
            dpt: ``DptIntermediates`` (or a mapping) with ``out_conv`` (B, C_out, H, W), ``l4_rn`` (B, F, h0, w0) and
                ``r4, r3, r2, r1`` (B, F, h_i, w_i).

        Returns:
            metric_depth: (B, 1, H, W) float, metres, at ``out_conv``'s resolution.
            bin_embedding: (B, E, H, W) last bin embedding resized to ``out_conv``'s resolution
                (the 128 channels of the reference's similarity features).
        """
        if rel_depth.ndim == 3:
            rel_depth = rel_depth.unsqueeze(1)
        out_conv = _get(dpt, "out_conv")
        x = self.conv2(_get(dpt, "l4_rn"))
        seed_centres = self.seed_bin_regressor(x)
        if self.spec.normed_attractors:
            b_prev = (seed_centres - self.min_depth) / (self.max_depth - self.min_depth)
        else:
            b_prev = seed_centres
        prev_embedding = self.seed_projector(x)
        blocks = [_get(dpt, name) for name in ("r4", "r3", "r2", "r1")][: len(self.projectors)]
        embedding = prev_embedding
        centres = seed_centres
        for projector, attractor, block in zip(self.projectors, self.attractors, blocks):
            embedding = projector(block)
            b_prev, centres = attractor(embedding, b_prev, prev_embedding)
            prev_embedding = embedding
        size = out_conv.shape[-2:]
        last = torch.cat([out_conv, _resize(rel_depth, size)], dim=1)
        embedding = _resize(embedding, size)
        probs = self.conditional_log_binomial(last, embedding)
        centres = _resize(centres, probs.shape[-2:])
        metric = torch.sum(probs * centres, dim=1, keepdim=True)
        return metric, embedding
