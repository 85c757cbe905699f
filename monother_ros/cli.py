"""`monother` command line: one entry point, one subcommand per job.

Each subcommand lives next to the code it drives, in a module exposing ``add_commands(subparsers)``; a
subcommand's parser sets ``handler`` (``args -> exit code``). Modules import heavy libraries (torch, rclpy)
only inside their handlers so that ``monother --help`` stays instant.
"""
from __future__ import annotations

import argparse
import importlib
import sys
from typing import Sequence

from monother_ros.errors import MonotherError

# Modules contributing subcommands, in help order.
COMMAND_MODULES: tuple[str, ...] = (
    "monother_ros.demo",
    "monother_ros.sim.commands",
    "monother_ros.model.commands",
    "monother_ros.runtime.commands",
    "monother_ros.ros.commands",
    "monother_ros.eval.commands",
    "training.commands",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="monother", description="Metric depth from thermal images (MonoTher-Depth) for ROS 2."
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name is not None and name.startswith(exc.name):
                continue  # that part of the package is not present in this install
            raise
        module.add_commands(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return 2
    try:
        return int(handler(args) or 0)
    except MonotherError as exc:
        print(f"monother {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"monother {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
