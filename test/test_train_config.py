"""Training config (YAML + base chain + key=value overrides) and atomic, weights_only checkpoints."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

import training.checkpointing as ckpt_mod
from monother_ros.errors import CheckpointError, ConfigError
from training.checkpointing import latest_checkpoint, list_checkpoints, load_checkpoint, save_checkpoint
from training.config import TrainConfig, load_config, parse_overrides

REPO = Path(__file__).resolve().parent.parent


def test_defaults_follow_the_monother_recipe():
    c = TrainConfig()
    assert (c.lr, c.encoder_lr_factor, c.weight_decay, c.pct_start, c.grad_clip) == (8.5e-5, 0.02, 0.01, 0.7, 0.1)
    assert (c.epochs, c.batch_size, c.freeze_batchnorm) == (5, 4, True)
    assert (c.weights.consistency, c.weights.nll, c.weights.smoothness, c.weights.student_nll) == (0.2, 0.1, 0.01, 0.1)


def test_shipped_yaml_files_load_and_ablations_override_only_the_switch():
    base = load_config(REPO / "config/train/stage2_night_campus.yaml")
    no_conf = load_config(REPO / "config/train/stage2_night_campus_no_conf.yaml")
    assert base.stage == "label_free" and base.distillation == "full" and base.weights.consistency == 2.0
    assert no_conf.distillation == "no_confidence"
    assert no_conf.replace(distillation="full", out_dir=base.out_dir) == base
    s1 = load_config(REPO / "config/train/stage1_day_urban.yaml")
    s1_none = load_config(REPO / "config/train/stage1_day_urban_no_distill.yaml")
    assert s1.stage == "supervised" and s1.weights.consistency == 0.2 and s1_none.distillation == "none"
    assert s1_none.replace(distillation="full", out_dir=s1.out_dir) == s1
    with pytest.raises(ConfigError, match="no label-free training signal"):
        base.replace(distillation="none")


def test_overrides_are_typed_and_validated(tmp_path):
    c = load_config(None, ["epochs=2", "weights.consistency=2", "train_data=[a.mcap, b.mcap]", "input_size=[56, 70]", "augment=false"])
    assert c.epochs == 2 and c.weights.consistency == 2.0 and c.train_data == ("a.mcap", "b.mcap")
    assert c.input_size == (56, 70) and c.augment is False
    assert TrainConfig.from_dict(c.to_dict()) == c
    for bad, match in [("epochs=two", "integer"), ("stage=fancy", "not one of"), ("nope=1", "unknown config key"),
                       ("input_size=[50, 70]", "multiples of 14"), ("epochs", "key=value")]:
        with pytest.raises(ConfigError, match=match):
            load_config(None, [bad])
    (tmp_path / "a.yaml").write_text("base: b.yaml\n")
    (tmp_path / "b.yaml").write_text("base: a.yaml\n")
    with pytest.raises(ConfigError, match="include each other"):
        load_config(tmp_path / "a.yaml")
    assert load_config(None, ["lr=1e-3"]).lr == 1e-3


def _toy():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 1))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=1e-2, total_steps=10, pct_start=0.7, div_factor=1.0)
    model(torch.randn(5, 3)).sum().backward()
    opt.step()
    sched.step()
    return model, opt, sched


def test_checkpoint_roundtrip_weights_only(tmp_path):
    model, opt, sched = _toy()
    path = save_checkpoint(tmp_path, model=model, optimizer=opt, scheduler=sched, step=7, epoch=1, step_in_epoch=3,
                           config={"a": 1}, extra={"epoch_sums": {"total": 1.5}})
    assert path.name == "step_000000007" and latest_checkpoint(tmp_path) == path
    state = torch.load(path / "state.pt", weights_only=True)  # no pickled code inside
    assert state["step"] == 7 and state["config"] == {"a": 1}
    expected_draw = torch.rand(3)  # RNG continues from the saved state after loading
    model2, opt2, sched2 = _toy()
    with torch.no_grad():
        for p in model2.parameters():
            p.add_(1.0)
    st = load_checkpoint(path, model2, opt2, sched2)
    assert st["step_in_epoch"] == 3
    for a, b in zip(model.state_dict().values(), model2.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert sched2.state_dict()["last_epoch"] == sched.state_dict()["last_epoch"]
    torch.testing.assert_close(torch.rand(3), expected_draw)
    with pytest.raises(CheckpointError, match="does not match"):
        load_checkpoint(path, nn.Linear(3, 1))


def test_checkpoint_write_is_atomic_on_failure(tmp_path, monkeypatch):
    model, opt, sched = _toy()
    first = save_checkpoint(tmp_path, model=model, optimizer=opt, scheduler=sched, step=1, epoch=0, step_in_epoch=1, config={})

    def exploding_save(obj, f, *args, **kwargs):
        f.write(b"partial bytes")
        raise OSError("disk full")

    monkeypatch.setattr(ckpt_mod.torch, "save", exploding_save)
    with pytest.raises(CheckpointError, match="disk full"):
        save_checkpoint(tmp_path, model=model, optimizer=opt, scheduler=sched, step=2, epoch=0, step_in_epoch=2, config={})
    root = tmp_path / "checkpoints"
    assert sorted(p.name for p in root.iterdir()) == ["latest", "step_000000001"]  # no temp dir, no step 2
    assert latest_checkpoint(tmp_path) == first and list_checkpoints(tmp_path) == [first]


def test_prune_keeps_newest(tmp_path):
    model, opt, sched = _toy()
    for step in range(1, 5):
        save_checkpoint(tmp_path, model=model, optimizer=opt, scheduler=sched, step=step, epoch=0, step_in_epoch=step, config={}, keep=2)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_000000003", "step_000000004"]


def test_cli_reports_user_errors_with_exit_code_2(tmp_path, capsys):
    from monother_ros.cli import main

    assert main(["train", str(tmp_path / "missing.yaml")]) == 2
    assert "cannot read training config" in capsys.readouterr().err
    assert main(["train", "epochs=0"]) == 2
    assert main(["export-model", str(tmp_path)]) == 2
    assert "no training checkpoint" in capsys.readouterr().err
