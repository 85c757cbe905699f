#!/usr/bin/env python3
"""How well a model's own confidence ranks its depth errors on a bag with ground truth.

Runs the model through the runtime engine (the node's pre/post-processing, as ``monother eval``) on
every thermal frame of the bag that has ground truth, and pools the valid pixels (GT in
(``min_depth``, ``max_depth``), prediction clamped to that range, as ``core.metrics``) of all frames:

* AbsRel of all pixels and of the most confident ``--keep`` fraction (default 50 %);
* the sparsification curve: AbsRel of the most confident k % of pixels for k = 5..100, next to the
  oracle curve (pixels ranked by their true relative error) and the random-order level;
* a figure (PNG) of both curves, and a JSON with every number.

Usage:
    .venv/bin/python scripts/default_model_confidence.py BAG --model engines/default --out DIR

Pooled pixels (not per-frame means) because the ranking is a property of pixels across frames.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

import numpy as np

LOG = logging.getLogger("default_model_confidence")
KEEP_GRID = np.round(np.arange(0.05, 1.0001, 0.05), 2)


def pooled_pixels(bag: Path, model: Path, *, backend: str = "onnxruntime", max_frames: int = 0,
                  min_depth: float = 1e-3, max_depth: float = 80.0) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """(pred, gt, confidence) of every valid pixel of the bag's frames, each (N,) float32, and the frame count.

    Raises:
        ConfigError: the model has no confidence output.
        BagError: unreadable bag.
    """
    from monother_ros.errors import ConfigError
    from monother_ros.eval.bag_reader import BagReader
    from monother_ros.eval.evaluate import EvalOptions, iter_frames
    from monother_ros.runtime import make_backend

    engine = make_backend(model, backend, num_threads=1)  # type: ignore[arg-type]
    preds, gts, confs = [], [], []
    frames = 0
    try:
        if not engine.info.has_confidence:
            raise ConfigError(f"{model} has no confidence output")
        options = EvalOptions(max_frames=max_frames, progress=False, pictures=False, min_depth=min_depth, max_depth=max_depth)
        with BagReader(bag) as reader:
            for frame in iter_frames(reader, options):
                if frame.gt is None:
                    continue
                result = engine.infer(frame.thermal)
                gt = frame.gt
                valid = np.isfinite(gt) & (gt > min_depth) & (gt < max_depth) & np.isfinite(result.depth)
                if result.confidence is None or not valid.any():
                    continue
                preds.append(np.clip(result.depth[valid], min_depth, max_depth).astype(np.float32))
                gts.append(gt[valid].astype(np.float32))
                confs.append(result.confidence[valid].astype(np.float32))
                frames += 1
    finally:
        engine.close()
    if not frames:
        raise ConfigError(f"{bag}: no frame with ground truth and confidence")
    return np.concatenate(preds), np.concatenate(gts), np.concatenate(confs), frames


def abs_rel_of_most_confident(pred: np.ndarray, gt: np.ndarray, conf: np.ndarray, keep: float) -> float:
    """AbsRel (mean |pred - gt| / gt) of the ``keep`` fraction of pixels with the highest ``conf``."""
    if not 0 < keep <= 1:
        raise ValueError(f"keep must be in (0, 1], got {keep}")
    err = np.abs(pred - gt) / gt
    n = max(1, int(round(keep * err.size)))
    # Stable sort on -conf: ties keep pixel order (deterministic).
    order = np.argsort(-conf, kind="stable")[:n]
    return float(err[order].mean())


def confidence_report(pred: np.ndarray, gt: np.ndarray, conf: np.ndarray, keep: float = 0.5) -> dict[str, Any]:
    """Numbers of the module docstring (AbsRel all / most confident, curves, AUSE-style area gap)."""
    err = np.abs(pred - gt) / gt
    conf_curve = [abs_rel_of_most_confident(pred, gt, conf, float(k)) for k in KEEP_GRID]
    oracle_curve = [abs_rel_of_most_confident(pred, gt, -err, float(k)) for k in KEEP_GRID]
    return {
        "pixels": int(err.size),
        "abs_rel_all": float(err.mean()),
        "keep_fraction": keep,
        "abs_rel_most_confident": abs_rel_of_most_confident(pred, gt, conf, keep),
        "abs_rel_least_confident": float(err[np.argsort(conf, kind="stable")[: max(1, int(round(keep * err.size)))]].mean()),
        "spearman_conf_vs_error": _spearman(conf, err),
        # The NLL trains the confidence on the metric residual |d - target| (metres), not the relative one.
        "abs_err_m_all": float(np.abs(pred - gt).mean()),
        "abs_err_m_most_confident": float(np.abs(pred - gt)[np.argsort(-conf, kind="stable")[: max(1, int(round(keep * err.size)))]].mean()),
        "spearman_conf_vs_abs_err_m": _spearman(conf, np.abs(pred - gt)),
        "curve_keep": KEEP_GRID.tolist(),
        "curve_confidence": conf_curve,
        "curve_oracle": oracle_curve,
        # Mean gap between the confidence curve and the oracle (lower = better ranking).
        "ause": float(np.mean(np.array(conf_curve) - np.array(oracle_curve))),
    }


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    ra = np.argsort(np.argsort(a, kind="stable"), kind="stable").astype(np.float64)
    rb = np.argsort(np.argsort(b, kind="stable"), kind="stable").astype(np.float64)
    ra -= ra.mean()
    rb -= rb.mean()
    return float((ra * rb).sum() / np.sqrt((ra * ra).sum() * (rb * rb).sum()))


def plot(report: dict[str, Any], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keep = np.array(report["curve_keep"]) * 100
    fig, ax = plt.subplots(figsize=(5.5, 3.8), dpi=110)
    ax.plot(keep, report["curve_confidence"], "o-", ms=3, label="ranked by the model's confidence")
    ax.plot(keep, report["curve_oracle"], "--", label="oracle (ranked by true error)")
    ax.axhline(report["abs_rel_all"], color="gray", lw=1, label="all pixels / random order")
    ax.set_xlabel("most confident pixels kept (%)")
    ax.set_ylabel("AbsRel")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("bag")
    parser.add_argument("--model", required=True, help="model folder or .onnx")
    parser.add_argument("--out", required=True, help="output folder (confidence.json, confidence_ranking.png)")
    parser.add_argument("--keep", type=float, default=0.5)
    parser.add_argument("--max-frames", type=int, default=0)
    parser.add_argument("--backend", default="onnxruntime")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    pred, gt, conf, frames = pooled_pixels(Path(args.bag), Path(args.model), backend=args.backend, max_frames=args.max_frames)
    report = {"bag": args.bag, "model": args.model, "frames": frames, **confidence_report(pred, gt, conf, args.keep)}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "confidence.json").write_text(json.dumps(report, indent=2) + "\n")
    plot(report, out / "confidence_ranking.png",
         f"{Path(args.bag).name}: AbsRel all {report['abs_rel_all']:.3f}, "
         f"most confident {args.keep:.0%} {report['abs_rel_most_confident']:.3f}")
    print(json.dumps({k: v for k, v in report.items() if not k.startswith("curve")}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
