"""``monother import-checkpoint``: convert an official checkpoint into our model directory.

    monother import-checkpoint depth_anything_v2_metric_vkitti_vits.pth \\
        --preset dav2-metric-vits --out engines/dav2-metric-vits
    monother import-checkpoint monother_ms2.pth --preset monother-ms2-vitl --branch thermal --out DIR

Loading never executes pickled code (``torch.load(weights_only=True)``); the import is strict.
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

__all__ = ["add_commands"]


def add_commands(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Register ``import-checkpoint``."""
    p = subparsers.add_parser(
        "import-checkpoint",
        help="import an official DAv2 / DA v1 / MonoTher checkpoint into a model directory",
        description="Strictly import an official checkpoint (.pth, loaded with weights_only=True) "
        "into a monother_ros model directory (model.safetensors + config.json + metadata.json).",
    )
    p.add_argument("file", type=Path, help="official checkpoint (.pth / .pt / .safetensors)")
    p.add_argument("--preset", required=True,
                   help="model preset, e.g. dav2-metric-vits, dav2-vitl, dav1-vits, monother-ms2-vitl")
    p.add_argument("--out", required=True, type=Path, help="output model directory")
    p.add_argument("--branch", choices=("thermal", "rgb", "confidence", "dual"), default=None,
                   help="part of a MonoTher dual checkpoint to import: thermal student (default), "
                   "rgb teacher, confidence network, or the whole dual model")
    p.add_argument("--max-depth", type=float, default=None, dest="max_depth",
                   help="override max_depth_m (e.g. 20 for the indoor DAv2 metric models)")
    p.set_defaults(handler=_import_checkpoint)


def _import_checkpoint(args: argparse.Namespace) -> int:
    from monother_ros.model.checkpoints import import_checkpoint, save_model, sha256_file
    from monother_ros.model.variants import get_preset

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    config = get_preset(args.preset)
    if args.max_depth is not None:
        config = config.replace(max_depth_m=args.max_depth)
    model, config = import_checkpoint(args.file, config, branch=args.branch)
    kind = getattr(model, "checkpoint_kind", "depth_branch")
    out = save_model(
        model, config, args.out, kind=kind,
        metadata={
            "source_file": args.file.name,
            "source_sha256": sha256_file(args.file),
            "preset": args.preset,
            "branch": args.branch,
        },
    )
    n_params = sum(p.numel() for p in model.parameters())
    print(f"imported {args.file} as {config.name} ({kind}, {n_params:,} parameters) -> {out}")
    return 0
