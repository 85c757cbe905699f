"""fp16 inference weights for a depth branch: cast once at load, fp32 where accuracy needs it.

Per-frame autocast re-casts every weight on every call (on the H200 it made fp16 slower than fp32);
here the parameters are converted once and the network then runs on fp16 tensors, except:

* the ViT residual stream: ``pos_embed`` and the LayerScale gammas stay fp32, so ``x + gamma * f(x)``
  accumulates in fp32 (the tokens become fp32 when the fp32 position embedding is added). DINOv2's
  residual stream carries a few large-magnitude channels; fp16 keeps only ~3 significant digits there
  and every block adds to it;
* LayerNorm: fp32 weights, statistics computed on the fp32 stream, output rounded to fp16 for the
  matmuls that follow (:class:`Fp32LayerNorm`; no fp16 ``x**2`` overflow, the usual fp16 LayerNorm
  failure);
* attention softmax: ``scaled_dot_product_attention`` on fp16 CUDA tensors is a fused kernel that keeps
  the softmax statistics in fp32 (nothing to change);
* the last 1x1 convolution of the DPT (the logit of ``sigmoid * max_depth`` or the relative depth) and
  its activation: fp32 input and weights. Near 0 the sigmoid's relative error equals the logit's
  absolute error, which an fp16 logit of magnitude ~10 would put at ~1e-2;
* the ZoeDepth metric-bins head and the student confidence head: fp32 (small; the bins head divides
  log-binomial logits by temperatures down to 0.02 and sums 64 bin centres, beyond fp16's range and
  precision).

``swap_weights``-style ``load_state_dict`` with fp32 tensors works unchanged: ``copy_`` casts into each
parameter's dtype in place (so captured CUDA graphs stay valid).
"""
from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["Fp32LayerNorm", "convert_to_fp16", "fp32_parameter_names"]

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


def _cast_floats(value: Any, dtype: torch.dtype) -> Any:
    """``value`` with every floating tensor (also inside tuples, named tuples, mappings) cast to ``dtype``."""
    if isinstance(value, Tensor):
        return value.to(dtype) if value.is_floating_point() and value.dtype != dtype else value
    if isinstance(value, tuple) and hasattr(value, "_fields"):  # NamedTuple (DptIntermediates)
        return type(value)(*(_cast_floats(v, dtype) for v in value))
    if isinstance(value, (tuple, list)):
        return type(value)(_cast_floats(v, dtype) for v in value)
    if isinstance(value, Mapping):
        return {k: _cast_floats(v, dtype) for k, v in value.items()}
    return value


def _add_input_cast(module: nn.Module, dtype: torch.dtype) -> None:
    """Cast the floating inputs of ``module`` to ``dtype`` on entry (a forward pre-hook)."""

    def cast_inputs(_module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        return _cast_floats(args, dtype), _cast_floats(kwargs, dtype)

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


def convert_to_fp16(model: nn.Module) -> nn.Module:
    """Convert a ``DepthBranch`` (in place) for fp16 inference; see the module docstring for what stays fp32.

    Args:
        model: a ``model.branch.DepthBranch`` with fp32 weights, in eval mode (any device; CUDA is
            where fp16 pays).

    Returns:
        ``model``, its parameters fp16 except those listed by :func:`fp32_parameter_names`.

    Raises:
        ValueError: not a depth branch (no ``pretrained`` ViT / ``depth_head``).
    """
    vit = getattr(model, "pretrained", None)
    head = getattr(model, "depth_head", None)
    if vit is None or head is None:
        raise ValueError(f"convert_to_fp16 expects a DepthBranch, got {type(model).__name__}")
    keep: list[nn.Module] = _replace_layernorms(vit)
    keep_tensors = [vit.pos_embed] + [ls.gamma for block in vit.blocks for ls in (block.ls1, block.ls2)]
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
