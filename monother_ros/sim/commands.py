"""``monother sim``: simulate the thermal + RGB + LiDAR rig into a rosbag2 bag.

    monother sim --out runs/day.mcap-bag --seconds 10 --seed 0 --scenario day --family urban
    monother sim --out night --seconds 5 --scenario night --family campus --storage sqlite3
    monother sim --out drive --seconds 5 --compress thermal=png --compress rgb=jpeg --ros1 drive.bag

Writes the bag directory and ``<bag>_preview.png`` beside it (see ``monother_ros.sim.bag``). Bad arguments
(unknown scenario, family or storage, non-positive or non-numeric duration, an existing or unwritable
output) give a one-line error and exit code 2 before anything is written; an interrupted run leaves
nothing behind.
"""
from __future__ import annotations

import argparse
import math
import signal
from pathlib import Path

from monother_ros.errors import ConfigError

__all__ = ["add_commands"]

_SCENARIOS = ("day", "night", "fog")
_FAMILIES = ("urban", "campus")
_STORAGES = ("mcap", "sqlite3")


def add_commands(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Register ``sim``."""
    p = subparsers.add_parser(
        "sim", help="write a simulated thermal+RGB+LiDAR rosbag2 bag",
        description="Simulate the rig (seeded procedural scene, thermal 30 Hz, RGB ~20 Hz, LiDAR 10 Hz, "
        "ground-truth depth) and write a rosbag2 bag plus a preview PNG.")
    # Values are validated in the handler (not by argparse) so every bad value gives one clear line.
    p.add_argument("--out", required=True, help="bag directory to create (must not exist)")
    p.add_argument("--seconds", default="10", help="simulated duration in seconds (default 10)")
    p.add_argument("--seed", default="0", help="scene / trajectory / noise seed (default 0)")
    p.add_argument("--scenario", default="day", help="day | night | fog (default day)")
    p.add_argument("--family", default="urban", help="urban | campus (default urban)")
    p.add_argument("--storage", default="mcap", help="mcap | sqlite3 (default mcap)")
    p.add_argument("--workers", default=None, help="rendering processes (default: up to 2; 0 = in-process)")
    p.add_argument("--compress", action="append", default=[], metavar="STREAM=CODEC",
                   help="record a camera on image_transport's compressed topic instead of raw: thermal=png, "
                        "rgb=jpeg or rgb=png (repeatable)")
    p.add_argument("--ros1", default=None, metavar="FILE.bag", help="also write a ROS 1 copy of the bag")
    p.set_defaults(handler=_sim)


def parse_sim_args(args: argparse.Namespace) -> dict:
    """Validate ``monother sim`` arguments; raise ``ConfigError`` with a one-line reason."""
    try:
        seconds = float(args.seconds)
    except ValueError:
        raise ConfigError(f"--seconds must be a number, got {args.seconds!r}") from None
    if not math.isfinite(seconds) or seconds <= 0:
        raise ConfigError(f"--seconds must be a positive number of seconds, got {args.seconds}")
    try:
        seed = int(args.seed)
    except ValueError:
        raise ConfigError(f"--seed must be an integer, got {args.seed!r}") from None
    if args.scenario not in _SCENARIOS:
        raise ConfigError(f"unknown --scenario {args.scenario!r}; expected one of {', '.join(_SCENARIOS)}")
    if args.family not in _FAMILIES:
        raise ConfigError(f"unknown --family {args.family!r}; expected one of {', '.join(_FAMILIES)}")
    if args.storage not in _STORAGES:
        raise ConfigError(f"unknown --storage {args.storage!r}; expected one of {', '.join(_STORAGES)}")
    workers = None
    if args.workers is not None:
        try:
            workers = int(args.workers)
        except ValueError:
            raise ConfigError(f"--workers must be an integer, got {args.workers!r}") from None
        if workers < 0:
            raise ConfigError(f"--workers must be >= 0, got {workers}")
    compress = {}
    for item in getattr(args, "compress", None) or []:
        stream, sep, codec = item.partition("=")
        if not sep or not stream or not codec:
            raise ConfigError(f"--compress expects STREAM=CODEC (thermal=png, rgb=jpeg), got {item!r}")
        compress[stream] = codec
    return {"seconds": seconds, "seed": seed, "scenario": args.scenario, "family": args.family,
            "storage": args.storage, "workers": workers, "compress": compress}


def _raise_interrupt(signum, frame) -> None:  # noqa: ARG001 - signal handler signature
    raise KeyboardInterrupt


def _sim(args: argparse.Namespace) -> int:
    kwargs = parse_sim_args(args)
    from monother_ros.sim.bag import check_output_path, export_rosbag1, write_bag

    out = check_output_path(Path(args.out))
    ros1 = None
    if getattr(args, "ros1", None):
        if not str(args.ros1).endswith(".bag"):
            raise ConfigError(f"--ros1 names a ROS 1 bag file ending in .bag, got {args.ros1!r}")
        ros1 = check_output_path(Path(args.ros1))
    # SIGTERM unwinds like Ctrl-C so the writer removes its temporary files.
    signal.signal(signal.SIGTERM, _raise_interrupt)
    summary = write_bag(out, **kwargs)
    n_th = summary.counts.get("/thermal/image_raw", summary.counts.get("/thermal/image_raw/compressed", 0))
    n_rgb = summary.counts.get("/rgb/image_raw", summary.counts.get("/rgb/image_raw/compressed", 0))
    n_li = summary.counts.get("/lidar/points", 0)
    print(f"wrote {summary.path} ({summary.storage}): {summary.seconds:g} s simulated, {n_th} thermal, {n_rgb} RGB, "
          f"{n_li} LiDAR messages in {summary.wall_s:.1f} s")
    if summary.preview is not None:
        print(f"preview: {summary.preview}")
    if ros1 is not None:
        print(f"wrote {export_rosbag1(summary.path, ros1)} (ROS 1)")
    return 0
