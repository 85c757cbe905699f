"""Checkpoints: strict import of official layouts, our safetensors format, refusing code in pickles."""
from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import torch

from monother_ros import cli
from monother_ros.errors import CheckpointError
from monother_ros.model import checkpoints as ck
from monother_ros.model.branch import DepthBranch
from monother_ros.model.variants import get_preset
from test_model_branch import layout_for, official_layout

@pytest.fixture(autouse=True)
def _no_autograd():
    """Inference-only tests; scoped per test so autograd is not switched off for the whole session."""
    with torch.no_grad():
        yield


TINY_V2 = get_preset("test-tiny").replace(confidence_head=False, head_features_2=32)


def random_official(cfg, seed: int = 0) -> dict[str, torch.Tensor]:
    """A random state dict in the official key layout (shapes from the test's own layout table)."""
    g = torch.Generator().manual_seed(seed)
    return {k: torch.randn(shape, generator=g) * 0.1 for k, shape in layout_for(cfg).items()}


def _forward(model, x):
    return model(x, features=False).depth


@pytest.mark.parametrize("wrap", ["plain", "model", "state_dict_module"])
def test_official_layout_imports_strictly(tmp_path, wrap):
    sd = random_official(TINY_V2)
    if wrap == "plain":
        obj = sd
    elif wrap == "model":  # MonoTher/ZoeDepth style: {"model": sd, "optimizer": None, "epoch": n}
        obj = {"model": sd, "optimizer": None, "epoch": 3}
    else:
        obj = {"state_dict": {"module." + k: v for k, v in sd.items()}}
    path = tmp_path / "official.pth"
    torch.save(obj, path)
    model, cfg = ck.import_checkpoint(path, TINY_V2)
    assert cfg == TINY_V2 and not model.training
    got = model.state_dict()
    assert set(got) == set(sd)
    for k, v in sd.items():
        assert torch.equal(got[k], v), k
    x = torch.randn(1, 3, 42, 56)
    ref = DepthBranch(TINY_V2).eval()
    ref.load_state_dict(sd)
    torch.testing.assert_close(_forward(model, x), _forward(ref, x), rtol=0, atol=0)


def test_depth_anything_v1_layout_imports(tmp_path):
    cfg = get_preset("test-tiny").replace(generation="v1", head="relative", depth=5, taps=(1, 2, 3, 4),
                                          confidence_head=False, head_features_2=32)
    sd = random_official(cfg, seed=5)
    torch.save(sd, tmp_path / "depth_anything_vits14.pth")
    model, _ = ck.import_checkpoint(tmp_path / "depth_anything_vits14.pth", cfg)
    out = model(torch.randn(1, 3, 28, 42), features=False)
    assert (out.depth >= 0).all() and out.rel_depth is out.depth


@pytest.mark.slow
def test_full_size_vits_imports_and_runs_at_official_sizes(tmp_path):
    # The one full-size test: a random dav2-metric-vits file in the official layout.
    torch.set_num_threads(2)
    g = torch.Generator().manual_seed(0)
    layout = official_layout(embed=384, depth=12, mlp_hidden=1536, features=64, out_channels=(48, 96, 192, 384))
    sd = {k: torch.randn(s, generator=g) * 0.02 for k, s in layout.items()}
    path = tmp_path / "depth_anything_v2_metric_vkitti_vits.pth"
    torch.save(sd, path)
    model, cfg = ck.import_checkpoint(path, "dav2-metric-vits")
    assert len(model.state_dict()) == 239 and cfg.max_depth_m == 80.0
    for h, w in ((518, 518), (252, 644)):
        out = model(torch.randn(1, 3, h, w), features=False)
        assert out.depth.shape == (1, 1, h, w)
        assert ((out.depth > 0) & (out.depth < 80.0)).all()


def _error_for(tmp_path, sd, cfg=TINY_V2) -> str:
    path = tmp_path / "bad.pth"
    torch.save(sd, path)
    with pytest.raises(CheckpointError) as info:
        ck.import_checkpoint(path, cfg)
    return str(info.value)


def test_missing_extra_and_misshaped_keys_are_named(tmp_path):
    sd = random_official(TINY_V2)
    missing = dict(sd)
    del missing["depth_head.scratch.refinenet2.out_conv.bias"]
    msg = _error_for(tmp_path, missing)
    assert "1 missing" in msg and "depth_head.scratch.refinenet2.out_conv.bias" in msg

    extra = dict(sd, **{"pretrained.register_tokens": torch.zeros(1, 4, 32)})
    msg = _error_for(tmp_path, extra)
    assert "1 unexpected" in msg and "pretrained.register_tokens" in msg

    bad = dict(sd)
    bad["pretrained.blocks.1.attn.qkv.weight"] = torch.zeros(96, 31)
    msg = _error_for(tmp_path, bad)
    assert "shape mismatch" in msg and "pretrained.blocks.1.attn.qkv.weight (96, 31) vs model (96, 32)" in msg

    # a whole wrong size (vits file into a tiny preset) lists counts and only the first few keys
    msg = _error_for(tmp_path, random_official(get_preset("test-tiny").replace(depth=6, taps=(2, 3, 4, 5),
                                                                               head_features_2=32)))
    assert "28 unexpected" in msg and "pretrained.blocks.4.attn.qkv.bias" in msg and "(+23 more)" in msg


def test_non_finite_and_non_tensor_entries_refused(tmp_path):
    sd = random_official(TINY_V2)
    sd["pretrained.norm.weight"] = torch.full((32,), float("nan"))
    assert "non-finite" in _error_for(tmp_path, sd)
    with pytest.raises(CheckpointError, match="not tensors"):
        ck.unwrap_state_dict({"a": torch.zeros(1), "b": "text"})
    with pytest.raises(CheckpointError, match="no state dict"):
        ck.unwrap_state_dict([1, 2])


def test_zoe_preset_refuses_plain_depth_anything_file(tmp_path):
    path = tmp_path / "da.pth"
    torch.save(random_official(TINY_V2), path)
    with pytest.raises(CheckpointError, match="bins"):
        ck.import_checkpoint(path, TINY_V2.replace(head="zoe_bins"))
    with pytest.raises(CheckpointError, match="confidence"):
        ck.import_checkpoint(path, TINY_V2, branch="confidence")


def test_confidence_head_may_be_absent_from_official_files(tmp_path):
    path = tmp_path / "da.pth"
    torch.save(random_official(TINY_V2), path)
    model, _ = ck.import_checkpoint(path, TINY_V2.replace(confidence_head=True))
    assert any(k.startswith("confidence_head.") for k in model.state_dict())


def test_malicious_pickle_is_refused_and_does_not_run(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (Path.touch, (marker,))

    # both the zip container torch.save writes and a bare legacy pickle stream
    torch.save({"model": {"w": torch.zeros(1)}, "payload": Evil()}, tmp_path / "evil.pth")
    with open(tmp_path / "evil_legacy.pth", "wb") as f:
        pickle.dump({"w": Evil()}, f, protocol=2)
    for name in ("evil.pth", "evil_legacy.pth"):
        with pytest.raises(CheckpointError, match="refused"):
            ck.read_torch_checkpoint(tmp_path / name)
        with pytest.raises(CheckpointError):
            ck.import_checkpoint(tmp_path / name, TINY_V2)
    assert not marker.exists()
    # sanity: the payload really would have run under an unrestricted unpickler
    with open(tmp_path / "evil_legacy.pth", "rb") as f:
        pickle.load(f)
    assert marker.exists()


def test_unreadable_files(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        ck.read_torch_checkpoint(tmp_path / "none.pth")
    (tmp_path / "junk.pth").write_bytes(b"\x00not a checkpoint")
    with pytest.raises(CheckpointError):
        ck.read_torch_checkpoint(tmp_path / "junk.pth")


def test_save_load_round_trip_identical(tmp_path):
    torch.manual_seed(3)
    cfg = get_preset("test-tiny")
    model = DepthBranch(cfg).eval()
    out_dir = ck.save_model(model, cfg, tmp_path / "m", metadata={"note": "unit"})
    assert {p.name for p in out_dir.iterdir()} == {ck.MODEL_FILE, ck.CONFIG_FILE, ck.METADATA_FILE}
    meta = json.loads((out_dir / ck.METADATA_FILE).read_text())
    assert meta["model_sha256"] == ck.sha256_file(out_dir / ck.MODEL_FILE) and meta["note"] == "unit"
    loaded, cfg2 = ck.load_model(out_dir)
    assert cfg2 == cfg and loaded.model_sha256 == meta["model_sha256"]
    x = torch.randn(1, 3, 42, 70)
    a, b = model(x), loaded(x)
    assert torch.equal(a.depth, b.depth) and torch.equal(a.confidence, b.confidence)
    # the .safetensors file alone is enough (config in its header)
    alone = tmp_path / "alone.safetensors"
    alone.write_bytes((out_dir / ck.MODEL_FILE).read_bytes())
    loaded2, cfg3 = ck.load_model(alone)
    assert cfg3 == cfg and torch.equal(loaded2(x).depth, a.depth)


def test_save_replaces_atomically_and_protects_foreign_dirs(tmp_path):
    cfg = get_preset("test-tiny")
    first = DepthBranch(cfg)
    ck.save_model(first, cfg, tmp_path / "m")
    second = DepthBranch(cfg.replace(max_depth_m=10.0))
    ck.save_model(second, second.config, tmp_path / "m")
    _, cfg_loaded = ck.load_model(tmp_path / "m")
    assert cfg_loaded.max_depth_m == 10.0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]  # no temp or backup left behind
    foreign = tmp_path / "photos"
    foreign.mkdir()
    (foreign / "cat.jpg").write_bytes(b"x")
    with pytest.raises(CheckpointError, match="not a monother_ros model"):
        ck.save_model(first, cfg, foreign)
    assert (foreign / "cat.jpg").exists()


def test_corrupt_model_file_detected(tmp_path):
    cfg = get_preset("test-tiny")
    out = ck.save_model(DepthBranch(cfg), cfg, tmp_path / "m")
    data = bytearray((out / ck.MODEL_FILE).read_bytes())
    data[-1] ^= 0xFF
    (out / ck.MODEL_FILE).write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="sha256"):
        ck.load_model(out)


def test_monother_format_is_detected_and_dispatched(tmp_path, monkeypatch):
    sd = {"core.core.pretrained.cls_token": torch.zeros(1, 1, 4), "conv2.weight": torch.zeros(1)}
    assert ck.detect_format(sd) == "monother"
    assert ck.detect_format(random_official(TINY_V2)) == "depth_anything"
    calls = []

    def fake_importer(state_dict, config, branch):
        calls.append((sorted(state_dict), config.name, branch))
        return torch.nn.Linear(1, 1), config

    monkeypatch.setitem(ck._IMPORTERS, "monother", (lambda s: "core.core.pretrained.cls_token" in s, fake_importer))
    path = tmp_path / "monother.pth"
    torch.save({"model": {"module." + k: v for k, v in sd.items()}, "optimizer": None, "epoch": 1}, path)
    ck.import_checkpoint(path, "monother-ms2-vitl", branch="rgb")
    assert calls == [(["conv2.weight", "core.core.pretrained.cls_token"], "monother-ms2-vitl", "rgb")]


def test_cli_import_checkpoint(tmp_path, capsys):
    cfg = get_preset("test-tiny").replace(confidence_head=False)
    # the CLI takes preset names: import a tiny official-layout file into the registered test preset
    path = tmp_path / "tiny.pth"
    torch.save(random_official(cfg), path)
    out = tmp_path / "out"
    code = cli.main(["import-checkpoint", str(path), "--preset", "test-tiny", "--out", str(out),
                     "--max-depth", "20"])
    assert code == 0, capsys.readouterr()
    model, loaded_cfg = ck.load_model(out)
    assert loaded_cfg.max_depth_m == 20.0 and loaded_cfg.confidence_head  # preset keeps its head
    meta = json.loads((out / ck.METADATA_FILE).read_text())
    assert meta["source_sha256"] == ck.sha256_file(path) and meta["preset"] == "test-tiny"
    assert cli.main(["import-checkpoint", str(path), "--preset", "nope", "--out", str(out)]) == 2
    assert cli.main(["import-checkpoint", str(path), "--preset", "dav2-metric-vits", "--out",
                     str(tmp_path / "o2")]) == 2
    err = capsys.readouterr().err
    assert "unknown model preset" in err and "shape mismatch" in err
