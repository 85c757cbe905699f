"""The training loop end to end on a tiny model: logs, resume == uninterrupted, DDP (gloo) == single
process, stage 2 freezing, export. Bags are tiny hand-built rig bags (4 pairs, 64x48 thermal)."""
from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest
import torch

from test_train_data import rig_bag
from monother_ros.errors import ConfigError
from training.checkpointing import latest_checkpoint, read_checkpoint
from training.config import load_config
from training.train import build_model, run

COMMON = ["model=test-tiny", "input_size=[28, 42]", "batch_size=2", "lr=1e-3", "encoder_lr_factor=1.0", "threads=1",
          "deterministic=on"]


@pytest.fixture(scope="module")
def bag(tmp_path_factory) -> Path:
    return rig_bag(tmp_path_factory.mktemp("bags") / "rig", [0, 33, 66, 100, 133], [0, 33, 66, 100, 200])


def _config(bag: Path, out: Path, *extra: str):
    return load_config(None, [f"train_data=[{bag}]", f"out_dir={out}", *COMMON, *extra])


def _weights(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _initial_weights(bag: Path, tmp_path: Path) -> dict[str, torch.Tensor]:
    """The weights every run starts from (run seeds with ``seed`` before building the model)."""
    torch.manual_seed(0)
    model, _, _ = build_model(_config(bag, tmp_path / "unused"))
    return _weights(model)


@pytest.mark.slow
def test_run_logs_metrics_checkpoints_and_counts_skips(bag, tmp_path):
    result = run(_config(bag, tmp_path / "run", "epochs=1", f"val_data=[{bag}]"), progress=False)
    assert result.steps == 2 and result.epochs_done == 1  # 4 pairs (1 skipped), global batch 2
    lines = [json.loads(line) for line in (tmp_path / "run/metrics.jsonl").read_text().splitlines()]
    assert len(lines) == 1 and lines[0]["epoch"] == 1 and lines[0]["step"] == 2
    assert lines[0]["data"][0]["skipped_no_rgb"] == 1 and lines[0]["data"][0]["paired"] == 4
    assert {"silog_thermal", "silog_rgb", "consistency", "nll", "student_nll", "total"} <= set(lines[0]["train"])
    assert lines[0]["val"]["frames"] == 4 and 0 <= lines[0]["val"]["a1"] <= 1 and lines[0]["val"]["abs_rel"] > 0
    ckpt = latest_checkpoint(tmp_path / "run")
    tensors, state = read_checkpoint(ckpt)
    assert state["step"] == 2 and state["epoch"] == 1 and state["config"]["model"] == "test-tiny"
    for key, value in result.model.state_dict().items():
        assert torch.equal(tensors[key], value.cpu())
    with pytest.raises(ConfigError, match="holds a previous run"):
        run(_config(bag, tmp_path / "run", "epochs=1"), progress=False)


@pytest.mark.slow
def test_resume_equals_uninterrupted_run(bag, tmp_path):
    full = run(_config(bag, tmp_path / "full", "epochs=2"), progress=False)
    assert full.steps == 4
    part = run(_config(bag, tmp_path / "part", "epochs=2", "stop_after_steps=3"), progress=False)
    assert part.stopped_early and part.steps == 3
    resumed = run(_config(bag, tmp_path / "part", "epochs=2", "init_from=resume"), progress=False)
    assert resumed.steps == 4
    a, b = _weights(full.model), _weights(resumed.model)
    assert max((a[k] - b[k]).abs().max().item() for k in a) <= 1e-6
    # And the run did move the weights (the comparison above is not vacuous).
    start = _initial_weights(bag, tmp_path)
    assert max((a[k] - start[k]).abs().max().item() for k in a if a[k].is_floating_point()) > 1e-4
    # The metrics log of the resumed run holds both epochs once each.
    epochs = [json.loads(line)["epoch"] for line in (tmp_path / "part/metrics.jsonl").read_text().splitlines()]
    assert epochs == [1, 2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank: int, world: int, port: int, bag: str, out: str, result_dir: str) -> None:
    os.environ.update({"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(world),
                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
    torch.set_num_threads(1)
    result = run(_config(Path(bag), Path(out), "epochs=1", "device=cpu"), progress=False)
    torch.save(_weights(result.model), Path(result_dir) / f"rank{rank}.pt")


@pytest.mark.slow
def test_two_gloo_processes_match_each_other_and_a_single_process(bag, tmp_path):
    import torch.multiprocessing as mp

    mp.spawn(_ddp_worker, args=(2, _free_port(), str(bag), str(tmp_path / "ddp"), str(tmp_path)), nprocs=2, join=True)
    w0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    w1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    for k in w0:
        assert torch.equal(w0[k], w1[k]), k
    init = _initial_weights(bag, tmp_path)
    accumulated = _weights(run(_config(bag, tmp_path / "acc", "epochs=1", "micro_batch_size=1"), progress=False).model)
    pooled = _weights(run(_config(bag, tmp_path / "single", "epochs=1"), progress=False).model)

    def rel_gap(a, b):  # distance between two runs relative to how far training moved the weights
        keys = [k for k in a if a[k].is_floating_point()]
        gap = torch.sqrt(sum(((a[k] - b[k]) ** 2).sum() for k in keys))
        moved = torch.sqrt(sum(((a[k] - init[k]) ** 2).sum() for k in keys))
        assert moved > 1e-2
        return (gap / moved).item()

    # Same global batches: 2 ranks x 1 sample with gradient averaging is exactly one process
    # accumulating two micro-batches of 1 (up to float reduction order)...
    assert rel_gap(accumulated, w0) < 1e-3
    # ... and close to one process with the whole batch at once, whose SILog / masks pool the pixels of
    # both images (a batch-level statistic, so not bit-equal by construction).
    assert rel_gap(pooled, w0) < 0.5
    assert latest_checkpoint(tmp_path / "ddp") is not None  # rank 0 saved


@pytest.mark.slow
def test_stage2_freezes_teacher_and_confidence_and_trains_student(bag, tmp_path):
    stage1 = run(_config(bag, tmp_path / "s1", "epochs=1"), progress=False)
    before = _weights(stage1.model)
    stage2 = run(_config(bag, tmp_path / "s2", "epochs=1", "stage=label_free", "gt_source=none",
                         f"init_from={tmp_path / 's1' / 'checkpoints'}", "weights.consistency=2.0"), progress=False)
    after = _weights(stage2.model)
    frozen = [k for k in before if k.startswith(("teacher.", "confidence_net."))]
    student = [k for k in before if k.startswith("student.") and before[k].is_floating_point()]
    assert frozen and all(torch.equal(before[k], after[k]) for k in frozen)
    assert any(not torch.equal(before[k], after[k]) for k in student)
    assert any(not torch.equal(before[k], after[k]) for k in student if k.startswith("student.confidence_head."))


@pytest.mark.slow
def test_export_writes_model_dir_and_onnx(bag, tmp_path):
    from monother_ros.model.checkpoints import load_model
    from training.train import export_student

    trained = run(_config(bag, tmp_path / "run", "epochs=1"), progress=False)
    written = export_student(tmp_path / "run", tensorrt="auto")
    student, cfg = load_model(written["model_dir"])
    assert cfg.name == "test-tiny"
    for k, v in trained.model.student.state_dict().items():
        assert torch.equal(student.state_dict()[k], v)
    assert Path(written["onnx"]).is_file() and written.get("tensorrt") is None  # no TensorRT on this machine


@pytest.mark.slow
def test_export_dual_float16_loads_for_adaptation_next_to_the_student(bag, tmp_path):
    from monother_ros.adapt import load_dual
    from training.train import export_student

    trained = run(_config(bag, tmp_path / "run", "epochs=1"), progress=False)
    out = tmp_path / "shipped"
    written = export_student(tmp_path / "run", out, onnx=False, tensorrt="no", dual="float16")
    assert Path(written["dual_dir"]) == out / "model" / "dual"
    dual, cfg = load_dual(out / "model")  # a student folder: its teacher comes from <folder>/dual ...
    assert dual.confidence_net is not None and cfg.name == "test-tiny"
    assert all(p.dtype == torch.float32 for p in dual.parameters())
    ref = trained.model.state_dict()
    for k, v in dual.state_dict().items():
        if k.startswith("student."):  # ... and its student is the float32 one
            assert torch.equal(v, ref[k])
        elif v.is_floating_point():  # teacher + confidence: float16-rounded copies
            torch.testing.assert_close(v, ref[k], rtol=2e-3, atol=1e-4)
    with pytest.raises(ConfigError):
        export_student(tmp_path / "run", out, onnx=False, tensorrt="no", dual="bfloat8")


@pytest.mark.slow
def test_teacher_init_from_a_dual_model_and_a_gentler_teacher_lr(bag, tmp_path):
    """A pretrained RGB teacher (the teacher branch of an exported dual) starts a new run, fine-tuned at
    lr * teacher_lr_factor; the student and confidence network keep their own rates."""
    from training.train import export_student, param_groups

    pre = run(_config(bag, tmp_path / "pre", "epochs=1"), progress=False)
    export_student(tmp_path / "pre", tmp_path / "pre_export", onnx=False, tensorrt="no", dual="float32")
    dual_dir = tmp_path / "pre_export" / "model" / "dual"
    cfg = _config(bag, tmp_path / "next", f"teacher_init={dual_dir}", "teacher_lr_factor=0.1", "confidence_lr_factor=0.5")
    torch.manual_seed(0)
    model, _, _ = build_model(cfg)
    fresh = _initial_weights(bag, tmp_path)
    for k, v in model.state_dict().items():
        if k.startswith("teacher."):
            assert torch.equal(v, pre.model.state_dict()[k])
        elif v.is_floating_point():
            assert torch.equal(v, fresh[k])  # student and confidence network untouched
    lrs = {g["name"]: g["lr"] for g in param_groups(model, cfg)}
    # (the teacher has no parameters outside its encoder and DPT head, so no "teacher_heads" group)
    assert lrs == pytest.approx({"encoder_dpt": 1e-3, "heads": 1e-3, "confidence_net": 5e-4, "teacher_encoder_dpt": 1e-4})
    teacher_ids = {id(p) for p in model.teacher.parameters()}
    for g in param_groups(model, cfg):
        assert all((id(p) in teacher_ids) == g["name"].startswith("teacher_") for p in g["params"])
    default_groups = [g["name"] for g in param_groups(model, _config(bag, tmp_path / "x"))]
    assert default_groups == ["encoder_dpt", "confidence_net", "heads"]  # factor 1: the reference grouping
