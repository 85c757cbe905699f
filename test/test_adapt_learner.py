"""adapt/learner.py: keyframe admission, guarded training rounds, rollback, reset, checkpoints, resume,
the compute budget, and kill -9 during a checkpoint write. Tiny random dual model, 28x42 inputs."""
from __future__ import annotations

import copy
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from monother_ros.adapt import CheckpointStore, LearnerConfig, OnlineLearner, PairSample
from monother_ros.adapt.buffer import KeyframeConfig

HW = (28, 42)
OPEN = KeyframeConfig(min_confidence=0.0, min_mask_fraction=0.0, min_rgb_contrast=0.0, min_image_change=0.0,
                      max_rate_hz=0.0)


@pytest.fixture(scope="module")
def dual():
    from monother_ros.model.dual import MonotherDual
    from monother_ros.model.variants import get_preset

    torch.manual_seed(0)
    return MonotherDual(get_preset("test-tiny").replace(modality="thermal", input_size=HW)).eval()


def _samples(n: int, seed: int = 0) -> list[PairSample]:
    rng = np.random.default_rng(seed)
    h, w = HW
    K = np.array([[30.0, 0, (w - 1) / 2], [0, 30.0, (h - 1) / 2], [0, 0, 1]])
    T = np.eye(4)
    T[0, 3] = 0.1  # 10 cm baseline
    out = []
    for i in range(n):
        yy = np.linspace(0, 1, h, dtype=np.float32)[:, None] * np.ones((1, w), np.float32)
        thermal = np.clip(yy * 0.8 + 0.2 * rng.random((h, w), dtype=np.float32), 0, 1)
        rgb = np.clip(np.stack([yy, 1 - yy, yy * 0.5]) + 0.2 * rng.random((3, h, w), dtype=np.float32), 0, 1)
        out.append(PairSample(thermal, rgb, K, K, T, stamp_ns=i))
    return out


def _config(**kw) -> LearnerConfig:
    base = dict(keyframe=OPEN, min_buffer=2, min_holdout=1, holdout_every=3, batch_size=1, steps_per_round=1,
                max_steps_per_second=0.0, duty_cycle=1.0, num_threads=0, max_rejections=2)
    base.update(kw)
    return LearnerConfig(**base)


def _fill(learner: OnlineLearner, n: int = 6, seed: int = 0) -> list[str]:
    return [learner.offer(s) for s in _samples(n, seed)]


def _equal(a, b) -> bool:
    return set(a) == set(b) and all(torch.equal(a[k].cpu(), b[k].cpu()) for k in a)


def test_config_refuses_bad_values():
    from monother_ros.errors import ConfigError

    with pytest.raises(ConfigError, match="duty_cycle"):
        LearnerConfig(duty_cycle=0.0)
    with pytest.raises(ConfigError, match="distillation"):
        LearnerConfig(distillation="none")


@pytest.mark.slow
def test_offer_routes_keyframes_and_applies_the_gates(dual):
    learner = OnlineLearner(copy.deepcopy(dual), _config())
    assert _fill(learner) == ["admitted", "admitted", "held_out"] * 2
    assert len(learner.buffer) == 4 and len(learner.holdout) == 2 and learner.ready()
    s = learner.buffer.items()[0]
    assert s.teacher_depth.shape == (1, 1, *HW) and s.teacher_confidence.shape == (1, 1, *HW)
    assert 0 < s.confidence_score < 1 and 0 < s.mask_fraction <= 1

    strict = OnlineLearner(copy.deepcopy(dual), _config(keyframe=KeyframeConfig(min_confidence=1.0, min_mask_fraction=0.0,
                                                                               min_rgb_contrast=0.0, min_image_change=0.0,
                                                                               max_rate_hz=0.0)))
    assert _fill(strict, 2) == ["low_confidence"] * 2 and len(strict.buffer) == 0
    dark = OnlineLearner(copy.deepcopy(dual), _config(keyframe=KeyframeConfig(min_rgb_contrast=0.9, max_rate_hz=0.0)))
    assert _fill(dark, 2) == ["low_contrast"] * 2
    still = OnlineLearner(copy.deepcopy(dual), _config(keyframe=KeyframeConfig(
        min_confidence=0.0, min_mask_fraction=0.0, min_rgb_contrast=0.0, min_image_change=0.5, max_rate_hz=0.0)))
    same = _samples(1)[0]
    assert [still.offer(copy.copy(same)) for _ in range(3)] == ["admitted", "no_motion", "no_motion"]
    still.pause()
    assert still.offer(_samples(1, seed=3)[0]) == "paused"
    assert still.status()["keyframes"]["no_motion"] == 2


@pytest.mark.slow
def test_small_steps_are_accepted_and_divergent_ones_rolled_back(dual):
    updates = []
    model = copy.deepcopy(dual)
    learner = OnlineLearner(model, _config(lr=1e-9), on_update=updates.append)
    _fill(learner)
    r = learner.train_round(budget=False)
    assert r.decision == "accepted" and np.isfinite(r.candidate_score)
    assert r.candidate_score <= r.running_score * 1.02
    assert [u.reason for u in updates] == ["accepted"] and _equal(updates[0].state_dict, learner.running_state)

    # A huge learning rate without clipping wrecks the candidate: rejected twice, then rolled back.
    wild = OnlineLearner(copy.deepcopy(dual), _config(lr=50.0, encoder_lr_factor=1.0, grad_clip=0.0), on_update=updates.append)
    _fill(wild)
    shipped = copy.deepcopy(wild.running_state)
    decisions = [wild.train_round(budget=False).decision for _ in range(2)]
    assert decisions == ["rejected", "rolled_back"]
    assert _equal(wild.model.student.state_dict(), shipped) and wild.counters["rollbacks"] == 1
    assert len(updates) == 1  # nothing handed over for rejected candidates


@pytest.mark.slow
def test_checkpoints_rotate_resume_skip_corrupt_and_reset(dual, tmp_path):
    updates = []
    cfg = _config(lr=1e-3, reject_threshold=1e6, checkpoint_dir=str(tmp_path), keep_checkpoints=2)
    learner = OnlineLearner(copy.deepcopy(dual), cfg, on_update=updates.append)
    shipped = copy.deepcopy(learner.shipped_state)
    _fill(learner)
    states = []
    for _ in range(3):
        assert learner.train_round(budget=False).decision == "accepted"
        states.append(copy.deepcopy(learner.running_state))
    names = [p.name for p in learner.store.list()]
    assert names == ["adapt-000002", "adapt-000003"]  # rotation keeps the newest two
    assert not _equal(states[-1], shipped)

    resumed_updates = []
    again = OnlineLearner(copy.deepcopy(dual), cfg, on_update=resumed_updates.append)
    assert again.resumed_from.name == "adapt-000003" and _equal(again.running_state, states[-1])
    assert _equal(again.model.student.state_dict(), states[-1]) and again.counters["accepted"] == 3
    assert again.announce().reason == "resume" and resumed_updates[0].model_dir.name == "adapt-000003"

    # A corrupt newest checkpoint (bytes flipped: hash mismatch) is skipped.
    f = tmp_path / "adapt-000003" / "model.safetensors"
    data = bytearray(f.read_bytes())
    data[-10] ^= 0xFF
    f.write_bytes(bytes(data))
    third = OnlineLearner(copy.deepcopy(dual), cfg)
    assert third.resumed_from.name == "adapt-000002" and _equal(third.running_state, states[-2])

    # reset: shipped weights everywhere, handed over and checkpointed (a restart resumes from them).
    update = third.reset()
    assert update.reason == "reset" and _equal(update.state_dict, shipped)
    assert _equal(third.model.student.state_dict(), shipped) and _equal(third.running_state, shipped)
    fourth = OnlineLearner(copy.deepcopy(dual), cfg)
    assert _equal(fourth.running_state, shipped)


@pytest.mark.slow
def test_background_thread_respects_the_duty_cycle_and_pause(dual):
    learner = OnlineLearner(copy.deepcopy(dual), _config(lr=1e-9, duty_cycle=0.25, steps_per_round=2))
    _fill(learner)
    t0 = time.monotonic()
    learner.start()
    try:
        deadline = time.monotonic() + 30
        while learner.counters["steps"] < 4 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert learner.counters["steps"] >= 4
        elapsed = time.monotonic() - t0
        # 4 steps and the 3 waits between them: 4 / (4 + 3 * 3) = 31 % of the wall time at most, where an
        # unbudgeted loop would be ~100 %; loose bound for a loaded machine.
        assert learner.busy_seconds <= 0.5 * elapsed
        learner.pause()
        deadline, last, since = time.monotonic() + 20, learner.counters["steps"], time.monotonic()
        while time.monotonic() < deadline and time.monotonic() - since < 1.0:  # the step in flight may end
            time.sleep(0.05)
            if learner.counters["steps"] != last:
                last, since = learner.counters["steps"], time.monotonic()
        assert time.monotonic() - since >= 1.0 and learner.status()["state"] == "paused"
    finally:
        assert learner.stop(timeout=10)
    assert not learner.running


def test_budget_wait_follows_duty_cycle_and_step_rate(dual):
    waits = []
    learner = OnlineLearner(copy.deepcopy(dual), _config(duty_cycle=0.25, max_steps_per_second=0.0))
    learner._stop = type("Recorder", (), {"wait": lambda self, t: waits.append(t)})()
    learner._budget_wait(0.1)  # duty cycle 25 %: wait 3 x the step
    learner.config = learner.config.replace(max_steps_per_second=2.0)
    learner._budget_wait(0.1)  # at most 2 steps/s: 0.5 s per step beats 0.3 s
    learner.config = learner.config.replace(duty_cycle=1.0, max_steps_per_second=0.0)
    learner._budget_wait(0.1)  # no budget: no wait at all
    assert waits == pytest.approx([0.3, 0.4])


_WRITER = textwrap.dedent("""
    import sys, torch
    from monother_ros.adapt import CheckpointStore
    from monother_ros.model.variants import get_preset
    store = CheckpointStore(sys.argv[1], keep=3)
    net = torch.nn.Linear(2048, 2048, bias=False)  # 16 MiB per checkpoint
    config = get_preset("test-tiny")
    for i in range(1, 10000):
        with torch.no_grad():
            net.weight.fill_(float(i))
        store.write(net, config, {"i": i})
        print(i, flush=True)
""")


@pytest.mark.slow
def test_kill_9_during_a_checkpoint_write_leaves_the_previous_one_intact(tmp_path):
    from monother_ros.model.checkpoints import read_model_dir

    root = tmp_path / "ckpt"
    proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(root)], stdout=subprocess.PIPE, text=True)
    try:
        done = [int(proc.stdout.readline()) for _ in range(2)]
        assert done == [1, 2]
        # Wait until a write is in progress (its hidden temporary folder exists), then kill -9.
        deadline = time.monotonic() + 20
        while not any(p.name.startswith(".adapt-") for p in root.iterdir()) and time.monotonic() < deadline:
            time.sleep(0.001)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(10)
    assert proc.returncode == -signal.SIGKILL
    store = CheckpointStore(root, keep=3)
    path, tensors, meta = store.latest_valid()
    i = meta["i"]
    assert i >= 2 and path.name == f"adapt-{i:06d}"
    assert torch.all(tensors["weight"] == float(i))
    for p in store.list():  # every visible checkpoint reads back whole
        t, _, m = read_model_dir(p)
        assert torch.all(t["weight"] == float(m["i"]))
    store.cleanup()
    assert not any(p.name.startswith(".") for p in root.iterdir())


@pytest.mark.slow
def test_load_dual_from_a_student_folder_with_its_teacher(dual, tmp_path):
    from monother_ros.adapt import load_dual
    from monother_ros.errors import ConfigError
    from monother_ros.model.checkpoints import save_model

    student = copy.deepcopy(dual.student)
    with torch.no_grad():
        for p in student.parameters():
            p.add_(0.5)
    folder = save_model(student, student.config, tmp_path / "student")
    with pytest.raises(ConfigError, match="student only"):
        load_dual(folder)
    save_model(dual, dual.student.config, folder / "dual", kind="monother_dual")
    loaded, config = load_dual(folder)  # teacher + confidence from <folder>/dual, student from the folder
    assert config.input_size == HW
    assert _equal(loaded.student.state_dict(), student.state_dict())
    assert _equal(loaded.teacher.state_dict(), dual.teacher.state_dict())
    other = save_model(dual.student, dual.student.config.replace(max_depth_m=20.0), tmp_path / "other")
    with pytest.raises(ConfigError, match="does not match"):
        load_dual(other, folder / "dual")


@pytest.mark.slow
def test_anchor_weight_keeps_the_student_near_the_shipped_weights(dual):
    def drift(anchor: float) -> float:
        torch.manual_seed(0)
        learner = OnlineLearner(copy.deepcopy(dual), _config(lr=1e-3, encoder_lr_factor=1.0, reject_threshold=10.0,
                                                             anchor_weight=anchor, steps_per_round=5))
        _fill(learner)
        learner.train_round(budget=False)
        student = learner.model.student.state_dict()
        return float(sum(((student[k].float() - v.float()) ** 2).sum() for k, v in learner.shipped_state.items()
                         if v.is_floating_point()))

    free, anchored = drift(0.0), drift(1e4)
    assert free > 0 and anchored < 0.5 * free, (free, anchored)
    from monother_ros.errors import ConfigError

    with pytest.raises(ConfigError, match="anchor_weight"):
        LearnerConfig(anchor_weight=-1.0)
