"""Checkpoints: our safetensors + JSON format, and strict import of official PyTorch files.

Our format is a directory::

    model.safetensors   tensors (the state dict; header metadata repeats config and kind)
    config.json         ModelConfig.to_json()
    metadata.json       {"format", "kind", "model_sha256" (of model.safetensors bytes), ...}

``save_model`` writes it atomically (temporary directory, then rename); ``load_model`` rebuilds the
network and checks the hash. Official checkpoints (``.pth``/``.pt``) are read by
``read_torch_checkpoint`` with ``torch.load(weights_only=True)``: a pickle that tries to call
arbitrary code is refused before that code runs.

``import_checkpoint`` maps an official state dict onto a model of a preset, strictly (every tensor
used, every shape right), by format:

* ``depth_anything`` (built in): Depth Anything V2 relative/metric and Depth Anything v1 files use our
  key names already (``pretrained.*``, ``depth_head.*``): identity mapping. The preset says which
  generation/head the file is (the keys cannot tell).
* ``monother`` (the official MonoTher-Depth dual checkpoint, detected by ``core.core.pretrained.*``
  keys): handled by ``monother_ros.model.import_monother``, imported lazily; that module calls
  ``register_importer("monother", detect, importer)`` at import time.

Other formats can be added the same way with ``register_importer``; other model kinds saved with
``save_model(kind=...)`` are rebuilt by ``load_model`` through ``register_builder``.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import importlib
import json
import logging
import os
import pickle
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import torch
from torch import Tensor, nn

from monother_ros.errors import CheckpointError, ConfigError
from monother_ros.model.variants import ModelConfig, get_preset

__all__ = [
    "MODEL_FILE",
    "CONFIG_FILE",
    "METADATA_FILE",
    "FORMAT_VERSION",
    "Importer",
    "register_importer",
    "register_builder",
    "detect_format",
    "read_torch_checkpoint",
    "unwrap_state_dict",
    "check_state_dict",
    "load_state_dict_strict",
    "import_checkpoint",
    "save_model",
    "load_model",
    "read_model_dir",
    "sha256_file",
]

_logger = logging.getLogger(__name__)

MODEL_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
METADATA_FILE = "metadata.json"
FORMAT_VERSION = "monother_ros.model/1"
DEFAULT_KIND = "depth_branch"
_SHOW = 5  # keys named per category in error messages

# importer(state_dict, config, branch) -> (model, config). ``branch`` is None, "thermal", "rgb" or
# "confidence" (the latter two only mean something for dual-model formats).
Importer = Callable[[dict[str, Tensor], ModelConfig, "str | None"], "tuple[nn.Module, ModelConfig]"]
Detector = Callable[[Mapping[str, Tensor]], bool]

_IMPORTERS: dict[str, tuple[Detector, Importer]] = {}
# Formats whose importer lives in a module imported on first use (it registers itself).
_LAZY_FORMATS: dict[str, tuple[Detector, str]] = {
    "monother": (lambda sd: any(k.startswith("core.core.pretrained.") for k in sd),
                 "monother_ros.model.import_monother"),
}
_BUILDERS: dict[str, Callable[[ModelConfig], nn.Module]] = {}


def register_importer(fmt: str, detect: Detector, importer: Importer) -> None:
    """Register (or replace) a checkpoint format.

    Args:
        fmt: format name (e.g. ``monother``).
        detect: returns True for a state dict (prefix-stripped) of this format.
        importer: ``(state_dict, config, branch) -> (model, config)``; raises CheckpointError.
    """
    _IMPORTERS[fmt] = (detect, importer)


def register_builder(kind: str, build: Callable[[ModelConfig, Mapping[str, Tensor]], nn.Module]) -> None:
    """Register how ``load_model`` rebuilds a saved model of ``kind``.

    ``build(config, tensors)`` gets the ModelConfig and the saved tensors, so sizes that the config does not
    record (e.g. a confidence U-Net's base width) can be read off the weights' shapes.
    """
    _BUILDERS[kind] = build


def _build_branch(config: ModelConfig, tensors: Mapping[str, Tensor]) -> nn.Module:
    from monother_ros.model.branch import DepthBranch

    return DepthBranch(config)


def _builder(kind: str) -> Callable[[ModelConfig, Mapping[str, Tensor]], nn.Module]:
    if kind == DEFAULT_KIND:
        return _build_branch
    if kind not in _BUILDERS:
        # Kinds defined by the dual-model modules register themselves when imported.
        for name in ("monother_ros.model.import_monother", "monother_ros.model.dual"):
            try:
                importlib.import_module(name)
            except ImportError:
                continue
    if kind not in _BUILDERS:
        raise CheckpointError(f"no builder registered for model kind {kind!r}")
    return _BUILDERS[kind]


# ---------------------------------------------------------------------- reading official files
def read_torch_checkpoint(path: str | os.PathLike[str]) -> dict[str, Tensor]:
    """Read a PyTorch checkpoint without executing pickled code, and return its state dict.

    ``torch.load(weights_only=True)`` only rebuilds tensors and plain containers; any other global
    a pickle references (``os.system`` in a crafted ``__reduce__``) is refused before it is called.
    Wrappers ``{"model": sd}`` / ``{"state_dict": sd}`` are unwrapped and ``module.`` prefixes
    (DataParallel/DDP) stripped.

    Args:
        path: ``.pth``/``.pt``/``.ckpt`` file.

    Returns:
        state dict, name -> CPU tensor.

    Raises:
        CheckpointError: missing or unreadable file, refused pickle content, or no state dict.
    """
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"checkpoint {p} does not exist")
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        # torch's message is long; keep the line naming the refused global.
        found = re.search(r"Unsupported[^.\n]*", str(exc))
        reason = found.group(0) if found else "not a plain tensor file"
        raise CheckpointError(
            f"{p}: refused: the file needs more than tensors to unpickle (code would run): {reason}"
        ) from exc
    except (RuntimeError, EOFError, OSError, ValueError, AttributeError, TypeError) as exc:
        raise CheckpointError(f"{p}: not a readable PyTorch checkpoint: {exc}") from exc
    return unwrap_state_dict(obj, source=str(p))


def unwrap_state_dict(obj: Any, *, source: str = "checkpoint") -> dict[str, Tensor]:
    """Find the state dict in a loaded checkpoint object and strip ``module.`` prefixes.

    Accepts a plain state dict or a dict with a ``model`` or ``state_dict`` entry holding one
    (other entries such as ``optimizer`` or ``epoch`` are ignored).

    Raises:
        CheckpointError: no mapping of tensors found.
    """
    for _ in range(3):  # at most a couple of wrapper levels in practice
        if isinstance(obj, Mapping) and not _is_tensor_dict(obj):
            for key in ("model", "state_dict"):
                if isinstance(obj.get(key), Mapping):
                    obj = obj[key]
                    break
            else:
                break
        else:
            break
    if not isinstance(obj, Mapping) or not obj:
        raise CheckpointError(f"{source}: no state dict found (top level is {type(obj).__name__})")
    bad = [k for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, Tensor)]
    if bad:
        raise CheckpointError(
            f"{source}: {len(bad)} entries are not tensors (e.g. {', '.join(map(str, bad[:_SHOW]))})"
        )
    out: dict[str, Tensor] = {}
    for key, value in obj.items():
        name = key
        while name.startswith("module."):
            name = name[len("module."):]
        if name in out:
            raise CheckpointError(f"{source}: key {name!r} appears twice after stripping 'module.'")
        out[name] = value
    return out


def _is_tensor_dict(obj: Mapping[Any, Any]) -> bool:
    return bool(obj) and all(isinstance(v, Tensor) for v in obj.values())


def detect_format(state_dict: Mapping[str, Tensor]) -> str:
    """Name of the checkpoint format of a (prefix-stripped) state dict.

    Registered detectors first, then the lazily imported ones, else ``depth_anything``.
    """
    for fmt, (detect, _) in _IMPORTERS.items():
        if detect(state_dict):
            return fmt
    for fmt, (detect, _) in _LAZY_FORMATS.items():
        if detect(state_dict):
            return fmt
    return "depth_anything"


# ---------------------------------------------------------------------- strict loading
def format_keys(keys: Iterable[str]) -> str:
    """The first few keys, sorted, and how many more: for error messages naming keys."""
    keys = sorted(keys)
    shown = ", ".join(keys[:_SHOW])
    return shown + (f", ... (+{len(keys) - _SHOW} more)" if len(keys) > _SHOW else "")


def describe_key_mismatch(missing: Iterable[str], unexpected: Iterable[str], mismatched: Iterable[str]) -> str:
    """One line naming missing, unexpected and mis-shaped keys (counts + first few); "" when all match."""
    parts = []
    for keys, what in ((list(missing), "missing key(s)"), (list(unexpected), "unexpected key(s)"),
                       (list(mismatched), "shape mismatch(es)")):
        if keys:
            parts.append(f"{len(keys)} {what}: {format_keys(keys)}")
    return "; ".join(parts)


def check_state_dict(
    expected: Mapping[str, Tensor],
    given: Mapping[str, Tensor],
    *,
    allow_missing_prefixes: tuple[str, ...] = (),
    source: str = "checkpoint",
) -> None:
    """Raise if ``given`` does not cover ``expected`` exactly (names and shapes).

    Args:
        expected: the model's state dict (name -> tensor).
        given: the checkpoint's tensors after key mapping.
        allow_missing_prefixes: expected keys under these prefixes may be absent (new heads that
            official layouts lack keep their initialisation).
        source: name used in the message.

    Raises:
        CheckpointError: naming the first few missing, unexpected and mis-shaped keys, with counts.
    """
    missing = [k for k in expected if k not in given and not k.startswith(allow_missing_prefixes)]
    unexpected = [k for k in given if k not in expected]
    mismatched = [
        f"{k} {tuple(given[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in expected
        if k in given and tuple(given[k].shape) != tuple(expected[k].shape)
    ]
    problems = describe_key_mismatch(missing, unexpected, mismatched)
    if problems:
        raise CheckpointError(f"{source} does not match the model: {problems}")


def load_state_dict_strict(
    model: nn.Module,
    state_dict: Mapping[str, Tensor],
    *,
    allow_missing_prefixes: tuple[str, ...] = (),
    source: str = "checkpoint",
) -> None:
    """``check_state_dict`` against ``model.state_dict()``, then copy the tensors in (cast to the
    model's dtypes).

    Raises:
        CheckpointError: see ``check_state_dict``; also non-finite values in floating tensors.
    """
    expected = model.state_dict()
    check_state_dict(expected, state_dict, allow_missing_prefixes=allow_missing_prefixes, source=source)
    bad = [k for k, v in state_dict.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise CheckpointError(f"{source}: non-finite values in {len(bad)} tensor(s): {format_keys(bad)}")
    model.load_state_dict(dict(state_dict), strict=not allow_missing_prefixes)


def _import_depth_anything(
    state_dict: dict[str, Tensor], config: ModelConfig, branch: str | None, source: str
) -> tuple[nn.Module, ModelConfig]:
    from monother_ros.model.branch import DepthBranch

    if branch not in (None, "thermal", "rgb"):
        raise CheckpointError(f"{source}: a Depth Anything file has no {branch!r} part")
    if config.head == "zoe_bins":
        raise CheckpointError(
            f"{source}: preset {config.name!r} needs ZoeDepth bins weights, which a Depth Anything "
            "file lacks (use a MonoTher checkpoint, or a relative/metric_sigmoid preset)"
        )
    model = DepthBranch(config)
    load_state_dict_strict(model, state_dict, allow_missing_prefixes=("confidence_head.",),
                           source=f"{source} (as {config.name})")
    if config.confidence_head:
        _logger.warning("%s: confidence_head is not in the official layout; it keeps its init", source)
    return model.eval(), config


def import_checkpoint(
    path: str | os.PathLike[str],
    preset: str | ModelConfig,
    branch: str | None = None,
) -> tuple[nn.Module, ModelConfig]:
    """Import an official checkpoint into a network of the given preset, strictly.

    Args:
        path: ``.pth`` file (or ``.safetensors`` with official key names).
        preset: preset name or a ``ModelConfig`` (e.g. ``get_preset(...).replace(max_depth_m=20)``).
        branch: for dual (MonoTher) checkpoints ``thermal`` (default there), ``rgb`` or
            ``confidence``; must be None/thermal/rgb for single-branch files.

    Returns:
        ``(model in eval mode, config)``; for ``confidence`` the model is the confidence network.

    Raises:
        CheckpointError: unreadable file, unknown layout, or any missing/unexpected/mis-shaped key.
        ConfigError: unknown preset.
    """
    config = get_preset(preset) if isinstance(preset, str) else preset
    p = Path(path)
    if p.suffix == ".safetensors":
        state_dict = unwrap_state_dict(_read_safetensors(p)[0], source=str(p))
    else:
        state_dict = read_torch_checkpoint(p)
    fmt = detect_format(state_dict)
    _logger.info("%s: %d tensors, format %s, preset %s", p, len(state_dict), fmt, config.name)
    if fmt == "depth_anything":
        return _import_depth_anything(state_dict, config, branch, str(p))
    if fmt not in _IMPORTERS and fmt in _LAZY_FORMATS:
        module = _LAZY_FORMATS[fmt][1]
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise CheckpointError(f"{p}: {fmt} checkpoints need {module}, which failed: {exc}") from exc
    if fmt not in _IMPORTERS:
        raise CheckpointError(f"{p}: no importer registered for format {fmt!r}")
    return _IMPORTERS[fmt][1](state_dict, config, branch)


# ---------------------------------------------------------------------- our format
def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file's bytes (streamed)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def save_model(
    model: nn.Module,
    config: ModelConfig,
    out_dir: str | os.PathLike[str],
    *,
    kind: str = DEFAULT_KIND,
    metadata: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``model`` in our format to ``out_dir`` atomically.

    The files are written into a temporary sibling directory which then replaces ``out_dir``, so a
    reader never sees a half-written model. An existing ``out_dir`` is replaced only if it is
    empty or holds one of our models (it has ``config.json``).

    Args:
        model: network whose ``state_dict()`` is saved (tensors only; shared storage is copied).
        config: its configuration (saved as ``config.json``).
        out_dir: target directory.
        kind: model kind for ``load_model`` (``depth_branch``, or one registered with
            ``register_builder``).
        metadata: extra JSON-serialisable entries for ``metadata.json`` (e.g. source file).

    Returns:
        ``out_dir`` as a Path.

    Raises:
        CheckpointError: ``out_dir`` exists and is not one of ours, or writing fails.
    """
    from safetensors.torch import save as st_save

    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / CONFIG_FILE).is_file())):
        raise CheckpointError(f"{out} exists and is not a monother_ros model directory; not replacing it")
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}
    blob = st_save(tensors, metadata={"format": FORMAT_VERSION, "kind": kind, "config": config.to_json(None)})
    meta: dict[str, Any] = {
        "format": FORMAT_VERSION,
        "kind": kind,
        "model_sha256": hashlib.sha256(blob).hexdigest(),
        "num_tensors": len(tensors),
        "num_parameters": int(sum(v.numel() for v in tensors.values())),
        "config_name": config.name,
        "created_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "torch_version": torch.__version__,
    }
    if metadata:
        meta.update(dict(metadata))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        (tmp / MODEL_FILE).write_bytes(blob)
        (tmp / CONFIG_FILE).write_text(config.to_json() + "\n")
        (tmp / METADATA_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
        for name in (MODEL_FILE, CONFIG_FILE, METADATA_FILE):
            with open(tmp / name, "rb") as f:
                os.fsync(f.fileno())
        if out.exists():
            old = out.with_name(f".{out.name}.old-{os.getpid()}")
            os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    except OSError as exc:
        raise CheckpointError(f"could not write model to {out}: {exc}") from exc
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    _logger.info("saved %s (%s, sha256 %s)", out, kind, meta["model_sha256"][:12])
    return out


def _read_safetensors(path: Path) -> tuple[dict[str, Tensor], dict[str, str]]:
    from safetensors import SafetensorError
    from safetensors.torch import load as st_load

    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CheckpointError(f"cannot read {path}: {exc}") from exc
    try:
        tensors = st_load(data)
        header_len = int.from_bytes(data[:8], "little")
        header = json.loads(data[8 : 8 + header_len])
    except (SafetensorError, ValueError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path} is not a valid safetensors file: {exc}") from exc
    meta = header.get("__metadata__") or {}
    return tensors, {str(k): str(v) for k, v in meta.items()}


def read_model_dir(
    path: str | os.PathLike[str],
) -> tuple[dict[str, Tensor], ModelConfig, dict[str, Any]]:
    """Read our format without building a model.

    Args:
        path: model directory, or its ``model.safetensors`` (the config then comes from
            ``config.json`` beside it, else from the safetensors header).

    Returns:
        ``(state_dict, config, metadata)``.

    Raises:
        CheckpointError: missing files, hash mismatch (corruption), or an invalid config.
    """
    p = Path(path)
    model_file = p / MODEL_FILE if p.is_dir() else p
    if not model_file.is_file():
        raise CheckpointError(f"{model_file} does not exist (expected a model directory or .safetensors)")
    root = model_file.parent
    tensors, header_meta = _read_safetensors(model_file)
    meta: dict[str, Any] = {}
    if (root / METADATA_FILE).is_file():
        try:
            meta = json.loads((root / METADATA_FILE).read_text())
        except json.JSONDecodeError as exc:
            raise CheckpointError(f"{root / METADATA_FILE} is malformed: {exc}") from exc
        want = meta.get("model_sha256")
        if want and sha256_file(model_file) != want:
            raise CheckpointError(f"{model_file}: sha256 differs from {METADATA_FILE} (corrupt or replaced)")
    meta.setdefault("kind", header_meta.get("kind", DEFAULT_KIND))
    try:
        if (root / CONFIG_FILE).is_file():
            config = ModelConfig.from_json((root / CONFIG_FILE).read_text())
        elif "config" in header_meta:
            config = ModelConfig.from_json(header_meta["config"])
        else:
            raise CheckpointError(f"{root}: no {CONFIG_FILE} and no config in the safetensors header")
    except ConfigError as exc:
        raise CheckpointError(f"{root}: invalid model config: {exc}") from exc
    meta.setdefault("model_sha256", sha256_file(model_file))
    return tensors, config, meta


def load_model(
    path: str | os.PathLike[str], map_location: str | torch.device = "cpu"
) -> tuple[nn.Module, ModelConfig]:
    """Rebuild a model saved by ``save_model``, strictly, in eval mode.

    Args:
        path: model directory (or its ``model.safetensors``).
        map_location: device to put the model on.

    Returns:
        ``(model, config)``; the model's ``model_sha256`` attribute holds the weights' hash.

    Raises:
        CheckpointError: see ``read_model_dir``; missing/unexpected/mis-shaped keys.
    """
    tensors, config, meta = read_model_dir(path)
    model = _builder(str(meta["kind"]))(config, tensors)
    load_state_dict_strict(model, tensors, source=str(path))
    model.model_sha256 = meta["model_sha256"]  # type: ignore[assignment]
    return model.to(map_location).eval(), config
