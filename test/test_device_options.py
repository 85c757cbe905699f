"""The ``device`` / ``precision`` options of ``monother rig`` and ``monother eval`` reach the engine, and
malformed values are refused before anything starts."""
from __future__ import annotations

import pytest

from monother_ros.errors import ConfigError


def test_eval_options_check_device_and_precision():
    from monother_ros.eval.evaluate import EvalOptions

    options = EvalOptions(device=" CUDA:1 ", precision="fp16")
    options.validate()
    assert options.device == "cuda:1"
    with pytest.raises(ConfigError, match="device must be auto"):
        EvalOptions(device="gpu").validate()
    with pytest.raises(ConfigError, match="--precision must be fp16 or fp32"):
        EvalOptions(precision="int8").validate()
    assert EvalOptions().device == "auto" and EvalOptions().precision == "fp32"


def test_eval_command_refuses_a_bad_device_in_one_line(capsys, tmp_path):
    from monother_ros.cli import main

    bag = tmp_path / "bag.mcap"
    bag.write_bytes(b"")
    rc = main(["eval", str(bag), "--model", str(tmp_path), "--out", str(tmp_path / "out"), "--device", "gpu"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and err == ["monother eval: error: device must be auto (a CUDA GPU when torch sees one, else "
                               "the CPU), cpu, cuda or cuda:N; got 'gpu'"]


def test_eval_engine_gets_device_and_precision(tmp_path):
    from monother_ros.eval.evaluate import EnginePredictor, EvalOptions, ModelSpec
    from tiny_models import tiny_student_dir

    spec = ModelSpec.parse(f"tiny={tiny_student_dir()}")
    predictor = EnginePredictor.load(spec, EvalOptions(backend="torch", device="cpu", precision="fp16",
                                                       num_threads=1))
    selection = predictor.engine.selection
    assert (selection.backend, selection.requested_device, selection.device) == ("torch", "cpu", "cpu")
    assert predictor.engine.info.precision == "fp32"  # fp16 applies on CUDA only
    predictor.engine.close()


def test_rig_device_option_parses_and_reaches_thermal_depth():
    from monother_ros.cli import build_parser
    from monother_ros.ros.commands import RigOptions, start_rig
    from ros_harness import ros_context
    from tiny_models import tiny_student_dir

    parser = build_parser()
    assert parser.parse_args(["rig", "--device", "cuda:1"]).device == "cuda:1"
    assert parser.parse_args(["rig"]).device == ""
    with pytest.raises(SystemExit):
        parser.parse_args(["rig", "--device", "gpu"])
    with ros_context() as context:
        nodes = start_rig(RigOptions(model=str(tiny_student_dir()), backend="torch", device="cpu"), context)
        try:
            depth = next(n for n in nodes if n.get_name() == "thermal_depth")
            assert depth.params["device"] == "cpu"
            assert depth.engine.selection.requested_device == "cpu" and depth.engine.info.backend == "torch"
        finally:
            for node in reversed(nodes):
                node.destroy_node()
