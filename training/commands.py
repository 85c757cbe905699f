"""``monother train`` and ``monother export-model`` subcommands (heavy imports inside the handlers)."""
from __future__ import annotations

import argparse


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    train = subparsers.add_parser(
        "train",
        help="train the thermal student (supervised / label-free distillation), torchrun-able",
        description=(
            "Train from a YAML config (config/train/*.yaml) with key=value overrides. For several processes "
            "or GPUs run `torchrun --nproc_per_node N -m training.train CONFIG [key=value ...]`."
        ),
    )
    train.add_argument("config", nargs="?", help="training config YAML (config/train/...)")
    train.add_argument("overrides", nargs="*", help="key=value overrides, e.g. epochs=2 train_data=[a.mcap]")
    train.add_argument("--export", action="store_true", help="after training: save the student, export ONNX, build TensorRT when available")
    train.add_argument("--no-progress", action="store_true", help="no progress bar")
    train.set_defaults(handler=_train)

    export = subparsers.add_parser(
        "export-model",
        help="save a training run's student in the model format, export ONNX (+TensorRT)",
    )
    export.add_argument("run", help="training run folder (with checkpoints/) or one checkpoint directory")
    export.add_argument("--out", help="output folder (default RUN/export)")
    export.add_argument("--no-onnx", action="store_true")
    export.add_argument("--tensorrt", choices=("auto", "yes", "no"), default="auto")
    export.add_argument("--dual", choices=("none", "float32", "float16"), default="none",
                        help="also save student + RGB teacher + confidence network to OUT/model/dual in this dtype "
                             "(what online adaptation and the teacher path load)")
    export.set_defaults(handler=_export)


def _train(args: argparse.Namespace) -> int:
    from training.train import main

    argv = ([args.config] if args.config else []) + list(args.overrides)
    argv += ["--export"] if args.export else []
    argv += ["--no-progress"] if args.no_progress else []
    return main(argv)


def _export(args: argparse.Namespace) -> int:
    import json

    from training.train import export_student

    written = export_student(args.run, args.out, onnx=not args.no_onnx, tensorrt=args.tensorrt, dual=args.dual)
    print(json.dumps({k: v for k, v in written.items() if k != "onnx_info"}, indent=2))
    return 0
