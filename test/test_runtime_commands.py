"""`monother export-onnx` / `monother build-engine` command lines."""
from __future__ import annotations

import pytest
import torch

from monother_ros.cli import main
from monother_ros.model.branch import DepthBranch
from monother_ros.model.checkpoints import save_model
from monother_ros.model.variants import get_preset
from monother_ros.runtime.export import read_onnx_info


def test_export_onnx_command(tmp_path, capsys):
    config = get_preset("test-tiny")
    torch.manual_seed(0)
    model_dir = save_model(DepthBranch(config).eval(), config, tmp_path / "tiny")
    out = tmp_path / "out" / "tiny.onnx"
    rc = main(["export-onnx", "--model", str(model_dir), "--input-size", "28x42", "--out", str(out)])
    assert rc == 0
    info = read_onnx_info(out)
    assert info.input_hw == (28, 42) and info.model_name == "test-tiny" and info.has_confidence
    assert info.model_hash == (model_dir / "metadata.json").read_text().split('"model_sha256": "')[1][:64]
    assert str(out) in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["export-onnx", "--model", "MISSING", "--out", "x.onnx"], "does not exist"),
    (["export-onnx", "--model", "MISSING", "--input-size", "30x42", "--out", "x.onnx"], None),
    (["build-engine", "--model", "MISSING", "--input-size", "nope", "--precision", "fp16"], "HxW"),
])
def test_command_errors_are_one_line(tmp_path, capsys, argv, message):
    argv = [a.replace("MISSING", str(tmp_path / "missing")) for a in argv]
    argv = [str(tmp_path / a) if a == "x.onnx" else a for a in argv]
    rc = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith(f"monother {argv[0]}: error:")
    if message:
        assert message in err[0]
