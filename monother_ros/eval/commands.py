"""``monother eval`` and ``monother import-ms2``.

    monother eval BAG [BAG ...] [--model [NAME=]M ...] --out DIR [--backend onnxruntime|torch|...]
                  [--device auto|cpu|cuda[:N]] [--precision fp32|fp16]
                  [--gt-topic /gt/depth | --lidar-topic /lidar/points] [--gt-tolerance-ms T]
                  [--align none|median|lsq] [--condition day|night|fog] [--min-depth 1e-3 --max-depth 80]
                  [--bins 0,10,20,40,80] [--every N] [--max-frames N] [--no-boundary] [--no-pictures]
                  [--live [--rate R] [--config rig.yaml]]
    monother import-ms2 ROOT --sequence S --out BAG [--storage mcap|sqlite3] [--rate HZ] [--condition C]
                  [--max-frames N]

BAG: a rosbag2 folder, a .mcap / .db3 file, or a ROS 1 .bag file. Image topics may be raw
(sensor_msgs/Image) or image_transport's compressed sub-topic (``<topic>/compressed``,
sensor_msgs/CompressedImage), which is read when the raw topic is absent. Without ``--model`` the shipped
default model (engines/default) is scored, as the node runs it. ``--out`` is checked writable first.

Exit codes of ``eval``: 0 everything scored; 1 something was scored but a bag or model failed (the
outputs hold what was scored and the errors); 2 nothing could be scored or bad arguments.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from monother_ros.errors import ConfigError

__all__ = ["add_commands", "parse_bins"]


def add_commands(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Register ``eval`` and ``import-ms2``."""
    p = subparsers.add_parser(
        "eval", help="score depth models on bags, rosbag2 or ROS 1 (metrics.json, report.md, pictures)",
        description="Replay bags through the depth pipeline and score it against ground truth (a depth image "
                    "topic or a LiDAR cloud projected into the thermal camera). Offline by default (the runtime "
                    "engine, deterministic, faster than real time); --live plays the bag into DDS with /clock and "
                    "scores what the real thermal_depth node publishes.")
    p.add_argument("bags", nargs="+", metavar="BAG",
                   help="rosbag2 bag folders, .mcap / .db3 files or ROS 1 .bag files")
    p.add_argument("--model", action="append", default=None, metavar="[NAME=]PATH",
                   help="model folder or .onnx; repeat to compare models side by side (default: the shipped "
                        "engines/default)")
    p.add_argument("--out", required=True, help="output folder (created; checked writable before the run)")
    p.add_argument("--backend", default="onnxruntime", choices=["auto", "tensorrt", "onnxruntime", "torch"])
    p.add_argument("--device", default="auto",
                   help="where the engine runs: auto (a CUDA GPU when torch sees one), cpu, cuda or cuda:N")
    p.add_argument("--precision", default="fp32", choices=["fp16", "fp32"],
                   help="precision on CUDA (default fp32: scores independent of the GPU)")
    p.add_argument("--num-threads", type=int, default=None, help="CPU threads for the engine")
    gt = p.add_mutually_exclusive_group()
    gt.add_argument("--gt-topic", default="/gt/depth", help="ground-truth depth image topic (default /gt/depth)")
    gt.add_argument("--lidar-topic", default=None, help="use this PointCloud2 topic as ground truth instead")
    p.add_argument("--gt-tolerance-ms", type=float, default=None,
                   help="max stamp difference frame <-> ground truth (default 5 ms images, 50 ms LiDAR)")
    p.add_argument("--thermal-topic", default="/thermal/image_raw",
                   help="thermal image topic; <topic>/compressed is read when the bag has only that")
    p.add_argument("--info-topic", default="/thermal/camera_info")
    p.add_argument("--align", default="none", choices=["none", "median", "lsq"],
                   help="scale alignment before scoring (depth space); none = metric (default)")
    p.add_argument("--condition", default=None, help="condition tag for every bag (default: from the bag)")
    p.add_argument("--min-depth", type=float, default=1e-3)
    p.add_argument("--max-depth", type=float, default=80.0)
    p.add_argument("--bins", default="0,10,20,40,80", help="distance bin edges in metres (comma separated)")
    p.add_argument("--every", type=int, default=1, help="score every N-th thermal frame")
    p.add_argument("--max-frames", type=int, default=0, help="at most N frames per bag (0 = all)")
    p.add_argument("--mosaic-frames", type=int, default=3, help="frames per bag in the picture mosaic")
    p.add_argument("--no-boundary", action="store_true", help="skip the boundary F1 metric")
    p.add_argument("--no-pictures", action="store_true", help="no mosaics or plots (metrics.json and report.md only)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--live", action="store_true", help="play the bag into DDS and score the running node graph")
    p.add_argument("--rate", type=float, default=1.0, help="live: playback speed factor (1 = real time)")
    p.add_argument("--config", default=None, help="live: params file for the node graph (default config/rig.yaml)")
    p.set_defaults(handler=_eval)

    m = subparsers.add_parser(
        "import-ms2", help="turn an MS2 dataset sequence into a rosbag2 bag with /gt/depth",
        description="Convert sync_data/<seq>/{thr,rgb}/img_left + proj_depth/<seq>/thr/depth_filtered + calib.npy "
                    "of the MS2 dataset into a bag with the standard topics, /tf_static from the calibration and "
                    "/gt/depth, so the paper's benchmark replays through `monother eval`.")
    m.add_argument("root", help="MS2 root folder (holds sync_data/ and proj_depth/)")
    m.add_argument("--sequence", required=True, help="sequence name under sync_data/")
    m.add_argument("--out", required=True, help="bag folder to create")
    m.add_argument("--storage", default="mcap", choices=["mcap", "sqlite3"])
    m.add_argument("--rate", type=float, default=None, help="frame rate for stamps when the sequence has no "
                   "timestamps (default 15 Hz)")
    m.add_argument("--condition", default=None, help="condition tag (default: from the split lists, else unknown)")
    m.add_argument("--max-frames", type=int, default=0, help="at most N frames (0 = all)")
    m.add_argument("--depth-folder", default="depth_filtered", help="proj_depth/<seq>/thr/<folder>")
    m.set_defaults(handler=_import_ms2)


def parse_bins(text: str) -> tuple[float, ...]:
    """``"0,10,20"`` -> (0.0, 10.0, 20.0); ``ConfigError`` when not ascending numbers."""
    try:
        edges = tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise ConfigError(f"--bins must be comma-separated numbers, got {text!r}") from None
    if len(edges) < 2 or any(b <= a for a, b in zip(edges, edges[1:])):
        raise ConfigError(f"--bins needs >= 2 ascending edges, got {text!r}")
    return edges


def _eval(args: argparse.Namespace) -> int:
    import logging

    from monother_ros.errors import MonotherError
    from monother_ros.eval.evaluate import EvalOptions, ModelSpec, check_output_dir, evaluate

    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    options = EvalOptions(
        thermal_topic=args.thermal_topic, info_topic=args.info_topic, gt_topic=args.gt_topic,
        lidar_topic=args.lidar_topic,
        tolerance_ns=None if args.gt_tolerance_ms is None else int(round(args.gt_tolerance_ms * 1e6)),
        align=args.align, condition=args.condition, min_depth=args.min_depth, max_depth=args.max_depth,
        every=args.every, max_frames=args.max_frames, bins=parse_bins(args.bins), backend=args.backend,
        device=args.device, precision=args.precision,
        num_threads=args.num_threads, mosaic_frames=args.mosaic_frames, boundary=not args.no_boundary,
        pictures=not args.no_pictures,
        progress=not args.no_progress and sys.stderr.isatty(),
    )
    options.validate()
    models = [ModelSpec.parse(m) for m in args.model] if args.model else [default_model_spec()]
    for bag in args.bags:
        if not Path(bag).exists():
            raise ConfigError(f"bag {bag} does not exist")
    out = check_output_dir(args.out)  # before any work: a read-only or full disk fails now, not at the end
    try:
        if args.live:
            from monother_ros.eval.live import LiveOptions, evaluate_live

            run = evaluate_live(args.bags, models, options, out,
                                LiveOptions(rate=args.rate, config=args.config))
        else:
            run = evaluate(args.bags, models, options, out)
    except OSError as exc:  # the disk filled up or went read-only during the run
        raise MonotherError(f"cannot write the outputs into {out}: {exc.strerror or exc}"
                            + (f" ({exc.filename})" if exc.filename else "")) from None
    _print_summary(run, out)
    return 1 if run.errors else 0


def default_model_spec():
    """``ModelSpec`` of the shipped default model (the node's ``model: ""``).

    Raises:
        ConfigError: this install has no engines/default.
    """
    from monother_ros.eval.evaluate import ModelSpec
    from monother_ros.paths import default_model_dir

    path = default_model_dir()
    if not path.exists():
        raise ConfigError(f"no --model given and the shipped default model {path} is missing; pass --model PATH")
    return ModelSpec("default", path)


def _print_summary(run, out: Path) -> None:
    for model, s in run.overall.items():
        d = s.to_dict()
        m = d["metrics"] or {}
        print(f"{model}: {d['frames_scored']} frames, AbsRel {m.get('abs_rel', float('nan')):.4f}, "
              f"RMSE {m.get('rmse', float('nan')):.3f} m, a1 {m.get('a1', float('nan')):.4f}"
              + (f", bF1 {d['boundary_f1']:.3f}" if d["boundary_f1"] is not None else ""))
    for err in run.errors:
        print(f"problem: {err}", file=sys.stderr)
    print(f"wrote {out / 'metrics.json'} and {out / 'report.md'}")


def _import_ms2(args: argparse.Namespace) -> int:
    from monother_ros.eval.ms2 import import_sequence

    summary = import_sequence(args.root, args.sequence, args.out, storage=args.storage, rate_hz=args.rate,
                              condition=args.condition, max_frames=args.max_frames, depth_folder=args.depth_folder)
    print(f"wrote {summary.path}: {summary.frames} frames ({summary.with_gt} with GT), condition {summary.condition}")
    return 0
