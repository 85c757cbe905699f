"""TensorRT engine cache: keys, file names, JSON sidecars and atomic writes (pure Python, no tensorrt).

A serialized TensorRT engine only runs on the TensorRT version and GPU it was built for, at the input
shape and precision it was built with, and for the weights it was built from. Each cached engine file
``<cache_dir>/<model>-<key>.engine`` therefore has a JSON sidecar ``<model>-<key>.json`` holding the
fields of its :class:`EngineCacheKey` plus the sha256 and size of the engine bytes, so that a stale,
truncated or corrupted file is recognised *before* its bytes reach TensorRT's deserialiser.

Everything here is importable without tensorrt or a GPU, so these checks are tested everywhere.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Literal, TypeVar

from monother_ros.errors import EngineFileError
from monother_ros.fileio import atomic_write_bytes

__all__ = [
    "EngineCacheKey",
    "atomic_write_bytes",
    "default_cache_dir",
    "engine_paths",
    "load_or_build",
    "read_cached_engine",
    "write_cached_engine",
]

_logger = logging.getLogger(__name__)

Precision = Literal["fp16", "fp32"]
T = TypeVar("T")
SIDECAR_FORMAT = 1  # bump when the sidecar layout changes: old sidecars then read as mismatched


@dataclass(frozen=True)
class EngineCacheKey:
    """Everything a serialized engine depends on.

    Args:
        tensorrt_version: ``tensorrt.__version__`` of the builder, e.g. ``"10.3.0"``.
        gpu_name: CUDA device name, e.g. ``"NVIDIA GeForce RTX 4090"``.
        compute_capability: ``(major, minor)`` of the device.
        input_shape: network input shape ``(1, 3, H, W)``.
        precision: ``"fp16"`` or ``"fp32"``.
        model_hash: hex digest identifying the weights and configuration (from the ONNX metadata).
    """

    tensorrt_version: str
    gpu_name: str
    compute_capability: tuple[int, int]
    input_shape: tuple[int, ...]
    precision: Precision
    model_hash: str

    def __post_init__(self) -> None:
        if self.precision not in ("fp16", "fp32"):
            raise ValueError(f"precision must be 'fp16' or 'fp32', got {self.precision!r}")
        # Normalise sequences so that a key read back from JSON (lists) equals the original (tuples).
        object.__setattr__(self, "compute_capability", tuple(int(v) for v in self.compute_capability))
        object.__setattr__(self, "input_shape", tuple(int(v) for v in self.input_shape))

    def fields(self) -> dict[str, Any]:
        """The key as a JSON-serialisable dict (tuples become lists)."""
        d = asdict(self)
        d["compute_capability"] = list(self.compute_capability)
        d["input_shape"] = list(self.input_shape)
        return d

    def digest(self) -> str:
        """sha256 (hex) over the canonical JSON of the key fields."""
        canonical = json.dumps(self.fields(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()

    @classmethod
    def from_fields(cls, d: dict[str, Any]) -> "EngineCacheKey":
        """Inverse of :meth:`fields`; raises ``EngineFileError`` on missing or malformed fields."""
        try:
            return cls(
                tensorrt_version=str(d["tensorrt_version"]),
                gpu_name=str(d["gpu_name"]),
                compute_capability=tuple(d["compute_capability"]),
                input_shape=tuple(d["input_shape"]),
                precision=d["precision"],
                model_hash=str(d["model_hash"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise EngineFileError(f"engine sidecar has malformed key fields: {exc}") from exc


def default_cache_dir() -> Path:
    """``engines/cache`` of the package share dir if writable, else ``$XDG_CACHE_HOME/monother_ros/engines``."""
    from monother_ros.paths import engines_dir

    candidate = engines_dir() / "cache"
    try:
        candidate.mkdir(parents=True, exist_ok=True)
        if os.access(candidate, os.W_OK):
            return candidate
    except OSError:
        pass
    xdg = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return xdg / "monother_ros" / "engines"


_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


def engine_paths(cache_dir: str | os.PathLike, model_name: str, key: EngineCacheKey) -> tuple[Path, Path]:
    """``(engine_file, sidecar_file)`` for a model and key: ``<model>-<key[:16]>.engine`` / ``.json``.

    The model name is sanitised to a file-name-safe form; 16 hex digits (64 bits) of the key are plenty
    to separate the handful of engines one machine caches, and the sidecar stores the full key anyway.
    """
    safe = _SAFE_NAME.sub("_", model_name).strip("._") or "model"
    stem = f"{safe}-{key.digest()[:16]}"
    base = Path(cache_dir)
    return base / f"{stem}.engine", base / f"{stem}.json"


def write_cached_engine(engine_file: str | os.PathLike, sidecar_file: str | os.PathLike,
                        engine_bytes: bytes, key: EngineCacheKey) -> None:
    """Store an engine and its sidecar, each atomically.

    The engine is written first and the sidecar last: a crash in between leaves a sidecar that does not
    match the engine bytes (or none at all), which :func:`read_cached_engine` rejects.
    """
    if not engine_bytes:
        raise ValueError("refusing to cache an empty engine")
    atomic_write_bytes(engine_file, engine_bytes)
    sidecar = {
        "format": SIDECAR_FORMAT,
        "key": key.fields(),
        "key_digest": key.digest(),
        "engine_sha256": hashlib.sha256(engine_bytes).hexdigest(),
        "engine_size": len(engine_bytes),
    }
    atomic_write_bytes(sidecar_file, (json.dumps(sidecar, indent=2, sort_keys=True) + "\n").encode("utf-8"))
    _logger.info("cached TensorRT engine %s (%d bytes)", engine_file, len(engine_bytes))


def read_cached_engine(engine_file: str | os.PathLike, sidecar_file: str | os.PathLike,
                       key: EngineCacheKey) -> bytes:
    """Return the engine bytes if the file and its sidecar are intact and built for ``key``.

    Raises:
        EngineFileError: missing file or sidecar, unreadable or malformed sidecar, key mismatch (the
            message names the differing fields), or engine bytes whose size/sha256 differ from the
            sidecar's (truncated or corrupted file).
    """
    engine_file, sidecar_file = Path(engine_file), Path(sidecar_file)
    if not engine_file.is_file():
        raise EngineFileError(f"no cached engine at {engine_file}")
    if not sidecar_file.is_file():
        raise EngineFileError(f"engine {engine_file} has no sidecar {sidecar_file.name}")
    try:
        sidecar = json.loads(sidecar_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise EngineFileError(f"engine sidecar {sidecar_file} is unreadable: {exc}") from exc
    if not isinstance(sidecar, dict) or sidecar.get("format") != SIDECAR_FORMAT:
        raise EngineFileError(f"engine sidecar {sidecar_file} has an unknown format")
    stored = EngineCacheKey.from_fields(sidecar.get("key") or {})
    if stored != key:
        want, have = key.fields(), stored.fields()
        diff = ", ".join(f"{k}: cached {have[k]!r} != wanted {want[k]!r}" for k in want if want[k] != have[k])
        raise EngineFileError(f"cached engine {engine_file.name} was built for another configuration ({diff})")
    if sidecar.get("key_digest") != key.digest():
        raise EngineFileError(f"engine sidecar {sidecar_file} has an inconsistent key digest")
    data = engine_file.read_bytes()
    if len(data) != sidecar.get("engine_size") or hashlib.sha256(data).hexdigest() != sidecar.get("engine_sha256"):
        raise EngineFileError(
            f"cached engine {engine_file} is corrupt (size {len(data)}, expected {sidecar.get('engine_size')}, "
            "or checksum mismatch)"
        )
    return data


def load_or_build(
    engine_file: str | os.PathLike,
    sidecar_file: str | os.PathLike,
    key: EngineCacheKey,
    *,
    deserialize: Callable[[bytes], T | None],
    build: Callable[[], bytes],
    rebuild: bool = True,
) -> tuple[T, bool]:
    """Load a cached engine, or build, cache and load it.

    The decision logic of the TensorRT backend, free of TensorRT so that it is tested everywhere.

    Args:
        engine_file, sidecar_file: from :func:`engine_paths`.
        key: what the engine must have been built for.
        deserialize: bytes -> engine object, or None when the bytes are not a valid engine
            (TensorRT's ``deserialize_cuda_engine`` returns None then).
        build: builds and returns serialized engine bytes.
        rebuild: when a cached engine exists but is corrupt, stale or mismatched: rebuild it (True) or
            raise ``EngineFileError`` (False). A missing engine is always built.

    Returns:
        ``(engine, built)``: ``built`` is True when the engine was (re)built now.

    Raises:
        EngineFileError: cached engine unusable and ``rebuild`` False, or a fresh build that does not
            deserialise.
    """
    engine_file, sidecar_file = Path(engine_file), Path(sidecar_file)
    if engine_file.exists() or sidecar_file.exists():
        try:
            data = read_cached_engine(engine_file, sidecar_file, key)
            engine = deserialize(data)
            if engine is None:
                raise EngineFileError(f"TensorRT could not deserialise cached engine {engine_file}")
            _logger.info("loaded cached engine %s", engine_file)
            return engine, False
        except EngineFileError as exc:
            if not rebuild:
                raise EngineFileError(f"{exc} (rebuild disabled; delete the file or allow rebuilding)") from exc
            _logger.warning("rebuilding engine: %s", exc)
    data = build()
    write_cached_engine(engine_file, sidecar_file, data, key)
    engine = deserialize(data)
    if engine is None:
        raise EngineFileError(f"freshly built engine {engine_file} does not deserialise")
    return engine, True
