"""The online learner's checkpoint folders: ``<root>/adapt-NNNNNN``, newest last, at most ``keep`` of them.

Crash safety, in the order things can go wrong:

* A folder is written by ``model/checkpoints.save_model`` (temporary sibling ``.adapt-NNNNNN.tmp-*``, fsync,
  rename), so a kill mid-write leaves only a hidden temporary. A folder missing any of
  :data:`REQUIRED_FILES` (an older layout, a kill mid-prune, someone's ``rm``) is *partial*.
* Pruning first renames a folder to a hidden ``.adapt-NNNNNN.trash-*`` name (atomic), then deletes it,
  so a kill mid-prune leaves a hidden temporary, never a half-deleted visible checkpoint.
* :meth:`CheckpointStore.cleanup` (run when the store opens) removes hidden temporaries (``.adapt-*``,
  ``.export-*``, ``.swap-*``, ``*.tmp``) at the top level and inside the checkpoint folders, removes partial
  folders, and prunes to ``keep``.
* :meth:`CheckpointStore.write` prunes after EVERY attempt, successful or not; after a failure for lack of
  space (``ENOSPC``/``EDQUOT``) the next attempt first makes room by pruning to ``keep - 1`` (never below
  one folder), so a disk that holds only ``keep`` checkpoints still takes new ones. The last failure is
  kept in :attr:`CheckpointStore.last_error` until a write succeeds.
* :meth:`CheckpointStore.latest_valid` returns the newest folder whose weights read back with a matching
  hash; a newer corrupt one is skipped (and, with ``remove_invalid``, deleted).
"""
from __future__ import annotations

import errno
import logging
import os
import re
import shutil
import uuid
from pathlib import Path
from typing import Any, Iterator, Mapping, Optional

import torch
from torch import nn

from monother_ros.errors import CheckpointError, ConfigError

__all__ = ["CheckpointStore", "REQUIRED_FILES", "CHECKPOINT_PREFIX"]

LOG = logging.getLogger(__name__)

CHECKPOINT_PREFIX = "adapt-"
# What save_model writes; a folder without all three is partial.
REQUIRED_FILES = ("model.safetensors", "config.json", "metadata.json")
_CKPT_RE = re.compile(r"^adapt-(\d{6,})$")
# Hidden leftovers of interrupted writes, prunes, ONNX exports and swaps (this and earlier versions).
_TEMP_PREFIXES = (".adapt-", ".export-", ".swap-")
_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


def _is_temporary(name: str) -> bool:
    return name.startswith(_TEMP_PREFIXES) or (name.startswith(".") and name.endswith(".tmp"))


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _no_space(exc: BaseException) -> bool:
    while exc is not None:
        if isinstance(exc, OSError) and exc.errno in _NO_SPACE:
            return True
        exc = exc.__cause__ or exc.__context__
    return False


class CheckpointStore:
    """Adapted students as ``<root>/adapt-NNNNNN`` model folders (see the module docstring).

    Args:
        root: folder holding the checkpoints (created on the first write).
        keep: most checkpoint folders kept (the newest), >= 1.
        clean: run :meth:`cleanup` now (the learner opens its store at start).

    Attributes:
        last_error: why the last write failed, or None after a successful one.
        failures: writes that failed since the store was opened.
    """

    def __init__(self, root: str | os.PathLike, keep: int = 3, *, clean: bool = False) -> None:
        if int(keep) < 1:
            raise ValueError(f"keep must be >= 1, got {keep}")
        self.root = Path(root)
        self.keep = int(keep)
        self.last_error: Optional[str] = None
        self.failures = 0
        self._make_room = False
        if clean:
            self.cleanup()

    # ------------------------------------------------------------------ listing

    def _numbered(self) -> list[tuple[int, Path]]:
        if not self.root.is_dir():
            return []
        found = [(int(m.group(1)), p) for p in self.root.iterdir() if (m := _CKPT_RE.match(p.name)) and p.is_dir()]
        return sorted(found)

    @staticmethod
    def is_complete(path: Path) -> bool:
        """Whether a checkpoint folder holds every file of :data:`REQUIRED_FILES` (not a hash check)."""
        return all((path / name).is_file() for name in REQUIRED_FILES)

    def list(self) -> list[Path]:
        """Complete checkpoint folders, oldest first."""
        return [p for _, p in self._numbered() if self.is_complete(p)]

    def _next_index(self) -> int:
        # Past every numbered folder, partial ones included (a partial newest one must not be overwritten).
        items = self._numbered()
        return items[-1][0] + 1 if items else 1

    # ------------------------------------------------------------------ housekeeping

    def _discard(self, path: Path) -> None:
        """Rename to a hidden name first (atomic), then delete: a kill in between leaves a temporary."""
        trash = path.with_name(f".{path.name}.trash-{uuid.uuid4().hex[:8]}")
        try:
            os.replace(path, trash)
        except OSError:
            trash = path
        _remove(trash)

    def prune(self, keep: Optional[int] = None) -> int:
        """Delete the oldest folders (partial ones first) beyond ``keep`` (default ``self.keep``); how many."""
        keep = self.keep if keep is None else max(1, int(keep))
        numbered = self._numbered()
        partial = [p for _, p in numbered if not self.is_complete(p)]
        complete = [p for _, p in numbered if self.is_complete(p)]
        doomed = partial + complete[:max(0, len(complete) - keep)]
        for path in doomed:
            self._discard(path)
        return len(doomed)

    def cleanup(self) -> int:
        """Remove temporaries (top level and inside checkpoints) and partial folders, then prune; how many
        entries were removed."""
        if not self.root.is_dir():
            return 0
        removed = 0
        for entry in list(self.root.iterdir()):
            if _is_temporary(entry.name):
                _remove(entry)
                removed += 1
        for _, folder in self._numbered():
            for entry in list(folder.iterdir()):
                if _is_temporary(entry.name) or entry.name.startswith("."):
                    _remove(entry)
                    removed += 1
        removed += self.prune()
        if removed:
            LOG.info("checkpoint store %s: removed %d leftover(s) of interrupted writes", self.root, removed)
        return removed

    # ------------------------------------------------------------------ writing

    def write(self, student: nn.Module, config: Any, metadata: Mapping[str, Any]) -> Path:
        """Write a new checkpoint folder, then prune (also when the write fails).

        Args:
            student: the network saved (``state_dict`` tensors).
            config: its ``ModelConfig``.
            metadata: extra JSON-serialisable entries for ``metadata.json``.

        Returns:
            The new folder.

        Raises:
            CheckpointError: the write failed (``last_error`` says why; the next call retries).
        """
        from monother_ros.model.checkpoints import save_model

        try:
            self.root.mkdir(parents=True, exist_ok=True)
            if self._make_room:
                self.prune(self.keep - 1)
            target = self.root / f"{CHECKPOINT_PREFIX}{self._next_index():06d}"
            save_model(student, config, target, metadata=dict(metadata))
        except (CheckpointError, OSError) as exc:
            self.failures += 1
            self._make_room = _no_space(exc)
            self.last_error = f"{type(exc).__name__}: {exc}"
            raise CheckpointError(f"could not write a checkpoint into {self.root}: {exc}") from exc
        finally:
            try:
                self.prune()
            except OSError as exc:  # pruning must not hide the write's outcome
                LOG.warning("could not prune %s: %s", self.root, exc)
        self._make_room = False
        self.last_error = None
        return target

    # ------------------------------------------------------------------ reading

    def valid(self, *, remove_invalid: bool = False) -> Iterator[tuple[Path, dict[str, torch.Tensor], dict[str, Any]]]:
        """(folder, state dict, metadata) of each checkpoint that reads back with a matching hash, newest first.

        Args:
            remove_invalid: delete folders that fail to read (corrupt or not ours) on the way.
        """
        from monother_ros.model.checkpoints import read_model_dir

        for path in reversed(self.list()):
            try:
                tensors, _, meta = read_model_dir(path)
            except (CheckpointError, ConfigError, OSError) as exc:
                LOG.warning("skipping unreadable adaptation checkpoint %s: %s", path, exc)
                if remove_invalid:
                    self._discard(path)
                continue
            yield path, tensors, meta

    def latest_valid(self, *, remove_invalid: bool = False) -> Optional[tuple[Path, dict[str, torch.Tensor], dict[str, Any]]]:
        """The newest entry of :meth:`valid`, or None."""
        return next(self.valid(remove_invalid=remove_invalid), None)
