"""ONNX graph rewrites for TensorRT: a baked position embedding and the mixed-fp16 graph of TensorRT 11.

Position embedding
    DINOv2 resamples its learnt 37x37 position grid to the input's patch grid with a bicubic resize
    (``model.vit.interpolate_pos_embed``). At a fixed input size that is a constant, but the exporter
    leaves ``Resize(mode=cubic)`` on the weights in the graph, and TensorRT's cubic resize is not
    guaranteed to use PyTorch's kernel (coefficient -0.75, ``align_corners`` false, offset scales).
    :func:`fold_constant_resizes` evaluates every Resize whose inputs are all constants with ONNX
    Runtime (which the export check matches to PyTorch) and replaces it by an initializer, so no
    backend resamples anything at run time.

Mixed fp16 for strongly typed networks (TensorRT 11 removed ``BuilderFlag.FP16`` and per-layer
precision: types come from the graph). Which parts may run in fp16 in a DINOv2 ViT + DPT head:

* fp16: the matrix products and convolutions (``MatMul``, ``Gemm``, ``Conv``, ``ConvTranspose``):
  nearly all the arithmetic. Their inputs are LayerNorm outputs (order 1), attention probabilities,
  GELU outputs or DPT feature maps, with weights of order 0.01-1; TensorRT accumulates fp16 products
  in fp32, and the product is cast back to fp32 straight away.
* fp32: everything between them. The residual stream: DINOv2 grows a few channels and "high-norm"
  tokens to magnitudes of hundreds to thousands, where fp16's spacing (0.5 at 1000) erases the
  per-block updates and sums approach its 65504 limit. LayerNorm: its variance squares those
  values (1e6 and more: fp16 overflow, the known cause of ViT engines returning zeros/NaN). Softmax:
  exp of unnormalised logits. LayerScale, biases, GELU, the metric head's sigmoid/bins and every
  resize are cheap and stay fp32 too.

So :func:`mixed_fp16` casts the inputs of the four compute ops to fp16 (weights stored as fp16
initializers, activations through ``Cast``) and casts their outputs back to fp32; graph inputs and
outputs stay fp32. ``test_runtime_tensorrt.py`` checks the decision with ONNX Runtime on a DAv2-S-sized
ViT with random weights (fp16 graph vs fp32 graph), including a residual stream pushed past fp16 range,
where the same graph with everything in fp16 overflows.
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import numpy as np

from monother_ros.errors import MonotherError

if TYPE_CHECKING:
    import onnx

__all__ = ["FP16_OPS", "fold_constant_resizes", "mixed_fp16", "all_fp16"]

_logger = logging.getLogger(__name__)

FP16_OPS = frozenset({"MatMul", "Gemm", "Conv", "ConvTranspose"})
_FP16_MAX = float(np.finfo(np.float16).max)


def _constant_names(graph: "onnx.GraphProto") -> set[str]:
    """Tensors computable from initializers alone (initializers, Constant nodes and nodes of those)."""
    known = {init.name for init in graph.initializer}
    for node in graph.node:  # nodes are topologically sorted in a valid graph
        if node.op_type == "Constant" or (node.input and all(not i or i in known for i in node.input)):
            known.update(o for o in node.output if o)
    return known


def fold_constant_resizes(proto: "onnx.ModelProto") -> int:
    """Replace every Resize computed from constants only (the position embedding) by an initializer.

    Args:
        proto: the model, changed in place.

    Returns:
        How many Resize outputs were folded.

    Raises:
        MonotherError: ONNX Runtime could not evaluate the constant part.
    """
    import onnx
    import onnxruntime as ort
    from onnx import helper, numpy_helper

    graph = proto.graph
    constant = _constant_names(graph)
    targets = [n.output[0] for n in graph.node if n.op_type == "Resize" and n.output[0] in constant]
    if not targets:
        return 0
    # The cone of nodes the targets depend on.
    producer = {o: n for n in graph.node for o in n.output}
    needed: set[str] = set()
    stack = list(targets)
    while stack:
        name = stack.pop()
        if name in needed or name not in producer:
            continue
        needed.add(name)
        stack.extend(i for i in producer[name].input if i)
    cone = [n for n in graph.node if any(o in needed for o in n.output)]
    init_names = {i for n in cone for i in n.input} & {init.name for init in graph.initializer}
    sub = helper.make_model(
        helper.make_graph(cone, "fold", [], [helper.make_tensor_value_info(t, onnx.TensorProto.FLOAT, None)
                                             for t in targets],
                          [init for init in graph.initializer if init.name in init_names]),
        opset_imports=list(proto.opset_import), ir_version=proto.ir_version)
    try:
        options = ort.SessionOptions()
        options.log_severity_level = 3
        session = ort.InferenceSession(sub.SerializeToString(), sess_options=options,
                                       providers=["CPUExecutionProvider"])
        values = session.run(targets, {})
    except Exception as exc:  # noqa: BLE001 - ORT raises its own types
        raise MonotherError(f"cannot fold the constant Resize ops ({targets}): {exc}") from exc
    folded = set(targets)
    kept = [n for n in graph.node if not (set(n.output) & folded)]
    del graph.node[:]
    graph.node.extend(kept)
    for name, value in zip(targets, values):
        graph.initializer.append(numpy_helper.from_array(np.asarray(value, np.float32), name))
    _prune_unused(graph)
    _logger.info("baked %d constant Resize output(s) into initializers: %s", len(targets), targets)
    return len(targets)


def _prune_unused(graph: "onnx.GraphProto") -> None:
    """Drop nodes and initializers nothing (transitively) feeds to a graph output."""
    live = {o.name for o in graph.output}
    keep_nodes = []
    for node in reversed(list(graph.node)):
        if any(o in live for o in node.output):
            keep_nodes.append(node)
            live.update(i for i in node.input if i)
    keep_nodes.reverse()
    del graph.node[:]
    graph.node.extend(keep_nodes)
    inits = [init for init in graph.initializer if init.name in live]
    del graph.initializer[:]
    graph.initializer.extend(inits)


def mixed_fp16(proto: "onnx.ModelProto", ops: frozenset[str] = FP16_OPS) -> "onnx.ModelProto":
    """A copy of an fp32 graph where ``ops`` compute in fp16 and everything else stays fp32.

    Args:
        proto: fp32 model (graph inputs/outputs float32).
        ops: node types to run in fp16 (default :data:`FP16_OPS`; see the module docstring).

    Returns:
        A new model: for each such node, fp32 inputs are cast to fp16 (initializers converted once,
        activations by a ``Cast`` shared between consumers), its outputs are renamed and cast back to
        fp32 under their original names. Graph inputs and outputs keep float32.

    Raises:
        MonotherError: a weight does not fit fp16 (|w| > 65504).
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    out = onnx.ModelProto()
    out.CopyFrom(proto)
    graph = out.graph
    inits = {init.name: init for init in graph.initializer}
    fp16_inits: dict[str, str] = {}
    casts_in: dict[str, str] = {}
    new_nodes = []
    float_tensors = _float_tensors(out)
    for node in graph.node:
        if node.op_type not in ops:
            new_nodes.append(node)
            continue
        for k, name in enumerate(node.input):
            if not name or name not in float_tensors:
                continue
            init = inits.get(name)
            if init is not None and init.data_type == TensorProto.FLOAT:
                if name not in fp16_inits:
                    value = numpy_helper.to_array(init)
                    if value.size and float(np.max(np.abs(value))) > _FP16_MAX:
                        raise MonotherError(f"weight {name!r} exceeds the fp16 range (max |w| "
                                            f"{float(np.max(np.abs(value))):.3g}); build in fp32")
                    fp16_inits[name] = f"{name}__fp16"
                    graph.initializer.append(numpy_helper.from_array(value.astype(np.float16), fp16_inits[name]))
                node.input[k] = fp16_inits[name]
            else:
                if name not in casts_in:
                    casts_in[name] = f"{name}__fp16"
                    new_nodes.append(helper.make_node("Cast", [name], [casts_in[name]], to=TensorProto.FLOAT16,
                                                      name=f"{name}__cast_fp16"))
                node.input[k] = casts_in[name]
        back = []
        for k, name in enumerate(node.output):
            if not name:
                continue
            node.output[k] = f"{name}__fp16out"
            back.append(helper.make_node("Cast", [node.output[k]], [name], to=TensorProto.FLOAT,
                                         name=f"{name}__cast_fp32"))
        new_nodes.append(node)
        new_nodes.extend(back)
    del graph.node[:]
    graph.node.extend(new_nodes)
    _prune_unused(graph)
    return out


def all_fp16(proto: "onnx.ModelProto") -> "onnx.ModelProto":
    """The naive conversion :func:`mixed_fp16` is measured against in the tests: the residual adds,
    LayerNorm, softmax and the element-wise ops in fp16 too. Not used for engines."""
    return mixed_fp16(proto, ops=FP16_OPS | _NAIVE_EXTRA)


_NAIVE_EXTRA = frozenset({"Add", "Sub", "Mul", "Div", "LayerNormalization", "Softmax", "Erf", "Sqrt", "Pow",
                          "Relu", "Sigmoid"})


def _float_tensors(proto: "onnx.ModelProto") -> set[str]:
    """Names of float32 tensors (by shape inference; initializers and graph inputs included)."""
    import onnx
    from onnx import TensorProto

    try:
        inferred = onnx.shape_inference.infer_shapes(proto)
    except Exception:  # noqa: BLE001 - fall back to the value infos the exporter wrote
        inferred = proto
    g = inferred.graph
    names = {i.name for i in g.initializer if i.data_type == TensorProto.FLOAT}
    for value in list(g.input) + list(g.value_info) + list(g.output):
        if value.type.tensor_type.elem_type == TensorProto.FLOAT:
            names.add(value.name)
    return names
