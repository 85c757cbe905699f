"""Atomic, resumable training checkpoints.

A checkpoint is a directory ``<out_dir>/checkpoints/step_<NNNNNNNNN>/`` holding

* ``model.safetensors``: the full dual model's weights (student, teacher, confidence network);
* ``state.pt``: optimiser and scheduler state, step / epoch counters, RNG states (torch, CUDA, numpy,
  python) and the resolved training configuration, as plain tensors, numbers, strings, lists and dicts,
  so that ``torch.load(..., weights_only=True)`` reads it back (no pickled code).

It is written into a hidden temporary directory, fsynced and renamed into place; then the ``latest``
pointer file is replaced atomically. A crash at any moment leaves either the previous checkpoint set or
the new one, never a partial directory under a final name. Resuming restores everything needed for
the continued run to equal an uninterrupted one (same data order, augmentation, RNG draws).
"""
from __future__ import annotations

import logging
import os
import random
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from torch import nn

from monother_ros.errors import CheckpointError

LOG = logging.getLogger(__name__)

MODEL_FILE = "model.safetensors"
STATE_FILE = "state.pt"
LATEST_FILE = "latest"
_STEP_DIR = re.compile(r"^step_(\d{9})$")


def rng_state() -> dict[str, Any]:
    """RNG states of torch (CPU and CUDA), numpy's global generator and ``random`` as plain data."""
    np_state = np.random.get_state()
    py_version, py_internal, py_gauss = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {"key": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
        "python": {"version": int(py_version), "internal": list(py_internal), "gauss": py_gauss},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Inverse of ``rng_state``."""
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["key"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["internal"]), p["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems refuse fsync on directories; the rename is still atomic
    finally:
        os.close(fd)


def _write_file(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def checkpoint_dir(out_dir: str | Path) -> Path:
    return Path(out_dir) / "checkpoints"


def save_checkpoint(
    out_dir: str | Path,
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None,
    scheduler: Any | None,
    step: int,
    epoch: int,
    step_in_epoch: int,
    config: Mapping[str, Any],
    extra: Mapping[str, Any] | None = None,
    keep: int = 0,
) -> Path:
    """Write a checkpoint for global ``step`` atomically and point ``latest`` at it.

    Args:
        out_dir: run directory (checkpoints go under ``out_dir/checkpoints``).
        model: the (unwrapped) model; its ``state_dict`` goes into safetensors.
        optimizer, scheduler: their ``state_dict``s go into ``state.pt``.
        step: optimiser steps done so far; epoch / step_in_epoch: where the data loop stands.
        config: resolved configuration (``TrainConfig.to_dict()``).
        extra: more plain data to keep (e.g. best validation score).
        keep: keep only the newest ``keep`` checkpoints (0 = all).

    Returns:
        The checkpoint directory.

    Raises:
        CheckpointError: writing failed (nothing partial is left under the final name).
    """
    from safetensors.torch import save as st_save

    root = checkpoint_dir(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step_{int(step):09d}"
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}
    state = {
        "step": int(step),
        "epoch": int(epoch),
        "step_in_epoch": int(step_in_epoch),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "rng": rng_state(),
        "config": dict(config),
        "extra": dict(extra or {}),
        "torch_version": str(torch.__version__),
    }
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=root))
    try:
        _write_file(tmp / MODEL_FILE, st_save(tensors, metadata={"step": str(step)}))
        buffer_path = tmp / STATE_FILE
        with open(buffer_path, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        _fsync_dir(tmp)
        if final.exists():  # re-saving the same step (e.g. after a resume): replace it
            old = root / f".{final.name}.old-{os.getpid()}"
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
        pointer_tmp = root / f".{LATEST_FILE}.tmp-{os.getpid()}"
        _write_file(pointer_tmp, (final.name + "\n").encode())
        os.replace(pointer_tmp, root / LATEST_FILE)
        _fsync_dir(root)
    except Exception as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(exc, OSError):
            raise CheckpointError(f"could not write checkpoint {final}: {exc}") from exc
        raise
    if keep > 0:
        prune_checkpoints(out_dir, keep)
    LOG.info("checkpoint %s (epoch %d, step %d)", final, epoch, step)
    return final


def list_checkpoints(out_dir: str | Path) -> list[Path]:
    """Complete checkpoint directories, oldest first (temporary ones are ignored)."""
    root = checkpoint_dir(out_dir)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and _STEP_DIR.match(p.name) and (p / STATE_FILE).is_file()]
    return sorted(found, key=lambda p: p.name)


def latest_checkpoint(out_dir: str | Path) -> Path | None:
    """The checkpoint ``latest`` points at, else the newest complete one, else None."""
    root = checkpoint_dir(out_dir)
    pointer = root / LATEST_FILE
    if pointer.is_file():
        candidate = root / pointer.read_text().strip()
        if (candidate / STATE_FILE).is_file() and (candidate / MODEL_FILE).is_file():
            return candidate
    found = list_checkpoints(out_dir)
    return found[-1] if found else None


def prune_checkpoints(out_dir: str | Path, keep: int) -> None:
    """Delete all but the newest ``keep`` checkpoints (never the one ``latest`` points at)."""
    found = list_checkpoints(out_dir)
    latest = latest_checkpoint(out_dir)
    for path in found[: max(len(found) - keep, 0)]:
        if path != latest:
            shutil.rmtree(path, ignore_errors=True)


def read_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """``(weights, state)`` of a checkpoint directory (``state.pt`` read with ``weights_only=True``).

    Raises:
        CheckpointError: missing or unreadable files.
    """
    from safetensors.torch import load_file

    path = Path(path)
    try:
        tensors = load_file(str(path / MODEL_FILE))
        state = torch.load(path / STATE_FILE, map_location="cpu", weights_only=True)
    except FileNotFoundError as exc:
        raise CheckpointError(f"{path} is not a training checkpoint: {exc}") from exc
    except Exception as exc:  # safetensors / unpickler errors on a corrupt file
        raise CheckpointError(f"cannot read checkpoint {path}: {type(exc).__name__}: {exc}") from exc
    return tensors, state


def load_checkpoint(
    path: str | Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any | None = None,
    *,
    restore_rng: bool = True,
) -> dict[str, Any]:
    """Load weights (strict) and, when given, optimiser / scheduler / RNG state; returns the state dict.

    Raises:
        CheckpointError: unreadable checkpoint or weights that do not match the model.
    """
    tensors, state = read_checkpoint(path)
    result = model.load_state_dict(tensors, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise CheckpointError(
            f"checkpoint {path} does not match the model: missing {result.missing_keys[:5]}, "
            f"unexpected {result.unexpected_keys[:5]}"
        )
    if optimizer is not None and state.get("optimizer") is not None:
        optimizer.load_state_dict(state["optimizer"])
    if scheduler is not None and state.get("scheduler") is not None:
        scheduler.load_state_dict(state["scheduler"])
    if restore_rng and "rng" in state:
        set_rng_state(state["rng"])
    return state
