"""fp16 inference weights for a depth branch: cast once at load, fp32 where accuracy needs it.

Per-frame autocast re-casts every weight on every call (on the H200 it made fp16 slower than fp32);
here the parameters are converted once and the matrix products and convolutions run on fp16 tensors.
What stays fp32 (the split the TensorRT fp16 engines use too):

* the ViT residual stream: ``pos_embed`` and the LayerScale gammas stay fp32, so the tokens become fp32
  when the position embedding is added and ``x + gamma * f(x)`` accumulates in fp32. DINOv2's stream
  carries a few large-magnitude channels: in fp16 they keep ~3 significant digits and a value past
  65504 becomes inf (then NaN depth), while the fp16 attention and MLP outputs added to it stay small;
* LayerNorm: fp32 weights, computed on the fp32 stream, output rounded to fp16 for the matrix products
  that follow (:class:`Fp32LayerNorm`: one cast kernel per LayerNorm, 13 in the shipped student, 49 in
  ViT-L);
* the attention softmax: ``scaled_dot_product_attention`` on fp16 CUDA tensors is a fused kernel that
  keeps its running max and sum in fp32 (nothing to change);
* the last 1x1 convolution of the DPT (the logit of ``sigmoid * max_depth``, or the relative depth)
  and its activation: near 0 the sigmoid's relative error equals the logit's absolute error, which an
  fp16 logit of magnitude ~10 would put near 1e-2;
* the ZoeDepth metric-bins head and the student confidence head (small; the bins head divides
  log-binomial logits of magnitude up to ~600 by temperatures down to 0.02 and sums 64 bin centres,
  beyond fp16's range and precision).

``fp32_residual_stream=False`` keeps only the last two points (fp16 stream and LayerNorm, whose
statistics PyTorch's kernels accumulate in fp32 anyway): fewer kernels, for checkpoints known to have no
large activations. Measured (``bench/fp16_accuracy_cpu.py``: fp16 vs fp32 depth, max |a - b| / max |b|,
torch's fp16 CPU kernels, one N(0, 1) input; random weights have no large activations, so the fp32
stream's main purpose shows only in ``test_residual_value_past_fp16_range_stays_finite_with_the_fp32_stream``:
one residual channel at 1e5 gives NaN depth with the fp16 stream, a finite one within 1e-2 by default):

================================================  ========  ===============  ==================
network                                           all fp16  fp16 stream      default (fp32 stream)
================================================  ========  ===============  ==================
shipped student (trained), 112x140                9.5e-4    3.9e-4           3.3e-4
DAv2-S metric, random weights, 266x266            8.7e-4    2.1e-5           1.6e-5
ViT-L 6 blocks + ZoeDepth bins, random, 126x322   1.5e-3    1.6e-4           8.6e-5
================================================  ========  ===============  ==================

Loading fp32 state dicts works unchanged (``TorchEngine.swap_weights``): ``load_state_dict`` copies
into each parameter in place, casting to its dtype (so captured CUDA graphs stay valid).
"""
from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["Fp32LayerNorm", "cast_floats", "convert_to_fp16", "fp32_parameter_names"]

_logger = logging.getLogger(__name__)


class Fp32LayerNorm(nn.LayerNorm):
    """LayerNorm computed in fp32 (fp32 weights) whose output is rounded to ``out_dtype``.

    Same parameter names as ``nn.LayerNorm`` (state dicts are unchanged).
    """

    out_dtype: torch.dtype = torch.float16

    def forward(self, x: Tensor) -> Tensor:
        w = None if self.weight is None else self.weight.float()
        b = None if self.bias is None else self.bias.float()
        return F.layer_norm(x.float(), self.normalized_shape, w, b, self.eps).to(self.out_dtype)


def cast_floats(value: Any, dtype: torch.dtype) -> Any:
    """``value`` with every floating tensor (also inside tuples, named tuples, mappings) cast to ``dtype``."""
    if isinstance(value, Tensor):
        return value.to(dtype) if value.is_floating_point() and value.dtype != dtype else value
    if isinstance(value, tuple) and hasattr(value, "_fields"):  # NamedTuple (DptIntermediates)
        return type(value)(*(cast_floats(v, dtype) for v in value))
    if isinstance(value, (tuple, list)):
        return type(value)(cast_floats(v, dtype) for v in value)
    if isinstance(value, Mapping):
        return {k: cast_floats(v, dtype) for k, v in value.items()}
    return value


def _add_input_cast(module: nn.Module, dtype: torch.dtype) -> None:
    """Cast the floating inputs of ``module`` to ``dtype`` on entry (a forward pre-hook)."""

    def cast_inputs(_module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        return cast_floats(args, dtype), cast_floats(kwargs, dtype)

    module.register_forward_pre_hook(cast_inputs, with_kwargs=True)


def _replace_layernorms(root: nn.Module) -> list[nn.Module]:
    """Swap every ``nn.LayerNorm`` under ``root`` for an :class:`Fp32LayerNorm` sharing its parameters."""
    new_modules = []
    for parent in list(root.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is nn.LayerNorm:
                new = Fp32LayerNorm(child.normalized_shape, eps=child.eps, elementwise_affine=False)
                new.elementwise_affine = child.elementwise_affine
                new.weight, new.bias = child.weight, child.bias  # the same Parameter objects (same keys)
                setattr(parent, name, new)
                new_modules.append(new)
    return new_modules


def convert_to_fp16(model: nn.Module, *, fp32_residual_stream: bool = True) -> nn.Module:
    """Convert a ``DepthBranch`` (in place) for fp16 inference; see the module docstring for what stays fp32.

    Args:
        model: a ``model.branch.DepthBranch`` with fp32 weights, in eval mode (any device; CUDA is
            where fp16 pays).
        fp32_residual_stream: keep the ViT residual stream, position embedding, LayerScale and
            LayerNorm weights in fp32 (default); False runs them in fp16.

    Returns:
        ``model``, its parameters fp16 except those listed by :func:`fp32_parameter_names`.

    Raises:
        ValueError: not a depth branch (no ``pretrained`` ViT / ``depth_head``).
    """
    vit = getattr(model, "pretrained", None)
    head = getattr(model, "depth_head", None)
    if vit is None or head is None:
        raise ValueError(f"convert_to_fp16 expects a DepthBranch, got {type(model).__name__}")
    keep: list[nn.Module] = []
    keep_tensors: list[Tensor] = []
    if fp32_residual_stream:
        keep += _replace_layernorms(vit)
        keep_tensors += [vit.pos_embed] + [ls.gamma for block in vit.blocks for ls in (block.ls1, block.ls2)]
    # The depth logit and its activation (sigmoid * max_depth / ReLU relative depth), and the small heads.
    conv2 = head.scratch.output_conv2
    islands = [conv2[2], conv2[3]] + [m for m in (getattr(model, "bins_head", None),
                                                  getattr(model, "confidence_head", None)) if m is not None]
    for island in islands:
        _add_input_cast(island, torch.float32)
    keep += islands
    keep_ids = {id(t) for m in keep for t in (*m.parameters(), *m.buffers())} | {id(t) for t in keep_tensors}
    for module in model.modules():
        for tensors in (module._parameters, module._buffers):
            for t in tensors.values():
                if t is not None and id(t) not in keep_ids and t.is_floating_point():
                    t.data = t.data.to(torch.float16)
    _logger.debug("fp16 weights: %d fp32 tensors kept", len(fp32_parameter_names(model)))
    return model


def fp32_parameter_names(model: nn.Module) -> list[str]:
    """Names of the floating parameters and buffers that are not fp16 (for logs and tests)."""
    names = [n for n, p in model.named_parameters() if p.dtype != torch.float16]
    names += [n for n, b in model.named_buffers() if b.is_floating_point() and b.dtype != torch.float16]
    return names
