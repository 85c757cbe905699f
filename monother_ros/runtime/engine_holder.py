"""The one component that holds the running engine and swaps in new model folders between two frames.

Every hot-swap route ends in :meth:`EngineHolder.request` ("here is a new model folder"): the depth
node's ``adaptation/model_path`` topic and the in-process hand-over of ``online_adaptation`` alike.

* The holder loads the folder for **its own** backend, device, precision and input size
  (:class:`EngineSettings`), in its own loader thread, never on the inference thread: an ONNX export
  (``runtime.export.resolve_onnx``) for ONNX Runtime and TensorRT, a TensorRT refit or build, a torch
  load, or a new :class:`~monother_ros.runtime.pair_engine.PairEngine` sharing the running teacher when
  the teacher path is on. The new engine runs one warm-up frame in that thread too.
* The ONNX export runs in a child process (``python -m monother_ros.runtime.engine_holder export``,
  niced) that the loader thread waits for: the exporter is pure-Python-heavy for seconds (tens of
  seconds on a small CPU) and in a thread it would hold the GIL away from inference (measured on a
  2-core machine: frame gaps up to 0.8 s at 20 Hz during an in-thread export); a child is also
  killed at once on shutdown instead of being waited for. The child works on a private hard-linked
  copy of the folder (``.staging-*`` in the cache folder): the learner keeps only its newest
  checkpoints and may prune the folder while a long export still needs it.
* Requests are latest-only: a folder asked for while another loads replaces any older waiting one.
* The swap is a reference swap under a short lock, between two frames: a frame holds the engine it
  started with (:meth:`frame`), so the old engine is closed when the frame in flight ends (at once when
  none is in flight).
* TensorRT: adapted weights of the same model are **refitted** into a copy of the running engine
  (``TensorRTEngine.refitted``, no rebuild); where refit cannot apply (another model or input size, an
  engine not built refittable, TensorRT < 8.6) a full build happens at most once every
  ``min_rebuild_interval_s`` (default 600 s): a newer request waits for the interval to pass.
* A failed load keeps the running engine; :class:`SwapOutcome` says why (the node logs WARN and puts
  it in ``/diagnostics``).
* :meth:`close` kills an export child in progress, stops the loader thread and joins it (a load or
  TensorRT build in progress finishes first: a daemon thread inside native code at interpreter exit
  can abort the process), then closes every engine.
"""
from __future__ import annotations

import contextlib
import itertools
import logging
import os
import shutil
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Iterator, Literal, Optional

import numpy as np

from monother_ros.errors import ConfigError
from monother_ros.runtime.engine import BackendName, Precision

__all__ = ["EngineHolder", "EngineSettings", "SwapOutcome", "load_engine"]

_logger = logging.getLogger(__name__)

DEFAULT_MIN_REBUILD_INTERVAL_S = 600.0


@dataclass(frozen=True)
class EngineSettings:
    """How the holder makes engines (the node's parameters; the same for the first engine and every swap).

    Attributes:
        backend: ``auto``, ``tensorrt``, ``onnxruntime`` or ``torch`` (``runtime.make_backend``).
        device: ``cpu``, ``cuda``, ``cuda:N``; None = the backend's default.
        precision: ``fp16`` or ``fp32`` (CPU backends always run fp32).
        input_hw: network input (h, w), multiples of 14; None = the model's.
        cache_dir: exported ONNX files and TensorRT engines; None = ``engines/cache``.
        num_threads: CPU threads of the engine; None = the backend's default.
        min_depth_m, max_depth_m: valid depth range, metres; None = the model's.
        min_confidence: NaN below this confidence.
        teacher: build a :class:`~monother_ros.runtime.pair_engine.PairEngine` (torch; dual model).
        min_rebuild_interval_s: TensorRT full rebuilds for swaps at most this often, seconds (refits are
            not limited).
        min_swap_interval_s: any swap at most this often, seconds (0 = no limit): a newer request waits,
            and the newest waiting folder is the one loaded. Bounds what swaps cost a CPU-only robot, where
            each one exports an ONNX file (tens of CPU seconds) while online adaptation writes a
            checkpoint every few seconds.
    """

    backend: BackendName = "auto"
    device: Optional[str] = None
    precision: Precision = "fp32"
    input_hw: Optional[tuple[int, int]] = None
    cache_dir: Optional[str] = None
    num_threads: Optional[int] = None
    min_depth_m: Optional[float] = None
    max_depth_m: Optional[float] = None
    min_confidence: float = 0.0
    teacher: bool = False
    min_rebuild_interval_s: float = DEFAULT_MIN_REBUILD_INTERVAL_S
    min_swap_interval_s: float = 0.0

    def __post_init__(self) -> None:
        if self.teacher and self.backend not in ("auto", "torch"):
            raise ConfigError(f"the teacher path runs on the torch backend; backend is {self.backend!r} "
                              "(use auto or torch)")
        if self.min_rebuild_interval_s < 0:
            raise ConfigError(f"min_rebuild_interval_s must be >= 0, got {self.min_rebuild_interval_s}")
        if self.min_swap_interval_s < 0:
            raise ConfigError(f"min_swap_interval_s must be >= 0, got {self.min_swap_interval_s}")


How = Literal["load", "refit", "rebuild", "teacher"]


@dataclass(frozen=True)
class SwapOutcome:
    """What became of one swap request.

    Attributes:
        path: the model folder (or ONNX file) asked for.
        ok: the holder now runs it.
        how: ``load`` (a new engine), ``refit`` (TensorRT weights refitted into a copy), ``rebuild``
            (a new TensorRT engine), ``teacher`` (a new pair engine sharing the teacher); "" on failure.
        reason: why it failed ("" when ok).
        seconds: wall time of loading + warm-up.
        model_hash: the new engine's model hash ("" on failure).
    """

    path: Path
    ok: bool
    how: str = ""
    reason: str = ""
    seconds: float = 0.0
    model_hash: str = ""


def resolve_onnx_isolated(path: Path, input_hw: Optional[tuple[int, int]], cache_dir: Optional[str],
                          cancel: Optional[threading.Event] = None) -> Path:
    """``runtime.export.resolve_onnx`` in a child process: the ONNX file to run for a model folder at an
    input size, exported (and cached) by the child when needed. An ``.onnx`` file is returned as is.

    Args:
        path: model folder or ``.onnx`` file.
        input_hw: network input (h, w); None = the model's.
        cache_dir: the export cache; None = ``engines/cache``.
        cancel: set it to kill the child (shutdown); the call then raises ``MonotherError``.

    Raises:
        MonotherError: the child failed (its last error lines), or was cancelled.
    """
    import subprocess
    import sys

    from monother_ros.errors import MonotherError

    if Path(path).suffix == ".onnx":
        return Path(path)
    args = [sys.executable, "-m", __name__, "export", str(path),
            "x".join(str(v) for v in input_hw) if input_hw else "", cache_dir or ""]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    try:
        while True:
            try:
                out, err = proc.communicate(timeout=0.1)
                break
            except subprocess.TimeoutExpired:
                if cancel is not None and cancel.is_set():
                    proc.kill()
                    proc.communicate()
                    raise MonotherError(f"ONNX export of {path} cancelled") from None
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    lines = out.decode(errors="replace").strip().splitlines()
    if proc.returncode != 0 or not lines:
        reason = " ".join(err.decode(errors="replace").strip().splitlines()[-1:]) or f"exit {proc.returncode}"
        raise MonotherError(f"ONNX export of {path} failed: {reason}")
    return Path(lines[-1])


_STAGING_PREFIX = ".staging-"
_staged_count = itertools.count()


def stage_folder(path: Path, cache_dir: Optional[str]) -> Path:
    """A private copy of a model folder's files (hard links where possible) in the cache folder, so that
    a checkpoint pruned meanwhile stays loadable; an ``.onnx`` file is returned as is.

    Raises:
        CheckpointError: the folder is gone (pruned by newer checkpoints before it could be loaded).
    """
    from monother_ros.errors import CheckpointError
    from monother_ros.runtime.cache import default_cache_dir

    path = Path(path)
    if path.suffix == ".onnx":
        return path
    root = Path(cache_dir) if cache_dir else default_cache_dir()
    target = root / f"{_STAGING_PREFIX}{os.getpid()}-{next(_staged_count)}" / path.name
    try:
        files = [f for f in path.iterdir() if f.is_file()]
        target.mkdir(parents=True)
        for f in files:
            try:
                os.link(f, target / f.name)
            except OSError:  # another file system, or no hard links there
                shutil.copy2(f, target / f.name)
    except FileNotFoundError as exc:
        shutil.rmtree(target.parent, ignore_errors=True)
        raise CheckpointError(f"{path} is gone (pruned by newer checkpoints before it could be loaded?): "
                              f"{exc}") from exc
    return target


def unstage(path: Path) -> None:
    """Remove a folder made by :func:`stage_folder` (nothing else)."""
    if path.parent.name.startswith(_STAGING_PREFIX):
        shutil.rmtree(path.parent, ignore_errors=True)


def remove_stale_staging(cache_dir: Optional[str]) -> int:
    """Remove staging folders left by processes that no longer run; returns how many."""
    from monother_ros.runtime.cache import default_cache_dir

    root = Path(cache_dir) if cache_dir else default_cache_dir()
    removed = 0
    for folder in root.glob(f"{_STAGING_PREFIX}*") if root.is_dir() else []:
        pid = folder.name[len(_STAGING_PREFIX):].split("-")[0]
        try:
            os.kill(int(pid), 0)
            continue  # its process still runs
        except ProcessLookupError:
            pass
        except (ValueError, PermissionError):
            continue
        shutil.rmtree(folder, ignore_errors=True)
        removed += 1
    return removed


def load_engine(path: Path, settings: EngineSettings, current: Any = None,
                cancel: Optional[threading.Event] = None) -> tuple[Any, How]:
    """An engine for the model at ``path`` made as ``settings`` say, reusing ``current`` where it can.

    Args:
        path: model folder or ``.onnx`` file.
        settings: backend, device, precision, input size, thresholds.
        current: the running engine (None at start): the teacher of a running pair engine is shared,
            and a running TensorRT engine is refitted when the new model is the same graph.
        cancel: set it to stop an ONNX export in progress (shutdown).

    Returns:
        ``(engine, how)``.

    Raises:
        MonotherError (ConfigError, CheckpointError, BackendUnavailableError, ...) or any load error.
    """
    s = settings
    if current is not None:
        # Thresholds may have changed at run time: the new engine continues with the running ones.
        th = current.thresholds
        s = replace(s, min_depth_m=th.min_depth_m, max_depth_m=th.max_depth_m, min_confidence=th.min_confidence)
        hw = tuple(current.info.input_hw)
    else:
        hw = s.input_hw
    if s.teacher:
        from monother_ros.runtime.pair_engine import PairEngine

        if current is not None and isinstance(current, PairEngine):
            return current.with_student(path), "teacher"
        return PairEngine.from_model_dir(path, input_hw=hw, device=s.device or "cpu", precision=s.precision,
                                         num_threads=s.num_threads, min_depth_m=s.min_depth_m,
                                         max_depth_m=s.max_depth_m, min_confidence=s.min_confidence), "teacher"
    from monother_ros.runtime.engine import make_backend

    backend = s.backend if current is None else current.info.backend
    if current is not None and backend in ("onnxruntime", "tensorrt"):
        # The export (if any) in a child process, from a private copy of the folder; the engine below then
        # reads a ready ONNX file in the cache.
        staged = stage_folder(path, s.cache_dir)
        try:
            path = resolve_onnx_isolated(staged, hw, s.cache_dir, cancel)
        finally:
            unstage(staged)
        if backend == "tensorrt" and hasattr(current, "refitted"):
            why = current.refit_unavailable(path)
            if not why:
                return current.refitted(path), "refit"
            _logger.info("TensorRT swap to %s needs a rebuild: %s", path, why)
    engine = make_backend(path, backend, input_hw=hw, precision=s.precision, device=s.device,
                          cache_dir=s.cache_dir, num_threads=s.num_threads, min_depth_m=s.min_depth_m,
                          max_depth_m=s.max_depth_m, min_confidence=s.min_confidence)
    return engine, ("rebuild" if engine.info.backend == "tensorrt" and current is not None else "load")


def tensorrt_needs_rebuild(path: Path, settings: EngineSettings, current: Any,
                           cancel: Optional[threading.Event] = None) -> bool:
    """Whether swapping ``current`` to ``path`` is a full TensorRT build (refit cannot apply); exports the
    ONNX file if needed (child process). False for other backends, and when the check itself fails (the
    load then reports the problem)."""
    if current.info.backend != "tensorrt" or not hasattr(current, "refit_unavailable"):
        return False
    try:
        staged = stage_folder(path, settings.cache_dir)
        try:
            onnx_path = resolve_onnx_isolated(staged, current.info.input_hw, settings.cache_dir, cancel)
        finally:
            unstage(staged)
        return bool(current.refit_unavailable(onnx_path))
    except Exception:  # noqa: BLE001
        return False


def warm_up(engine: Any) -> None:
    """One synthetic frame (a pair too for a pair engine): lazy initialisation happens here, not on the
    first real frame."""
    if hasattr(engine, "warm_up"):
        engine.warm_up()
        return
    h, w = engine.info.input_hw
    engine.infer((np.arange(h * w, dtype=np.uint32).reshape(h, w) * 7 % 65535).astype(np.uint16))


class EngineHolder:
    """Holds the running engine; swaps in new model folders between frames (module docstring).

    Args:
        settings: how engines are made.
        model_path: the first model (loaded in the constructor, on the calling thread).
        on_swap: called with a :class:`SwapOutcome` after every request is settled (loader thread).
        loader: ``(path, settings, current) -> (engine, how)``; default :func:`load_engine`.
        needs_rebuild: ``(path, settings, current) -> bool``: the swap is a full TensorRT build, rate-limited
            by ``settings.min_rebuild_interval_s``; default :func:`tensorrt_needs_rebuild`.
        clock: monotonic seconds (tests).

    Raises:
        Whatever loading the first model raises (the node refuses to start).
    """

    def __init__(self, settings: EngineSettings, model_path: str | os.PathLike, *,
                 on_swap: Optional[Callable[[SwapOutcome], None]] = None,
                 loader: Optional[Callable[..., tuple[Any, str]]] = None,
                 needs_rebuild: Optional[Callable[..., bool]] = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self._load = loader or load_engine
        self._needs_rebuild = needs_rebuild or tensorrt_needs_rebuild
        self._on_swap = on_swap
        self._clock = clock
        self._lock = threading.Lock()             # guards the fields below; held only for reference swaps
        self._wake = threading.Condition(self._lock)
        path = Path(model_path)
        remove_stale_staging(settings.cache_dir)
        engine, _ = self._load(path, settings, None)
        self._engine = engine
        self._model_path = path
        self._in_flight: dict[int, int] = {}      # id(engine) -> frames running on it
        self._retired: dict[int, Any] = {}        # replaced engines waiting for their last frame
        self._pending: Optional[Path] = None
        self._loading: Optional[Path] = None
        self._stopping = False
        self._cancel = threading.Event()  # set by close(): kills an export child in progress
        self._thread: Optional[threading.Thread] = None
        # A TensorRT engine built just now counts as the last rebuild (the rate limit starts here).
        self._last_rebuild = clock() if getattr(engine, "built", False) else -float("inf")
        self._last_swap = -float("inf")
        self.swaps = 0
        self.failures = 0
        self.last_outcome: Optional[SwapOutcome] = None

    # ------------------------------------------------------------------ the running engine

    @property
    def engine(self) -> Any:
        """The engine new frames run on."""
        return self._engine

    @property
    def model_path(self) -> Path:
        """The model the running engine was made from."""
        return self._model_path

    @contextlib.contextmanager
    def frame(self) -> Iterator[Any]:
        """The engine for one frame; a swap during the frame closes the old engine only after it."""
        with self._lock:
            engine = self._engine
            key = id(engine)
            self._in_flight[key] = self._in_flight.get(key, 0) + 1
        try:
            yield engine
        finally:
            with self._lock:
                left = self._in_flight[key] - 1
                if left:
                    self._in_flight[key] = left
                else:
                    del self._in_flight[key]
                finished = self._retired.pop(key, None) if not left else None
            if finished is not None:
                _close(finished)

    # ------------------------------------------------------------------ swaps

    def request(self, path: str | os.PathLike) -> None:
        """Ask for a swap to the model at ``path`` (returns at once; the loader thread does the work).

        A newer request replaces one still waiting; a request for the running model is ignored.
        """
        path = Path(path).expanduser()
        with self._lock:
            if self._stopping:
                return
            if path == self._model_path and self._loading is None and self._pending is None:
                return
            self._pending = path
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loader_loop, name="engine-loader", daemon=True)
                self._thread.start()
            self._wake.notify_all()

    @property
    def busy(self) -> bool:
        """A swap is waiting or loading."""
        with self._lock:
            return self._pending is not None or self._loading is not None

    def wait_idle(self, timeout: float) -> bool:
        """Wait until no swap is waiting or loading; True when idle within ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while self._pending is not None or self._loading is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._wake.wait(remaining)
            return True

    def swap(self, path: str | os.PathLike) -> SwapOutcome:
        """Load ``path`` on the calling thread and swap it in; the running engine stays on failure."""
        path = Path(path).expanduser()
        t0 = time.monotonic()
        current = self._engine
        try:
            new, how = self._load(path, self.settings, current, cancel=self._cancel)
        except Exception as exc:  # noqa: BLE001 - any failure keeps the running engine
            reason = "shutting down" if self._stopping else f"{type(exc).__name__}: {exc}"
            return self._settle(SwapOutcome(path, False, reason=reason, seconds=time.monotonic() - t0))
        if self._stopping:  # shutting down: the new engine is not wanted any more
            _close(new)
            return self._settle(SwapOutcome(path, False, reason="shutting down", seconds=time.monotonic() - t0))
        try:
            warm_up(new)
        except Exception as exc:  # noqa: BLE001
            _close(new)
            return self._settle(SwapOutcome(path, False, reason=f"warm-up failed: {type(exc).__name__}: {exc}",
                                            seconds=time.monotonic() - t0))
        if getattr(new, "selection", None) is None and getattr(current, "selection", None) is not None:
            new.selection = current.selection  # how the backend was chosen still holds (same backend, device)
        with self._lock:
            old, self._engine, self._model_path = self._engine, new, path
            key = id(old)
            close_now = key not in self._in_flight
            if not close_now:
                self._retired[key] = old
            self.swaps += 1
        if close_now and old is not new:
            _close(old)
        return self._settle(SwapOutcome(path, True, how=how, seconds=time.monotonic() - t0,
                                        model_hash=new.info.model_hash))

    def _settle(self, outcome: SwapOutcome) -> SwapOutcome:
        if not outcome.ok:
            self.failures += 1
        self.last_outcome = outcome
        if self._on_swap is not None:
            try:
                self._on_swap(outcome)
            except Exception:  # noqa: BLE001 - a reporting bug must not kill the loader
                _logger.exception("on_swap callback failed")
        return outcome

    def _rebuild_wait(self) -> float:
        """Seconds until a full rebuild is allowed again."""
        return max(0.0, self._last_rebuild + self.settings.min_rebuild_interval_s - self._clock())

    def _swap_wait(self) -> float:
        """Seconds until the next swap is allowed (``min_swap_interval_s``)."""
        return max(0.0, self._last_swap + self.settings.min_swap_interval_s - self._clock())

    def _deferred(self, path: Path) -> bool:
        """Wait out ``min_swap_interval_s`` before loading ``path``; True when the loop must start over
        (shutting down, or a newer request replaced this one while waiting)."""
        wait = self._swap_wait()
        if wait <= 0:
            return False
        _logger.info("swap to %s deferred %.0f s (min_swap_interval_s)", path, wait)
        with self._lock:
            self._wake.wait_for(lambda: self._stopping or self._pending is not None, wait)
            if self._stopping or self._pending is not None:
                return True  # the newer request goes through the loop (and its own wait)
        if self._swap_wait() > 0:  # woken early without a newer request: try again
            with self._lock:
                self._pending = self._pending or path
            return True
        return False

    def _loader_loop(self) -> None:
        _lower_thread_priority()
        while True:
            with self._lock:
                while self._pending is None and not self._stopping:
                    self._wake.wait()
                if self._stopping:
                    self._pending = None
                    self._wake.notify_all()
                    return
                path, self._pending = self._pending, None
                self._loading = path
            try:
                if self._deferred(path):
                    continue
                rebuild = self._needs_rebuild(path, self.settings, self._engine, cancel=self._cancel)
                wait = self._rebuild_wait() if rebuild else 0.0
                if wait > 0:
                    _logger.info("TensorRT rebuild for %s deferred %.0f s (min_rebuild_interval_s)", path, wait)
                    with self._lock:
                        # A newer request or close() wakes us; the newest waiting path is the one built.
                        self._wake.wait_for(lambda: self._stopping or self._pending is not None, wait)
                        if self._stopping:
                            continue
                        if self._pending is not None:
                            continue  # the newer request goes through the loop (and its own wait)
                    if self._rebuild_wait() > 0:
                        with self._lock:
                            self._pending = self._pending or path
                        continue
                outcome = self.swap(path)
                if outcome.ok:
                    self._last_swap = self._clock()
                if rebuild and outcome.ok:
                    self._last_rebuild = self._clock()
            finally:
                with self._lock:
                    self._loading = None
                    self._wake.notify_all()

    # ------------------------------------------------------------------ shutdown

    def close(self, timeout: float = 60.0) -> bool:
        """Stop accepting requests, join the loader (a load in progress finishes), close every engine.

        Returns:
            True when the loader thread ended within ``timeout`` seconds.
        """
        with self._lock:
            self._stopping = True
            self._pending = None
            self._cancel.set()
            self._wake.notify_all()
            thread = self._thread
        joined = True
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
            joined = not thread.is_alive()
            if not joined:
                _logger.warning("engine loader still busy after %.0f s at shutdown", timeout)
        with self._lock:
            engines = [self._engine, *self._retired.values()]
            self._retired.clear()
        for engine in engines:
            _close(engine)
        return joined


def _close(engine: Any) -> None:
    try:
        engine.close()
    except Exception:  # noqa: BLE001 - closing must not raise into a frame or shutdown
        _logger.exception("closing an engine failed")


def _lower_thread_priority() -> None:
    """Nice the loader thread (Linux: per thread) so that exports and builds yield the CPU to inference."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)
    except (AttributeError, OSError):
        pass


def _export_main(argv: list[str]) -> int:
    """Child-process entry: ``export <model> <h>x<w | ""> <cache_dir | "">``; prints the ONNX path."""
    import signal
    import sys

    signal.signal(signal.SIGINT, signal.SIG_DFL)  # a Ctrl-C reaching the child just ends it, quietly
    try:
        os.nice(10)  # leave the CPU to inference
    except OSError:
        pass
    from monother_ros.errors import MonotherError
    from monother_ros.runtime.export import parse_hw, resolve_onnx

    if len(argv) != 4 or argv[0] != "export":
        print("usage: python -m monother_ros.runtime.engine_holder export MODEL [HxW] [CACHE_DIR]", file=sys.stderr)
        return 2
    _, model, hw, cache_dir = argv
    try:
        path = resolve_onnx(model, parse_hw(hw) if hw else None, cache_dir or None)
    except (MonotherError, OSError, ValueError) as exc:
        print(f"{type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    print(path)
    return 0


if __name__ == "__main__":
    import sys

    raise SystemExit(_export_main(sys.argv[1:]))
