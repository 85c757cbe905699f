"""``monother demo``: the one-command tour of the package (``make demo`` runs it into ``runs/demo``).

1. The simulated rig: a short bag (day, urban) plus preview pictures of every scenario and scene family.
2. The whole pipeline: ``monother rig --sim`` (simulated rig + ``thermal_depth``, one process, real rclpy
   over DDS) with the shipped model for ``pipeline_seconds``; the depth outputs (depth, confidence,
   camera_info, and the point cloud at a reduced rate) are recorded into a rosbag2 (mcap) in the run
   folder, next to pictures (thermal input | colourised depth | confidence) and a summary (rates,
   latency, drops). While the shipped model (``engines/default``) does not exist yet, an UNTRAINED
   placeholder with the default architecture is built on the fly and the outputs say so loudly.
"""
from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Optional

from monother_ros.errors import ConfigError

__all__ = ["DemoResult", "add_commands", "run_demo"]

DEMO_SECONDS = 2.0
DEMO_SEED = 0
DEMO_PIPELINE_SECONDS = 15.0
DEMO_RENDER_SCALE = 0.5  # thermal 320x256: leaves CPU for inference on a small machine
OUTPUTS_BAG = "depth_outputs"
PLACEHOLDER_NAME = "untrained-placeholder"

_logger = logging.getLogger(__name__)


@dataclass
class DemoResult:
    """Paths written by ``run_demo``: bag directory, its preview mosaic, the scenario gallery."""

    bag: Path
    preview: Path
    gallery: Path
    outputs_bag: Optional[Path] = None   # rosbag2 of the depth node's outputs (pipeline part)
    pictures: Optional[Path] = None      # thermal | depth | confidence rows
    summary: Optional[Path] = None       # summary.json (summary.md beside it)
    placeholder_model: bool = False      # True: the outputs come from an UNTRAINED placeholder


def add_commands(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Register ``demo``."""
    p = subparsers.add_parser("demo", help="the whole pipeline on the simulated rig: bags, pictures, summary",
                              description="Write a short simulated bag and preview pictures into OUT, then run "
                                          "the simulated rig + thermal_depth (monother rig --sim) for --seconds, "
                                          "recording the depth outputs (rosbag2) with pictures and a summary.")
    p.add_argument("--out", default="out/demo", help="output folder (created; default out/demo)")
    p.add_argument("--seconds", type=float, default=DEMO_PIPELINE_SECONDS,
                   help=f"how long the pipeline runs (default {DEMO_PIPELINE_SECONDS:g}; 0 skips it)")
    p.add_argument("--model", default="", help="model folder or .onnx (default: the shipped engines/default)")
    p.set_defaults(handler=_demo)


def _is_our_bag(path: Path) -> bool:
    meta = path / "metadata.yaml"
    try:
        return meta.is_file() and "monother.rig" in meta.read_text()
    except OSError:
        return False


def run_demo(out_dir: str | Path, *, seconds: float = DEMO_SECONDS, pipeline_seconds: float = DEMO_PIPELINE_SECONDS,
             model: str | Path | None = None) -> DemoResult:
    """Write ``<out_dir>/sim_day_urban`` (rosbag2, mcap), its preview and ``scenarios.png``, then run the
    pipeline for ``pipeline_seconds`` (0 skips it; see :func:`run_pipeline`).

    A previous demo's outputs in ``out_dir`` are replaced; anything else there is left alone (a foreign
    file or folder with one of our names is an error).
    """
    from monother_ros.sim.bag import preview_path_for, write_bag
    from monother_ros.sim.preview import colorize_depth, colorize_thermal, mosaic, save_png
    from monother_ros.sim.rig import SimRig

    out = Path(out_dir).expanduser()
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    bag = out / "sim_day_urban"
    if bag.exists():
        if not _is_our_bag(bag):
            raise ConfigError(f"{bag} exists and is not a bag written by the demo; choose another --out")
        shutil.rmtree(bag)
        preview_path_for(bag).unlink(missing_ok=True)
    summary = write_bag(bag, seconds=seconds, seed=DEMO_SEED, scenario="day", family="urban")
    rows = []
    for scenario, family in (("day", "urban"), ("night", "urban"), ("fog", "urban"), ("day", "campus"),
                             ("night", "campus")):
        rig = SimRig(DEMO_SEED, scenario, family)  # type: ignore[arg-type]
        th = rig.render_thermal(1.0)
        rows.append([colorize_thermal(th.counts), rig.render_rgb(1.0).rgb, colorize_depth(th.depth)])
    gallery = out / "scenarios.png"
    save_png(mosaic(rows), gallery)
    (out / "demo.json").write_text(json.dumps({"bag": str(summary.path), "preview": str(summary.preview),
                                               "gallery": str(gallery), "counts": summary.counts}, indent=2))
    assert summary.preview is not None  # write_bag(preview=True) always writes one
    result = DemoResult(summary.path, summary.preview, gallery)
    if pipeline_seconds > 0:
        pipeline = run_pipeline(out, seconds=pipeline_seconds, model=model)
        result = replace(result, outputs_bag=pipeline["bag"], pictures=pipeline["pictures"],
                         summary=pipeline["summary"], placeholder_model=pipeline["placeholder"])
    return result


def _warn_loudly(text: str) -> None:
    bar = "!" * 78
    print(f"{bar}\n!! {text}\n{bar}", file=sys.stderr, flush=True)


def demo_model(model: str | Path | None = None) -> tuple[Path, bool]:
    """(model to run, is it the untrained placeholder).

    ``model`` if given; else the shipped ``engines/default``; else an UNTRAINED placeholder with the
    default architecture (``monother-default`` preset, random weights) built once into
    ``engines/cache/untrained-placeholder`` (or a temporary folder when that is not writable).
    """
    from monother_ros.paths import default_model_dir, engines_dir

    if model:
        path = Path(model).expanduser()
        if not path.exists():
            raise ConfigError(f"--model {path} does not exist")
        return path, False
    if default_model_dir().exists():
        return default_model_dir(), False
    _warn_loudly("engines/default (the shipped, trained model) does not exist yet: the demo runs an UNTRAINED "
                 "PLACEHOLDER with random weights. Its depth is meaningless; only rates and latencies mean something.")
    target = engines_dir() / "cache" / PLACEHOLDER_NAME
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError:
        import tempfile

        target = Path(tempfile.mkdtemp(prefix="monother_placeholder_")) / PLACEHOLDER_NAME
    if not (target / "model.onnx").is_file():
        import torch

        from monother_ros.model.branch import DepthBranch
        from monother_ros.model.checkpoints import save_model
        from monother_ros.model.variants import get_preset
        from monother_ros.runtime.export import MODEL_ONNX_FILE, export_model_dir

        config = get_preset("monother-default")
        torch.manual_seed(0)
        print(f"building the placeholder model in {target} (once) ...", file=sys.stderr, flush=True)
        save_model(DepthBranch(config).eval(), config, target,
                   metadata={"note": "UNTRAINED placeholder for the demo (random weights)"})
        export_model_dir(target, target / MODEL_ONNX_FILE)
    return target, True


def run_pipeline(out_dir: str | Path, *, seconds: float = DEMO_PIPELINE_SECONDS, model: str | Path | None = None,
                 render_scale: float = DEMO_RENDER_SCALE) -> dict[str, Any]:
    """Run ``monother rig --sim`` for ``seconds`` recording the depth outputs, then write pictures and a summary.

    Writes ``<out_dir>/depth_outputs`` (rosbag2, mcap: depth/image, depth/confidence, depth/camera_info,
    depth/points every 5th), ``pipeline.png`` (rows: sample frames; columns: thermal input, depth
    coloured on a log scale 1-80 m, confidence on a log scale 1e-4 to 1) and ``summary.json`` / ``summary.md``.

    Returns:
        {"bag", "pictures", "summary": paths, "placeholder": bool, "data": the summary dict}.
    """
    from monother_ros.ros.commands import RigOptions, record_rig
    from monother_ros.sim.preview import colorize_confidence, colorize_depth, colorize_thermal, mosaic, save_png

    out = Path(out_dir).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    model_path, placeholder = demo_model(model)
    bag = out / OUTPUTS_BAG
    if bag.exists():
        meta = bag / "metadata.yaml"
        if not (meta.is_file() and "depth/image" in meta.read_text()):
            raise ConfigError(f"{bag} exists and is not an outputs bag written by the demo; choose another --out")
        shutil.rmtree(bag)
    options = RigOptions(sim=True, model=str(model_path),
                         extra_overrides={"sim_rig": {"render_scale": str(render_scale), "publish_lidar": "false"}})
    print(f"running the pipeline (simulated rig + thermal_depth) for {seconds:g} s ...", file=sys.stderr, flush=True)
    run = record_rig(options, bag, seconds=seconds)
    rec = run["recorder"]
    rows = [[colorize_thermal(s["thermal"]), colorize_depth(s["depth"]), colorize_confidence(s["confidence"])]
            for s in run["samples"]]
    pictures = out / "pipeline.png"
    if rows:
        save_png(mosaic(rows), pictures)
    depth_health = next((v for k, v in run["health"].items() if k == "thermal_depth"), {})
    sim_health = next((v for k, v in run["health"].items() if k == "sim_rig"), {})
    data = {
        "model": str(model_path),
        "UNTRAINED_PLACEHOLDER": placeholder,
        "seconds": seconds,
        "sim_render_scale": render_scale,
        "recorded": rec,
        "thermal_depth": depth_health,
        "sim_rig": sim_health,
        "bag": str(bag),
        "pictures": str(pictures) if rows else None,
        "picture_frames": len(rows),
    }
    summary = out / "summary.json"
    summary.write_text(json.dumps(data, indent=2, sort_keys=True, default=str))
    (out / "summary.md").write_text(_summary_markdown(data))
    return {"bag": bag, "pictures": pictures if rows else None, "summary": summary, "placeholder": placeholder,
            "data": data}


def _summary_markdown(data: dict[str, Any]) -> str:
    rec = data["recorded"]
    lat = rec["latency_stamp_to_receive_s"]
    dn = data["thermal_depth"]
    lines = ["# monother demo: pipeline summary", ""]
    if data["UNTRAINED_PLACEHOLDER"]:
        lines += ["**UNTRAINED PLACEHOLDER MODEL (random weights): the depth values are meaningless; rates and "
                  "latencies are real.**", ""]
    lines += [f"- model: `{data['model']}`", f"- ran {rec['seconds']:.1f} s (simulated rig at render scale "
              f"{data['sim_render_scale']})", f"- outputs bag: `{data['bag']}`",
              f"- pictures: `{data['pictures']}` (columns: thermal input, depth 1-80 m log scale, confidence 1e-4 to 1 log scale)",
              "", "| measure | value |", "|---|---|"]
    rows = [
        ("depth/image received (rate)",
         f"{rec['received'].get('depth/image', 0)} ({rec['rates_hz'].get('depth/image', 0):.1f} Hz)"),
        ("depth/points recorded / received",
         f"{rec['recorded'].get('depth/points', 0)} / {rec['received'].get('depth/points', 0)}"),
        ("latency stamp -> received mean / p99 (ms)", f"{lat['mean'] * 1e3:.1f} / {lat['p99'] * 1e3:.1f}"),
    ]
    for key in ("input rate (Hz)", "output rate (Hz)", "engine time mean (ms)", "latency receive->publish p99 (ms)",
                "frames dropped (worker busy)", "backend", "input size"):
        if key in dn:
            rows.append((f"thermal_depth {key}", dn[key]))
    sim = data["sim_rig"]
    for key in sorted(k for k in sim if k.startswith("thermal")):
        rows.append((f"sim_rig {key}", sim[key]))
    lines += [f"| {k} | {v} |" for k, v in rows]
    return "\n".join(lines) + "\n"


def _demo(args: argparse.Namespace) -> int:
    result = run_demo(args.out, pipeline_seconds=args.seconds, model=args.model or None)
    print(f"bag:      {result.bag}")
    print(f"preview:  {result.preview}  (rows: frames; columns: thermal, RGB, ground-truth depth)")
    print(f"gallery:  {result.gallery}  (rows: day/night/fog urban, day/night campus)")
    if result.outputs_bag is not None:
        print(f"outputs:  {result.outputs_bag}  (depth node outputs recorded live, rosbag2 mcap)")
        print(f"pictures: {result.pictures}  (rows: frames; columns: thermal, depth, confidence)")
        print(f"summary:  {result.summary}  (+ summary.md: rates, latency, drops)")
    if result.placeholder_model:
        _warn_loudly("these outputs come from an UNTRAINED PLACEHOLDER model (engines/default is missing)")
    return 0
