"""Which backend runs a model: probes, the ``auto`` order with fall-through, and the record of the choice.

``backend: auto`` tries, in this order (DESIGN.md §5):

1. ``tensorrt`` when ``tensorrt`` imports, its version is >= 8.6 (8.5's ONNX parser lacks
   ``LayerNormalization``), torch has CUDA (TensorRT's buffers are torch CUDA tensors) and the engine
   builds or loads;
2. ``torch`` on the CUDA device when torch sees a CUDA GPU;
3. ``onnxruntime`` on the CPU;
4. only when ONNX Runtime cannot run (not installed, or the model folder's ONNX cannot be loaded or
   exported here): ``torch`` on the CPU.

A candidate that is absent is skipped with its probe's reason; one that is present but fails to build,
load or run a first frame (corrupt/stale engine that cannot be rebuilt, CUDA out of memory, a model
folder without ONNX where the export fails...) is logged as a WARNING with the reason and the next one
is tried. The outcome is a :class:`BackendSelection` attached to the engine (``engine.selection``),
which the depth node shows in ``/diagnostics``. Running on the CPU while a CUDA GPU is visible is a
WARNING (never silent) unless ``device: cpu`` asked for the CPU.

An explicitly named backend is not replaced by another: if it cannot run, ``BackendUnavailableError``
says why and what to install.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Literal

from monother_ros.errors import BackendUnavailableError, ConfigError

if TYPE_CHECKING:
    from monother_ros.runtime.engine import EngineBase

__all__ = [
    "BACKENDS",
    "MIN_TENSORRT",
    "PROBES",
    "BackendSelection",
    "choose_and_build",
    "probe_tensorrt",
    "tensorrt_version_tuple",
]

_logger = logging.getLogger(__name__)

BACKENDS = ("auto", "tensorrt", "onnxruntime", "torch")
ConcreteBackend = Literal["tensorrt", "onnxruntime", "torch"]
MIN_TENSORRT = (8, 6)

_INSTALL = {
    "tensorrt": "install TensorRT >= 8.6 with a CUDA-enabled torch (desktop: `pip install tensorrt` and torch "
                "from the PyTorch CUDA index; Jetson: JetPack 6's python3-libnvinfer through system site "
                "packages and NVIDIA's JetPack torch wheel)",
    "torch": "install torch (a CUDA build for the GPU)",
    "onnxruntime": "install onnxruntime (`pip install onnxruntime`)",
}


def tensorrt_version_tuple(version: str) -> tuple[int, int]:
    """``"10.3.0.26"`` -> ``(10, 3)``; non-numeric parts read as 0."""
    parts = []
    for piece in (str(version).split(".") + ["0", "0"])[:2]:
        digits = "".join(c for c in piece if c.isdigit())
        parts.append(int(digits) if digits else 0)
    return parts[0], parts[1]


def _torch_cuda() -> tuple[bool, str]:
    try:
        import torch
    except Exception as exc:  # noqa: BLE001 - ImportError, or a broken install raising OSError
        return False, f"torch is not importable ({exc.__class__.__name__}: {exc})"
    try:
        ok = bool(torch.cuda.is_available())
    except Exception as exc:  # noqa: BLE001 - driver/runtime mismatch
        return False, f"torch's CUDA probe failed ({exc.__class__.__name__}: {exc})"
    if not ok:
        build = getattr(torch.version, "cuda", None)
        why = "torch is a CPU-only build" if not build else f"torch (CUDA {build}) sees no CUDA GPU"
        return False, f"no CUDA GPU visible to torch ({why})"
    return True, ""


def probe_tensorrt() -> tuple[bool, str]:
    """``(usable, reason if not)`` for TensorRT: importable, >= 8.6, and a CUDA torch for the buffers."""
    try:
        import tensorrt
    except Exception as exc:  # ImportError, or a broken install raising OSError on its .so files
        return False, f"the tensorrt Python package is not importable ({exc.__class__.__name__}: {exc})"
    version = str(getattr(tensorrt, "__version__", "0"))
    if tensorrt_version_tuple(version) < MIN_TENSORRT:
        return False, (f"TensorRT {version} is too old: >= 8.6 is needed (8.5's ONNX parser cannot read the "
                       f"LayerNormalization op every exported model has; JetPack 5 ships 8.5, JetPack 6 has 10.3)")
    ok, reason = _torch_cuda()
    if not ok:
        return False, f"TensorRT {version} imports but its buffers need a CUDA-enabled torch: {reason}"
    return True, ""


def _probe_onnxruntime() -> tuple[bool, str]:
    try:
        import onnxruntime  # noqa: F401
    except Exception as exc:  # noqa: BLE001
        return False, f"onnxruntime is not importable ({exc.__class__.__name__}: {exc})"
    return True, ""


def _probe_torch() -> tuple[bool, str]:
    try:
        import torch  # noqa: F401
    except Exception as exc:  # noqa: BLE001
        return False, f"torch is not importable ({exc.__class__.__name__}: {exc})"
    return True, ""


# Probes by name (tests replace entries). ``torch_cuda`` is the auto order's "torch on a CUDA GPU".
PROBES: dict[str, Callable[[], tuple[bool, str]]] = {
    "tensorrt": probe_tensorrt,
    "onnxruntime": _probe_onnxruntime,
    "torch": _probe_torch,
    "torch_cuda": _torch_cuda,
}


@dataclass(frozen=True)
class BackendSelection:
    """How the running backend was chosen.

    Attributes:
        requested: the ``backend`` asked for (``auto`` or a name).
        requested_device: the ``device`` asked for (``auto``, ``cpu``, ``cuda``, ``cuda:N``).
        backend: the backend that runs.
        device: where it runs (``cpu`` or ``cuda:N``).
        skipped: ``(candidate, reason)`` for every candidate tried before it and not used, in order
            (``torch`` here means torch on the GPU).
        gpu_visible: whether torch sees a CUDA GPU on this machine.
        warnings: what deserves a WARNING (a present backend that failed; the CPU used with a GPU visible).
    """

    requested: str
    requested_device: str
    backend: str
    device: str
    skipped: tuple[tuple[str, str], ...] = ()
    gpu_visible: bool = False
    warnings: tuple[str, ...] = field(default=())

    def summary(self) -> str:
        """One line: ``auto -> onnxruntime on cpu (tensorrt: ...; torch: ...)``."""
        head = f"{self.requested} -> {self.backend} on {self.device}"
        if not self.skipped:
            return head
        return head + " (" + "; ".join(f"{name}: {why}" for name, why in self.skipped) + ")"

    def diagnostics(self) -> dict[str, str]:
        """Key/values for ``/diagnostics``."""
        values = {
            "backend requested": self.requested,
            "backend chosen": self.backend,
            "device requested": self.requested_device,
            "device": self.device,
            "gpu visible": "yes" if self.gpu_visible else "no",
        }
        for name, why in self.skipped:
            values[f"backend {name} not used"] = why
        return values


def _check_backend(backend: str) -> str:
    if backend not in BACKENDS:
        raise ConfigError(f"unknown backend {backend!r}; use {', '.join(BACKENDS)}")
    return backend


def _smoke_test(engine: "EngineBase") -> None:
    """One zero frame through the network: a CUDA OOM or a broken engine shows up here, at start."""
    import numpy as np

    engine.infer_tensor(np.zeros((1, 3, *engine.info.input_hw), np.float32))


def _describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def choose_and_build(
    backend: str,
    device: str,
    builders: dict[str, Callable[[str], "EngineBase"]],
) -> "EngineBase":
    """Pick a backend and build its engine (see the module docstring for the rules).

    Args:
        backend: ``auto``, ``tensorrt``, ``onnxruntime`` or ``torch``.
        device: a name accepted by ``runtime.device.check_device``.
        builders: backend name -> ``build(device) -> engine``; ``device`` is ``cpu`` or ``cuda:N``.

    Returns:
        The engine, with ``engine.selection`` set to a :class:`BackendSelection`.

    Raises:
        ConfigError: unknown backend or malformed device; TensorRT with ``device: cpu``.
        BackendUnavailableError: an explicit backend (or device) that cannot run here; under ``auto``,
            every candidate failed (the message lists each reason).
        MonotherError and others: an explicit backend's own build errors (not swallowed).
    """
    from monother_ros.runtime.device import check_device, resolve_device

    backend = _check_backend(backend)
    requested_device = check_device(device)
    gpu_ok, gpu_reason = PROBES["torch_cuda"]()
    if backend != "auto":
        ok, reason = PROBES[backend]()
        if not ok:
            raise BackendUnavailableError(f"backend {backend} is unavailable: {reason}; {_INSTALL[backend]}")
        if backend == "tensorrt":
            if requested_device == "cpu":
                raise ConfigError("backend tensorrt runs on a CUDA device; device cpu asks for the CPU "
                                  "(use device auto / cuda[:N], or backend onnxruntime / torch for the CPU)")
            run_on = resolve_device("cuda" if requested_device == "auto" else requested_device)
        elif backend == "onnxruntime":
            # ONNX Runtime's CUDA provider only when asked for by name (it needs onnxruntime-gpu).
            run_on = "cpu" if requested_device in ("auto", "cpu") else resolve_device(requested_device)
        else:
            run_on = resolve_device(requested_device)
        engine = builders[backend](run_on)
        notes: tuple[str, ...] = ()
        if run_on == "cpu" and gpu_ok and requested_device != "cpu":  # device cpu is a choice, not a fallback
            notes = (f"backend {backend} runs on the CPU although a CUDA GPU is visible (device "
                     f"{requested_device}; ONNX Runtime uses a GPU only with device cuda[:N] and onnxruntime-gpu)",)
            _logger.warning(notes[0])
        _attach(engine, BackendSelection(backend, requested_device, backend, run_on, (), gpu_ok, notes))
        return engine

    gpu_device = None
    if requested_device != "cpu":
        gpu_device = resolve_device("cuda" if requested_device == "auto" and gpu_ok else requested_device)
        if gpu_device == "cpu":
            gpu_device = None
    skipped: list[tuple[str, str]] = []
    warnings: list[str] = []
    last_error: BaseException | None = None
    # (label in the record, backend, on the GPU?); torch on the CPU is the last resort, reached only when
    # ONNX Runtime did not run (e.g. a model folder whose ONNX cannot be exported here).
    candidates = (("tensorrt", "tensorrt", True), ("torch", "torch", True), ("onnxruntime", "onnxruntime", False),
                  ("torch-cpu", "torch", False))
    for label, name, on_gpu in candidates:
        if on_gpu and requested_device == "cpu":
            skipped.append((label, "device cpu requested"))
            continue
        ok, reason = PROBES["torch_cuda" if (name == "torch" and on_gpu) else name]()
        if not ok:
            skipped.append((label, reason))
            continue
        if on_gpu and gpu_device is None:
            skipped.append((label, gpu_reason or "no CUDA GPU visible to torch"))
            continue
        run_on = gpu_device if on_gpu else "cpu"
        try:
            engine = builders[name](run_on)
            if run_on != "cpu":
                _smoke_test(engine)
        except Exception as exc:  # noqa: BLE001 - any failure of a candidate falls through to the next
            why = f"failed: {_describe(exc)}"
            _logger.warning("backend auto: %s on %s %s; trying the next backend", name, run_on, why)
            skipped.append((label, why))
            warnings.append(f"{label} {why}")
            last_error = exc
            continue
        if run_on == "cpu" and gpu_ok and requested_device != "cpu":
            note = (f"a CUDA GPU is visible but {name} runs on the CPU ("
                    + "; ".join(f"{n}: {w}" for n, w in skipped) + ")")
            warnings.append(note)
            _logger.warning("backend auto: %s", note)
        elif skipped:
            _logger.info("backend auto: %s on %s (%s)", name, run_on, "; ".join(f"{n}: {w}" for n, w in skipped))
        _attach(engine, BackendSelection("auto", requested_device, name, run_on, tuple(skipped), gpu_ok,
                                         tuple(warnings)))
        return engine
    detail = "; ".join(f"{n}: {w}" for n, w in skipped)
    error = BackendUnavailableError(f"backend auto: no backend can run here ({detail})")
    if last_error is not None:
        raise error from last_error
    raise error


def _attach(engine: Any, selection: BackendSelection) -> None:
    engine.selection = selection


def first_usable(backend: str) -> ConcreteBackend:
    """The backend ``auto`` would try first by the probes alone (no engine is built).

    Raises:
        ConfigError: unknown backend.
        BackendUnavailableError: the named backend (or every ``auto`` candidate) is unavailable.
    """
    backend = _check_backend(backend)
    if backend != "auto":
        ok, reason = PROBES[backend]()
        if not ok:
            raise BackendUnavailableError(f"backend {backend} is unavailable: {reason}; {_INSTALL[backend]}")
        return backend  # type: ignore[return-value]
    reasons = []
    for name, probe in (("tensorrt", "tensorrt"), ("torch", "torch_cuda"), ("onnxruntime", "onnxruntime")):
        ok, reason = PROBES[probe]()
        if ok:
            return name  # type: ignore[return-value]
        reasons.append(f"{name}: {reason}")
        _logger.info("backend auto: not using %s (%s)", name, reason)
    raise BackendUnavailableError("backend auto: no backend is available (" + "; ".join(reasons) + ")")
