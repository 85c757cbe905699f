"""TensorRT engine cache: keys, file names, JSON sidecars and atomic writes (pure Python, no tensorrt).

A serialized TensorRT engine only runs on the TensorRT version and GPU it was built for, at the input
shape and precision it was built with, and for the weights it was built from. The GPU is named by its
name, compute capability, SM count and memory (Jetson Orin modules share compute capability 8.7 and
differ in SMs and memory); the ONNX file's own hash covers graph rewrites that keep the weights; a
builder-settings string covers how this package drives the builder. Each cached engine file
``<cache_dir>/<model>-<key>.engine`` therefore has a JSON sidecar ``<model>-<key>.json`` holding the
fields of its :class:`EngineCacheKey` plus the sha256 and size of the engine bytes, so that a stale,
truncated or corrupted file is recognised *before* its bytes reach TensorRT's deserialiser.

Old engines are pruned: :func:`prune_engines` keeps the newest ``keep`` engines per model (default
:data:`DEFAULT_KEEP_ENGINES`), so rebuilding for new weights or versions does not fill the disk.

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
    "DEFAULT_KEEP_ENGINES",
    "EngineCacheKey",
    "atomic_write_bytes",
    "file_sha256",
    "prune_engines",
    "default_cache_dir",
    "engine_paths",
    "load_or_build",
    "read_cached_engine",
    "write_cached_engine",
]

_logger = logging.getLogger(__name__)

Precision = Literal["fp16", "fp32"]
T = TypeVar("T")
SIDECAR_FORMAT = 2  # bump when the sidecar layout changes: old sidecars then read as mismatched
DEFAULT_KEEP_ENGINES = 3  # engines kept per model by prune_engines


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
        onnx_sha256: sha256 of the ONNX file (and its external data) the engine was built from.
        sm_count: the GPU's streaming multiprocessors.
        total_memory_bytes: the GPU's memory.
        builder_settings: how the builder was driven (``tensorrt_engine.builder_settings``: recipe
            version, weakly or strongly typed, workspace); a new recipe never reuses old engines.
    """

    tensorrt_version: str
    gpu_name: str
    compute_capability: tuple[int, int]
    input_shape: tuple[int, ...]
    precision: Precision
    model_hash: str
    onnx_sha256: str
    sm_count: int
    total_memory_bytes: int
    builder_settings: str

    def __post_init__(self) -> None:
        if self.precision not in ("fp16", "fp32"):
            raise ValueError(f"precision must be 'fp16' or 'fp32', got {self.precision!r}")
        # Normalise sequences so that a key read back from JSON (lists) equals the original (tuples).
        object.__setattr__(self, "compute_capability", tuple(int(v) for v in self.compute_capability))
        object.__setattr__(self, "input_shape", tuple(int(v) for v in self.input_shape))
        object.__setattr__(self, "sm_count", int(self.sm_count))
        object.__setattr__(self, "total_memory_bytes", int(self.total_memory_bytes))

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
                onnx_sha256=str(d["onnx_sha256"]),
                sm_count=int(d["sm_count"]),
                total_memory_bytes=int(d["total_memory_bytes"]),
                builder_settings=str(d["builder_settings"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise EngineFileError(f"engine sidecar has malformed key fields: {exc}") from exc


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 (hex) of a file, and of its ONNX external-data file ``<name>.data`` when there is one.

    Raises:
        OSError: the file cannot be read.
    """
    path = Path(path)
    h = hashlib.sha256()
    for part in (path, path.with_name(path.name + ".data")):
        if part is not path and not part.is_file():
            continue
        with open(part, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


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


def _safe_model_name(model_name: str) -> str:
    return _SAFE_NAME.sub("_", model_name).strip("._") or "model"


def engine_paths(cache_dir: str | os.PathLike, model_name: str, key: EngineCacheKey) -> tuple[Path, Path]:
    """``(engine_file, sidecar_file)`` for a model and key: ``<model>-<key[:16]>.engine`` / ``.json``.

    The model name is sanitised to a file-name-safe form; 16 hex digits (64 bits) of the key are plenty
    to separate the handful of engines one machine caches, and the sidecar stores the full key anyway.
    """
    stem = f"{_safe_model_name(model_name)}-{key.digest()[:16]}"
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
    keep: int | None = DEFAULT_KEEP_ENGINES,
    model_name: str | None = None,
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
        keep: after a build, keep only the newest ``keep`` engines of ``model_name`` (None: no pruning).
        model_name: the model the engine belongs to (default: the engine file's stem before the key).

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
            engine = _deserialize(deserialize, data, engine_file)
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
    engine = _deserialize(deserialize, data, engine_file)
    if engine is None:
        raise EngineFileError(f"freshly built engine {engine_file} does not deserialise")
    if keep is not None:
        name = model_name if model_name is not None else engine_file.stem.rsplit("-", 1)[0]
        prune_engines(engine_file.parent, name, keep, protect=engine_file)
    return engine, True


def _deserialize(deserialize: Callable[[bytes], T | None], data: bytes, engine_file: Path) -> T | None:
    """``deserialize(data)``, with an exception (some TensorRT versions raise instead of returning None)
    turned into None."""
    try:
        return deserialize(data)
    except Exception as exc:  # noqa: BLE001 - TensorRT raises RuntimeError/TypeError on foreign engines
        _logger.warning("TensorRT could not deserialise %s: %s", engine_file, exc)
        return None


def prune_engines(cache_dir: str | os.PathLike, model_name: str, keep: int = DEFAULT_KEEP_ENGINES, *,
                  protect: str | os.PathLike | None = None) -> list[Path]:
    """Delete all but the newest ``keep`` cached engines of a model (engine file + sidecar).

    Only files named like :func:`engine_paths` for this model (``<model>-<16 hex>.engine``) are
    considered; other models' engines, exported ONNX files and timing caches are left alone.

    Args:
        cache_dir: the engine cache folder.
        model_name: the model whose engines are pruned.
        keep: how many to keep (>= 1), newest by modification time.
        protect: an engine file never deleted (the one just built or loaded).

    Returns:
        The engine files deleted.

    Raises:
        ValueError: ``keep`` < 1.
    """
    if keep < 1:
        raise ValueError(f"keep must be >= 1, got {keep}")
    pattern = re.compile(re.escape(_safe_model_name(model_name)) + r"-[0-9a-f]{16}\.engine")
    base = Path(cache_dir)
    if not base.is_dir():
        return []
    engines = []
    for path in base.iterdir():
        if pattern.fullmatch(path.name):
            try:
                engines.append((path.stat().st_mtime_ns, path))
            except OSError:  # deleted meanwhile by another process
                continue
    protected = Path(protect).resolve() if protect is not None else None
    # Newest first, the protected engine ahead of all (it counts as one of the kept).
    engines.sort(key=lambda item: (item[1].resolve() == protected, item[0]), reverse=True)
    removed = []
    for rank, (_, path) in enumerate(engines):
        if rank < keep:
            continue
        for victim in (path.with_suffix(".json"), path):  # sidecar first: an engine without one is never used
            try:
                victim.unlink()
            except FileNotFoundError:
                pass
        removed.append(path)
        _logger.info("pruned old engine %s (keeping the newest %d of %s)", path.name, keep, model_name)
    return removed
