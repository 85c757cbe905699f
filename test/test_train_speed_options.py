"""Training speed options on the CPU: deterministic (auto/on/off), amp (off/bf16/fp16: networks under
autocast, metadata and losses float32, a GradScaler for fp16), DataLoader workers, and their place in the
checkpoint's config. Tiny model, 28x42."""
from __future__ import annotations

import pytest
import torch

from monother_ros.distill.step import prepare_stage, training_step
from monother_ros.errors import ConfigError
from test_train_loop import _config, _weights, bag  # noqa: F401 - the module fixture is reused
from test_train_step import _batch
from training.checkpointing import latest_checkpoint, read_checkpoint
from training.config import TrainConfig, load_config
from training.train import apply_speed_options, run


def test_speed_options_parse_validate_and_default_by_device(tmp_path):
    default = TrainConfig()
    assert default.deterministic == "auto" and default.amp == "off" and default.pin_memory
    assert default.deterministic_on("cpu") and not default.deterministic_on("cuda")
    # YAML 1.1 reads on/off as booleans; older checkpoints stored deterministic as true/false.
    yaml_file = tmp_path / "fast.yaml"
    yaml_file.write_text("deterministic: off\namp: bf16\nnum_workers: 2\npin_memory: false\n")
    fast = load_config(yaml_file)
    assert (fast.deterministic, fast.amp, fast.num_workers, fast.pin_memory) == ("off", "bf16", 2, False)
    assert not fast.deterministic_on("cpu")
    assert load_config(None, ["deterministic=on", "amp=off"]).deterministic_on("cuda")
    assert TrainConfig.from_dict({"deterministic": True}).deterministic == "on"
    assert TrainConfig.from_dict({"deterministic": False}).deterministic == "off"
    with pytest.raises(ConfigError, match="amp"):
        load_config(None, ["amp=fp8"])
    with pytest.raises(ConfigError, match="amp"):
        load_config(None, ["amp=on"])
    with pytest.raises(ConfigError, match="num_workers"):
        load_config(None, ["num_workers=-1"])


def test_apply_speed_options_sets_torch_switches():
    before = torch.are_deterministic_algorithms_enabled()
    try:
        on = apply_speed_options(TrainConfig(amp="bf16"), torch.device("cpu"))  # auto: on for the CPU
        assert on.deterministic and torch.are_deterministic_algorithms_enabled()
        assert on.autocast_dtype is torch.bfloat16 and not on.pin_memory  # pinning is for CUDA only
        off = apply_speed_options(TrainConfig(deterministic="off", amp="fp16"), torch.device("cpu"))
        assert not off.deterministic and not torch.are_deterministic_algorithms_enabled()
        assert off.autocast_dtype is torch.float16
    finally:
        torch.use_deterministic_algorithms(before)


@pytest.fixture(scope="module")
def model():
    from monother_ros.model.dual import MonotherDual
    from monother_ros.model.variants import get_preset

    torch.manual_seed(0)
    return MonotherDual(get_preset("test-tiny").replace(input_size=(28, 42)))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_autocast_runs_the_networks_in_low_precision_and_the_losses_in_float32(model, dtype):
    prepare_stage(model, "label_free")
    seen: dict[str, torch.dtype] = {}

    def record(name):
        def hook(_module, inputs, output):
            seen[name] = output.dtype
            if name == "confidence_net":
                seen["confidence_input"] = inputs[0].dtype
        return hook

    hooks = [next(m for m in model.student.modules() if isinstance(m, torch.nn.Linear)).register_forward_hook(
                 record("student_linear")),
             model.confidence_net.register_forward_hook(record("confidence_net"))]
    try:
        batch = _batch()
        plain = training_step(model, batch, stage="label_free", distillation="full")
        mixed = training_step(model, batch, stage="label_free", distillation="full", autocast_dtype=dtype)
    finally:
        for h in hooks:
            h.remove()
    assert seen["student_linear"] == dtype  # the networks ran in low precision
    assert seen["confidence_input"] == torch.float32  # metadata (warping, similarity) built in float32
    assert mixed.total.dtype == torch.float32 and mixed.student_depth.dtype == torch.float32
    assert all(torch.isfinite(torch.tensor(v)) for v in mixed.losses.values())
    # Same step, close values: low precision changed the numbers (it ran), not the meaning.
    assert mixed.losses["total"] != plain.losses["total"]
    assert mixed.losses["total"] == pytest.approx(plain.losses["total"], rel=0.1)
    mixed.total.backward()
    grads = [p.grad for p in model.student.parameters() if p.grad is not None]
    assert grads and all(g.dtype == torch.float32 and torch.isfinite(g).all() for g in grads)
    model.zero_grad(set_to_none=True)


@pytest.mark.slow
def test_deterministic_on_repeats_bit_identically_and_amp_runs_are_saved(bag, tmp_path):  # noqa: F811
    a = run(_config(bag, tmp_path / "a", "epochs=1", "stage=label_free", "deterministic=on"), progress=False)
    b = run(_config(bag, tmp_path / "b", "epochs=1", "stage=label_free", "deterministic=on"), progress=False)
    wa, wb = _weights(a.model), _weights(b.model)
    assert a.steps == 2 and all(torch.equal(wa[k], wb[k]) for k in wa)

    bf16 = run(_config(bag, tmp_path / "bf16", "epochs=1", "stage=label_free", "amp=bf16", "deterministic=off",
                       "num_workers=1"), progress=False)
    assert bf16.steps == 2 and bf16.history[0]["skipped_steps"] == 0
    assert all(v is None or abs(v) < 1e6 for v in bf16.history[0]["train"].values())
    wm = _weights(bf16.model)
    moved = max((wm[k] - wa[k]).abs().max().item() for k in wm if wm[k].is_floating_point())
    assert 0 < moved < 0.05  # a different (low-precision) path to about the same weights
    _, state = read_checkpoint(latest_checkpoint(tmp_path / "bf16"))
    saved = state["config"]
    assert (saved["amp"], saved["deterministic"], saved["num_workers"], saved["pin_memory"]) == ("bf16", "off", 1, True)

    fp16 = run(_config(bag, tmp_path / "fp16", "epochs=1", "stage=label_free", "amp=fp16", "deterministic=on"),
               progress=False)
    _, state = read_checkpoint(latest_checkpoint(tmp_path / "fp16"))
    assert fp16.steps == 2 and state["extra"]["grad_scaler"]["scale"] > 0  # the GradScaler's state is kept
