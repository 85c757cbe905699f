"""ONNX export of the thermal student at a fixed input size, and reading back its metadata.

The exported graph has one input ``thermal`` (1, 3, h, w) float32 (already normalised: preprocessing
stays outside the network so every backend shares ``core/preprocess.py``) and the outputs ``depth``
(1, 1, h, w) float32 metres and, when the model has a confidence head, ``confidence`` (1, 1, h, w) in
[0, 1]. The ONNX ``metadata_props`` carry the model configuration (JSON), input size, mean/std, depth
range and model hash under ``monother.*`` keys, so backends read them instead of restating them.

Exporter: torch's default dynamo-based exporter (``torch.export`` + onnxscript), opset 18. It handles
every layer of the family (the TorchScript exporter is not needed, so there is no fallback to it).
The bicubic resampling of the position embedding is baked into a constant for the exported size
(``runtime/onnx_passes.py``), so no backend runs a cubic Resize.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from monother_ros.errors import BackendUnavailableError, CheckpointError, ConfigError, MonotherError

if TYPE_CHECKING:  # heavy imports stay inside functions (the CLI imports this module for --help)
    import onnx
    import torch

    from monother_ros.model.variants import ModelConfig

__all__ = [
    "DEFAULT_OPSET",
    "INPUT_NAME",
    "OUTPUT_DEPTH",
    "OUTPUT_CONFIDENCE",
    "OnnxModelInfo",
    "export_onnx",
    "export_model_dir",
    "read_onnx_info",
    "parse_hw",
]

_logger = logging.getLogger(__name__)

DEFAULT_OPSET = 18
INPUT_NAME = "thermal"
OUTPUT_DEPTH = "depth"
OUTPUT_CONFIDENCE = "confidence"
META_PREFIX = "monother."
# Protobuf cannot serialise a single message over 2 GiB: bigger weights go to an external data file.
_EXTERNAL_DATA_THRESHOLD = 1_800_000_000


@dataclass(frozen=True)
class OnnxModelInfo:
    """What an exported ONNX file says about itself (from its ``monother.*`` metadata).

    Attributes:
        path: the ONNX file.
        model_name: configuration name (e.g. ``monother-default``).
        model_hash: hex digest of weights + configuration.
        input_hw: (H, W) the graph was exported for.
        mean, std: per-channel normalisation the network expects.
        min_depth_m, max_depth_m: the model's depth range in metres.
        has_confidence: whether the graph has a ``confidence`` output.
        config_json: the full ``ModelConfig`` JSON.
        opset: default-domain opset of the graph.
    """

    path: Path
    model_name: str
    model_hash: str
    input_hw: tuple[int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    min_depth_m: float
    max_depth_m: float
    has_confidence: bool
    config_json: str
    opset: int


def parse_hw(text: str) -> tuple[int, int]:
    """Parse ``"HxW"`` (e.g. ``"252x644"``) into ``(252, 644)``.

    Raises:
        ConfigError: malformed text or non-positive sizes.
    """
    parts = str(text).lower().replace("*", "x").split("x")
    try:
        h, w = (int(p) for p in parts)
    except ValueError:
        raise ConfigError(f"input size must look like HxW (e.g. 252x644), got {text!r}") from None
    if h <= 0 or w <= 0:
        raise ConfigError(f"input size must be positive, got {text!r}")
    return h, w


def _check_input_hw(input_hw: Sequence[int], patch_size: int) -> tuple[int, int]:
    if len(input_hw) != 2:
        raise ConfigError(f"input size must be (H, W), got {tuple(input_hw)}")
    h, w = int(input_hw[0]), int(input_hw[1])
    if h <= 0 or w <= 0 or h % patch_size or w % patch_size:
        raise ConfigError(f"input size {h}x{w} must be positive multiples of the patch size {patch_size}")
    return h, w


def state_dict_hash(model: "torch.nn.Module", config: "ModelConfig") -> str:
    """:func:`hash_tensors` of a model's state dict (used when the checkpoint gives no hash)."""
    return hash_tensors(model.state_dict(), config)


def hash_tensors(state_dict: "Mapping[str, torch.Tensor]", config: "ModelConfig") -> str:
    """sha256 over the configuration JSON and every tensor (name, dtype, shape, bytes), in key order."""
    import torch

    h = hashlib.sha256(config.to_json(indent=None).encode("utf-8"))
    for name in sorted(state_dict):
        t = state_dict[name].detach().cpu().contiguous()
        if t.dtype == torch.bfloat16:  # numpy has no bfloat16; a float32 copy is as unique
            t = t.float()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode("utf-8"))
        h.update(t.numpy().tobytes())
    return h.hexdigest()


def _wrap(model: "torch.nn.Module", has_confidence: bool) -> "torch.nn.Module":
    """A module returning exactly the exported outputs: ``depth`` or ``(depth, confidence)``."""
    import inspect

    import torch

    takes_features = "features" in inspect.signature(model.forward).parameters

    class ExportWrapper(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, thermal: torch.Tensor):  # noqa: ANN201 - tuple or tensor by design of export
            # DepthBranch: features=False skips the similarity features (not exported anyway).
            out = self.inner(thermal, features=False) if takes_features else self.inner(thermal)
            depth, confidence = _depth_and_confidence(out)
            if has_confidence:
                if confidence is None:
                    raise ConfigError("the model config has a confidence head but the model returned none")
                return depth, confidence
            return depth

    return ExportWrapper(model)


def _depth_and_confidence(out: Any) -> tuple["torch.Tensor", "torch.Tensor | None"]:
    """Accept the branch's output object (``.depth``/``.confidence``) or a ``(depth, confidence)`` tuple."""
    if isinstance(out, (tuple, list)):
        depth = out[0]
        confidence = out[1] if len(out) > 1 else None
    elif hasattr(out, "depth"):
        depth, confidence = out.depth, getattr(out, "confidence", None)
    else:
        depth, confidence = out, None
    return depth, confidence


def _metadata(config: "ModelConfig", input_hw: tuple[int, int], model_hash: str,
              has_confidence: bool) -> dict[str, str]:
    return {
        META_PREFIX + "model_config": config.to_json(indent=None),
        META_PREFIX + "model_name": config.name,
        META_PREFIX + "model_hash": model_hash,
        META_PREFIX + "input_hw": json.dumps(list(input_hw)),
        META_PREFIX + "mean": json.dumps(list(config.mean)),
        META_PREFIX + "std": json.dumps(list(config.std)),
        META_PREFIX + "min_depth_m": repr(float(config.min_depth_m)),
        META_PREFIX + "max_depth_m": repr(float(config.max_depth_m)),
        META_PREFIX + "has_confidence": json.dumps(bool(has_confidence)),
    }


def export_onnx(
    model: "torch.nn.Module",
    config: "ModelConfig",
    out_path: str | os.PathLike,
    *,
    input_hw: Sequence[int] | None = None,
    model_hash: str | None = None,
    opset: int = DEFAULT_OPSET,
    verify: bool = True,
    rtol: float = 1e-4,
) -> OnnxModelInfo:
    """Export a depth branch to ONNX at a fixed input size.

    Args:
        model: the branch; ``model(x)`` with x (1, 3, h, w) float32 returns an object with ``.depth``
            (1, 1, h, w) metres and ``.confidence`` (1, 1, h, w) or None, or a ``(depth, confidence)``
            tuple. It is exported in eval mode on the CPU in float32 (a copy; the caller's is untouched).
        config: its configuration (copied into the metadata).
        out_path: destination ``.onnx`` file, written atomically.
        input_hw: (H, W), multiples of the patch size; default ``config.input_size``.
        model_hash: weights + config digest; default computed from the state dict.
        opset: ONNX opset (>= 17: LayerNormalization is a single op from 17 on, which TensorRT maps to
            its normalisation layer).
        verify: run ONNX Runtime once on a random input and compare with PyTorch.
        rtol: tolerance of that comparison, relative to the largest output magnitude.

    Returns:
        The written file's :class:`OnnxModelInfo`.

    Raises:
        ConfigError: bad input size or opset.
        MonotherError: export failed or ONNX Runtime disagrees with PyTorch.
    """
    import copy

    import numpy as np
    import onnx
    import torch

    if opset < 17:
        raise ConfigError(f"opset must be >= 17, got {opset}")
    _require_onnxscript()
    hw = _check_input_hw(input_hw if input_hw is not None else config.input_size, config.patch_size)
    has_confidence = bool(config.confidence_head)
    if model_hash is None:
        model_hash = state_dict_hash(model, config)
    out_path = Path(out_path)

    cpu_model = copy.deepcopy(model).to(device="cpu", dtype=torch.float32).eval()
    wrapper = _wrap(cpu_model, has_confidence).eval()
    example = torch.randn(1, 3, *hw, generator=torch.Generator().manual_seed(0))
    output_names = [OUTPUT_DEPTH, OUTPUT_CONFIDENCE] if has_confidence else [OUTPUT_DEPTH]

    t0 = time.perf_counter()
    try:
        # The exporter prints progress lines and FutureWarnings from its own internals; keep CLIs quiet.
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings(), _quiet_exporter_logs():
            warnings.simplefilter("ignore", FutureWarning)
            program = torch.onnx.export(
                wrapper, (example,), dynamo=True, opset_version=opset, input_names=[INPUT_NAME],
                output_names=output_names, verbose=False, optimize=True,
            )
    except Exception as exc:  # the exporter raises many types; the user needs one clear message
        raise MonotherError(f"ONNX export of {config.name} at {hw[0]}x{hw[1]} failed: {exc}") from exc
    proto: onnx.ModelProto = program.model_proto
    _logger.info("exported %s at %dx%d in %.1f s", config.name, hw[0], hw[1], time.perf_counter() - t0)

    del proto.metadata_props[:]
    for key, value in _metadata(config, hw, model_hash, has_confidence).items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.producer_name = "monother_ros"
    _check_graph_io(proto, hw, output_names)
    from monother_ros.runtime.onnx_passes import fold_constant_resizes

    # The position embedding resampled for this input size becomes a constant (runtime/onnx_passes.py).
    fold_constant_resizes(proto)

    def check(candidate: Path) -> None:
        """ONNX Runtime on the written file vs PyTorch, before the file replaces ``out_path``."""
        with torch.inference_mode():
            ref = wrapper(example)
        refs = ref if isinstance(ref, tuple) else (ref,)
        got = _run_onnxruntime(candidate, example.numpy())
        for name, r, g in zip(output_names, refs, got):
            r = r.numpy()
            err = float(np.max(np.abs(r - g))) / max(float(np.max(np.abs(r))), 1e-12)
            if not np.isfinite(err) or err > rtol:
                raise MonotherError(f"ONNX Runtime output {name!r} differs from PyTorch by {err:.2e} relative "
                                    f"(> {rtol:.0e}) for {config.name} at {hw[0]}x{hw[1]}")
            _logger.debug("ONNX Runtime vs PyTorch %s: %.2e relative", name, err)

    _save_atomic(proto, out_path, check=check if verify else None)
    return read_onnx_info(out_path)


def _require_onnxscript() -> None:
    """Raise a clear error when onnxscript (needed by torch's exporter, and only by it) is missing.

    onnxscript is an optional dependency: running shipped or already exported ONNX files never needs it.
    """
    import importlib.util

    if importlib.util.find_spec("onnxscript") is None:
        raise BackendUnavailableError("ONNX export needs the optional package onnxscript (torch's ONNX "
                                      "exporter uses it): pip install onnxscript")


@contextlib.contextmanager
def _quiet_exporter_logs() -> Any:
    """Silence the exporter's warnings about optional torchvision ops (irrelevant to these models)."""
    registration = logging.getLogger("torch.onnx._internal.exporter._registration")
    old = registration.level
    registration.setLevel(logging.ERROR)
    try:
        yield
    finally:
        registration.setLevel(old)


def _check_graph_io(proto: "onnx.ModelProto", hw: tuple[int, int], output_names: list[str]) -> None:
    inputs = [i.name for i in proto.graph.input]
    outputs = [o.name for o in proto.graph.output]
    if inputs != [INPUT_NAME] or outputs != output_names:
        raise MonotherError(f"exported graph has inputs {inputs} / outputs {outputs}, "
                            f"expected [{INPUT_NAME!r}] / {output_names}")
    for value in list(proto.graph.input) + list(proto.graph.output):
        dims = [d.dim_value for d in value.type.tensor_type.shape.dim]
        expected = [1, 3, *hw] if value.name == INPUT_NAME else [1, 1, *hw]
        if dims != expected:
            raise MonotherError(f"exported tensor {value.name!r} has shape {dims}, expected {expected}")


def _save_atomic(proto: "onnx.ModelProto", out_path: Path, check: "Any | None" = None) -> None:
    """Write next to the destination, run ``check(temp_path)``, then ``os.replace`` (external data
    first, graph last). A failed write or check leaves any existing ``out_path`` untouched."""
    import onnx

    out_path.parent.mkdir(parents=True, exist_ok=True)
    large = proto.ByteSize() > _EXTERNAL_DATA_THRESHOLD if _proto_small_enough(proto) else True
    with tempfile.TemporaryDirectory(prefix=".export-", dir=out_path.parent) as tmp:
        tmp_file = Path(tmp) / out_path.name
        data_name = out_path.name + ".data"
        if large:
            onnx.save_model(proto, tmp_file, save_as_external_data=True, all_tensors_to_one_file=True,
                            location=data_name, size_threshold=1024)
        else:
            onnx.save_model(proto, tmp_file)
        if check is not None:
            check(tmp_file)
        if large:
            os.replace(Path(tmp) / data_name, out_path.parent / data_name)
        os.replace(tmp_file, out_path)


def _proto_small_enough(proto: "onnx.ModelProto") -> bool:
    """Whether ``ByteSize`` can be asked at all (it fails past 2 GiB)."""
    try:
        proto.ByteSize()
        return True
    except Exception:  # protobuf raises on oversize messages
        return False


def _run_onnxruntime(path: Path, x: "Any") -> list["Any"]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
    return session.run(None, {INPUT_NAME: x})


def read_onnx_info(path: str | os.PathLike) -> OnnxModelInfo:
    """Read the ``monother.*`` metadata of an exported ONNX file (weights are not loaded).

    Raises:
        CheckpointError: missing, unreadable or corrupt file, or metadata missing/malformed (e.g. an
            ONNX file exported by other tools).
        BackendUnavailableError: the onnx package is not installed.
    """
    try:
        import onnx
    except ImportError as exc:  # pip-only on a ROS install (no rosdep key): say so instead of a traceback
        raise BackendUnavailableError("reading ONNX files needs the onnx package: pip install onnx") from exc

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"ONNX file not found: {path}")
    try:
        proto = onnx.load_model(str(path), load_external_data=False)
    except Exception as exc:  # protobuf DecodeError and friends
        raise CheckpointError(f"ONNX file {path} is corrupt or not an ONNX model: {exc}") from exc
    meta = {p.key[len(META_PREFIX):]: p.value for p in proto.metadata_props if p.key.startswith(META_PREFIX)}
    try:
        h, w = json.loads(meta["input_hw"])
        opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 0)
        return OnnxModelInfo(
            path=path,
            model_name=meta["model_name"],
            model_hash=meta["model_hash"],
            input_hw=(int(h), int(w)),
            mean=tuple(float(v) for v in json.loads(meta["mean"])),
            std=tuple(float(v) for v in json.loads(meta["std"])),
            min_depth_m=float(meta["min_depth_m"]),
            max_depth_m=float(meta["max_depth_m"]),
            has_confidence=bool(json.loads(meta["has_confidence"])),
            config_json=meta["model_config"],
            opset=int(opset),
        )
    except (KeyError, ValueError, TypeError) as exc:
        raise CheckpointError(f"ONNX file {path} lacks monother metadata ({exc!r}); export it with "
                              "`monother export-onnx`") from exc


def export_model_dir(model_dir: str | os.PathLike, out_path: str | os.PathLike, *,
                     input_hw: Sequence[int] | None = None, verify: bool = True) -> OnnxModelInfo:
    """Load a saved model folder (``model/checkpoints.py`` format) and export it.

    Raises:
        CheckpointError: the folder cannot be loaded.
        ConfigError, MonotherError: as :func:`export_onnx`.
    """
    model, config, model_hash = load_model_dir(model_dir)
    return export_onnx(model, config, out_path, input_hw=input_hw, model_hash=model_hash, verify=verify)


def load_model_dir(model_dir: str | os.PathLike) -> tuple["torch.nn.Module", "ModelConfig", str]:
    """``(model in eval mode, config, model hash)`` of a saved model folder.

    The hash is the checkpoint's own (sha256 of ``model.safetensors``, which embeds the config), so a
    folder's ONNX files and TensorRT engines are keyed by exactly the weights they came from.
    """
    return load_student(model_dir)


def load_student(model_dir: str | os.PathLike) -> tuple["torch.nn.Module", "ModelConfig", str]:
    """Load a model folder for inference: the branch itself, or the thermal student of a MonoTher dual
    model folder (student + RGB teacher + confidence network), with the folder's hash."""
    import torch

    from monother_ros.model import checkpoints
    from monother_ros.model import import_monother  # noqa: F401 - registers the dual model's builder

    model, config = checkpoints.load_model(Path(model_dir))
    model_hash = str(getattr(model, "model_sha256", "") or state_dict_hash(model, config))
    student = getattr(model, "student", None)
    if isinstance(student, torch.nn.Module):
        model = student
    return model.eval(), config, model_hash


MODEL_ONNX_FILE = "model.onnx"  # optional ONNX export inside a model folder (the shipped default has one)
_WEIGHTS_FILE = "model.safetensors"  # model/checkpoints.py MODEL_FILE (not imported: that pulls in torch)


def folder_hash(model_dir: str | os.PathLike) -> str | None:
    """The checkpoint hash of a model folder without loading it (sha256 of ``model.safetensors``), or
    None when the folder has no weights file."""
    weights = Path(model_dir) / _WEIGHTS_FILE
    if not weights.is_file():
        return None
    h = hashlib.sha256()
    with open(weights, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def resolve_onnx(model_path: str | os.PathLike, input_hw: Sequence[int] | None,
                 cache_dir: str | os.PathLike | None = None) -> Path:
    """The ONNX file to run for a model at an input size, exporting (and caching) it when needed.

    * an ``.onnx`` file is used as is (its input size must match ``input_hw`` when given);
    * a model folder's ``model.onnx`` is used when its size matches and it was exported from the
      folder's current weights (same hash);
    * otherwise the folder's checkpoint is exported to ``<cache_dir>/<model>-<hash[:16]>-<h>x<w>.onnx``
      (reused on later calls while the hash matches).

    Raises:
        CheckpointError: nothing loadable at ``model_path``, or a corrupt ONNX file given directly.
        ConfigError: an ONNX file given directly was exported at another size.
    """
    path = Path(model_path)
    if path.name == _WEIGHTS_FILE:  # the folder's weights file stands for the folder
        path = path.parent
    hw = None if input_hw is None else (int(input_hw[0]), int(input_hw[1]))
    if path.is_file() or path.suffix == ".onnx":
        info = read_onnx_info(path)
        if hw is not None and hw != info.input_hw:
            raise ConfigError(f"{path} was exported for {info.input_hw[0]}x{info.input_hw[1]}, not {hw[0]}x{hw[1]}; "
                              "pass the model folder to re-export at another size")
        return path
    if not path.is_dir():
        raise CheckpointError(f"model not found: {path} (expected a model folder or an .onnx file)")
    weights_hash = folder_hash(path)
    shipped = path / MODEL_ONNX_FILE
    if shipped.is_file():
        try:
            info = read_onnx_info(shipped)
        except CheckpointError as exc:
            if weights_hash is None:
                raise
            _logger.warning("ignoring %s: %s", shipped, exc)
        else:
            fresh = weights_hash is None or info.model_hash == weights_hash
            if fresh and (hw is None or hw == info.input_hw):
                return shipped
            if not fresh:
                _logger.warning("%s was exported from other weights than %s; re-exporting", shipped, _WEIGHTS_FILE)
    if weights_hash is None:
        raise CheckpointError(f"{path} has neither {_WEIGHTS_FILE} nor a usable {MODEL_ONNX_FILE}")
    if hw is None:
        from monother_ros.model.variants import ModelConfig

        try:
            hw = ModelConfig.from_json((path / "config.json").read_text()).input_size
        except (OSError, ConfigError) as exc:
            raise CheckpointError(f"{path}: cannot read config.json for the input size: {exc}") from exc
    from monother_ros.runtime.cache import default_cache_dir

    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    name = "".join(c if c.isalnum() or c in "-_." else "_" for c in path.resolve().name) or "model"
    target = cache / f"{name}-{weights_hash[:16]}-{hw[0]}x{hw[1]}.onnx"
    if target.is_file():
        try:
            info = read_onnx_info(target)
            if info.model_hash == weights_hash and info.input_hw == hw:
                return target
        except CheckpointError as exc:
            _logger.warning("re-exporting %s: %s", target, exc)
    model, config, model_hash = load_model_dir(path)
    export_onnx(model, config, target, input_hw=hw, model_hash=model_hash)
    return target
