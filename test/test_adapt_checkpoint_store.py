"""adapt/checkpoint_store.py: keep enforced at start and after every write attempt, leftovers of
interrupted writes removed at start, recovery after a full disk, resume from the newest valid folder.

The full disk is simulated by a patched file writer raising ``OSError(ENOSPC)`` for files under the
store (``Path.write_bytes`` is what ``save_model`` writes the weights with)."""
from __future__ import annotations

import copy
import errno
import json
import pathlib
import time

import pytest
import torch

from monother_ros.adapt import CheckpointStore, LearnerConfig, OnlineLearner
from monother_ros.adapt.checkpoint_store import REQUIRED_FILES
from monother_ros.errors import CheckpointError
from monother_ros.model.variants import get_preset

from test_adapt_learner import _config, _fill, dual  # noqa: F401 - the module fixture is reused

CONFIG = get_preset("test-tiny")


def _net(value: float) -> torch.nn.Module:
    net = torch.nn.Linear(4, 4, bias=False)
    with torch.no_grad():
        net.weight.fill_(value)
    return net


def _folders(root: pathlib.Path) -> list[str]:
    return sorted(p.name for p in root.iterdir())


class FullDisk:
    """Patches ``Path.write_bytes`` so that writes under ``root`` fail with ENOSPC while the disk is full.

    ``capacity``: the disk holds this many checkpoint folders (a write beyond fails); None = never full
    by itself. ``full``: force the disk full regardless of the capacity.
    """

    def __init__(self, monkeypatch, root: pathlib.Path, capacity: int | None = None) -> None:
        self.root, self.capacity, self.full, self.refused = root, capacity, False, 0
        original = pathlib.Path.write_bytes

        def write_bytes(path, data):
            if self.root in path.parents and self._is_full():
                self.refused += 1
                raise OSError(errno.ENOSPC, "No space left on device", str(path))
            return original(path, data)

        monkeypatch.setattr(pathlib.Path, "write_bytes", write_bytes)

    def _is_full(self) -> bool:
        if self.full:
            return True
        if self.capacity is None:
            return False
        return sum(1 for p in self.root.iterdir() if p.name.startswith("adapt-")) >= self.capacity


def test_start_removes_temporaries_and_partial_folders_and_prunes_to_keep(tmp_path):
    root = tmp_path / "ckpt"
    writer = CheckpointStore(root, keep=10)
    for i in range(1, 6):
        writer.write(_net(i), CONFIG, {"i": i})
    # Leftovers as earlier versions and kills left them.
    (root / "adapt-000003" / "metadata.json").unlink()  # partial (killed mid-delete / mid-write)
    (root / "adapt-000006").mkdir()  # partial: an empty numbered folder
    (root / "adapt-000006" / "config.json").write_text("{}")
    (root / ".adapt-000007.tmp-abc").mkdir()  # save_model's temporary
    (root / ".adapt-000007.tmp-abc" / "model.safetensors").write_bytes(b"x" * 100)
    (root / ".adapt-000002.trash-1234").mkdir()  # a prune killed between rename and delete
    (root / ".swap-resume-4.onnx").write_bytes(b"onnx")
    (root / ".export-k2j3").mkdir()
    (root / "adapt-000005" / ".export-zz").mkdir()  # an ONNX export killed inside a checkpoint
    (root / "adapt-000005" / ".model.onnx.abc.tmp").write_bytes(b"partial")
    (root / "notes.txt").write_text("the user's file stays")

    store = CheckpointStore(root, keep=2, clean=True)
    assert _folders(root) == ["adapt-000004", "adapt-000005", "notes.txt"]
    assert sorted(p.name for p in (root / "adapt-000005").iterdir()) == sorted(REQUIRED_FILES)
    path, tensors, meta = store.latest_valid()
    assert path.name == "adapt-000005" and meta["i"] == 5 and torch.all(tensors["weight"] == 5.0)
    assert store.write(_net(7), CONFIG, {"i": 7}).name == "adapt-000006"
    assert [p.name for p in store.list()] == ["adapt-000005", "adapt-000006"]


def test_keep_is_enforced_after_a_failed_write_too(tmp_path, monkeypatch):
    root = tmp_path / "ckpt"
    many = CheckpointStore(root, keep=10)
    for i in range(1, 7):
        many.write(_net(i), CONFIG, {"i": i})
    store = CheckpointStore(root, keep=3)  # opened without clean-up: 6 folders on disk
    disk = FullDisk(monkeypatch, root)
    disk.full = True
    with pytest.raises(CheckpointError, match="No space left"):
        store.write(_net(7), CONFIG, {"i": 7})
    assert disk.refused == 1 and "No space left" in store.last_error and store.failures == 1
    assert [p.name for p in store.list()] == ["adapt-000004", "adapt-000005", "adapt-000006"]
    assert not any(p.name.startswith(".") for p in root.iterdir())  # the failed write left nothing


def test_a_disk_holding_only_keep_checkpoints_still_takes_new_ones(tmp_path, monkeypatch):
    root = tmp_path / "ckpt"
    store = CheckpointStore(root, keep=3)
    FullDisk(monkeypatch, root, capacity=3)
    for i in range(1, 4):
        store.write(_net(i), CONFIG, {"i": i})
    with pytest.raises(CheckpointError):  # the disk is full with 3 folders
        store.write(_net(4), CONFIG, {"i": 4})
    assert store.last_error is not None and len(store.list()) == 3
    # The next attempt makes room first (drops the oldest, keeps the newest) and succeeds.
    assert store.write(_net(5), CONFIG, {"i": 5}).name == "adapt-000004"
    assert store.last_error is None
    assert [p.name for p in store.list()] == ["adapt-000002", "adapt-000003", "adapt-000004"]
    assert store.latest_valid()[2]["i"] == 5


def test_latest_valid_skips_corrupt_and_partial_newer_folders(tmp_path):
    root = tmp_path / "ckpt"
    store = CheckpointStore(root, keep=5)
    for i in range(1, 5):
        store.write(_net(i), CONFIG, {"i": i})
    blob = root / "adapt-000004" / "model.safetensors"
    data = bytearray(blob.read_bytes())
    data[-3] ^= 0xFF
    blob.write_bytes(bytes(data))  # hash mismatch
    (root / "adapt-000003" / "config.json").unlink()  # partial
    path, tensors, meta = store.latest_valid()
    assert path.name == "adapt-000002" and meta["i"] == 2 and torch.all(tensors["weight"] == 2.0)
    assert (root / "adapt-000004").is_dir()  # reading alone deletes nothing
    assert store.latest_valid(remove_invalid=True)[0].name == "adapt-000002"
    assert [p.name for p in store.list()] == ["adapt-000001", "adapt-000002"]


@pytest.mark.slow
def test_learner_reports_a_full_disk_retries_by_itself_and_recovers(dual, tmp_path, monkeypatch):  # noqa: F811
    root = tmp_path / "ckpt"
    learner = OnlineLearner(copy.deepcopy(dual), _config(lr=1e-3, reject_threshold=1e6, checkpoint_dir=str(root),
                                                         keep_checkpoints=2))
    learner.SAVE_RETRY_MIN_S = 0.2
    _fill(learner)
    assert learner.train_round(budget=False).decision == "accepted"
    assert [p.name for p in learner.store.list()] == ["adapt-000001"]
    disk = FullDisk(monkeypatch, root)
    disk.full = True
    assert learner.train_round(budget=False).decision == "accepted"  # training goes on without a checkpoint
    status = learner.status()
    assert "No space left" in status["checkpoint_error"] and status["checkpoint_errors"] == 1
    assert learner.retry_failed_save() is None  # back-off not over yet: nothing tried
    time.sleep(0.25)
    assert learner.retry_failed_save() is None and disk.refused == 2  # tried, still full
    assert learner.status()["checkpoint_error"] is not None
    # Space is back: the training thread's retry writes the running weights without any new round.
    disk.full = False
    learner.config = learner.config.replace(max_steps_per_second=0.5)  # few rounds while we watch
    learner.pause()
    learner.start()
    try:
        deadline = time.monotonic() + 20
        while learner.status()["checkpoint_error"] is not None and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        assert learner.stop(timeout=10)
    assert learner.status()["checkpoint_error"] is None and learner.counters["checkpoints"] == 2
    newest = learner.store.latest_valid()
    assert newest[0].name == "adapt-000002" and newest[2]["adapt_round"] == 2
    assert all(torch.equal(newest[1][k], v) for k, v in learner.running_state.items())
    assert len(learner.store.list()) <= 2


def test_learner_resumes_from_the_newest_valid_folder_and_deletes_corrupt_ones(dual, tmp_path):  # noqa: F811
    root = tmp_path / "ckpt"
    store = CheckpointStore(root, keep=3)
    student = copy.deepcopy(dual.student)
    states = []
    for i in range(1, 4):
        with torch.no_grad():
            for p in student.parameters():
                p.add_(0.01)
        states.append({k: v.clone() for k, v in student.state_dict().items()})
        store.write(student, student.config, {"adapt_round": i, "adapt_counters": {"accepted": i}})
    meta = root / "adapt-000003" / "metadata.json"
    data = json.loads(meta.read_text())
    data["model_sha256"] = "0" * 64
    meta.write_text(json.dumps(data))
    learner = OnlineLearner(copy.deepcopy(dual), LearnerConfig(checkpoint_dir=str(root), keep_checkpoints=3))
    assert learner.resumed_from.name == "adapt-000002" and learner.counters["accepted"] == 2
    assert all(torch.equal(learner.running_state[k], v) for k, v in states[1].items())
    assert [p.name for p in learner.store.list()] == ["adapt-000001", "adapt-000002"]
