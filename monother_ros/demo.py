"""``monother demo``: the one-command tour of the package.

For now it runs the simulated rig: a short bag (day, urban) plus preview pictures of every scenario and
scene family, written into an output folder, and prints where they are. (The ROS runtime will extend it
with the depth node running on the bag.)
"""
from __future__ import annotations

import argparse
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from monother_ros.errors import ConfigError

__all__ = ["DemoResult", "add_commands", "run_demo"]

DEMO_SECONDS = 2.0
DEMO_SEED = 0


@dataclass
class DemoResult:
    """Paths written by ``run_demo``: bag directory, its preview mosaic, the scenario gallery."""

    bag: Path
    preview: Path
    gallery: Path


def add_commands(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Register ``demo``."""
    p = subparsers.add_parser("demo", help="run the simulated rig and write a short bag + pictures",
                              description="Write a short simulated bag and preview pictures into DIR.")
    p.add_argument("--out", default="out/demo", help="output folder (created; default out/demo)")
    p.set_defaults(handler=_demo)


def _is_our_bag(path: Path) -> bool:
    meta = path / "metadata.yaml"
    try:
        return meta.is_file() and "monother.rig" in meta.read_text()
    except OSError:
        return False


def run_demo(out_dir: str | Path, *, seconds: float = DEMO_SECONDS) -> DemoResult:
    """Write ``<out_dir>/sim_day_urban`` (rosbag2, mcap), its preview and ``scenarios.png``.

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
    return DemoResult(summary.path, summary.preview, gallery)


def _demo(args: argparse.Namespace) -> int:
    result = run_demo(args.out)
    print(f"bag:      {result.bag}")
    print(f"preview:  {result.preview}  (rows: frames; columns: thermal, RGB, ground-truth depth)")
    print(f"gallery:  {result.gallery}  (rows: day/night/fog urban, day/night campus)")
    return 0
