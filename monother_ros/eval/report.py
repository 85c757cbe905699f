"""Evaluation outputs: ``metrics.json`` (versioned schema), ``report.md`` and pictures.

``metrics.json`` (``schema`` = ``monother_ros.eval.metrics``, ``version`` = :data:`METRICS_VERSION`)::

    {
      "schema": "monother_ros.eval.metrics", "version": 1, "created_utc": "...", "mode": "offline"|"live",
      "complete": bool,                  # false while the run is in progress (written after every bag)
      "wall_s": float,                   # reading + inference + scoring (offline) / replays (live), s
      "load_s": float,                   # model loading, s
      "options": {...},                  # EvalOptions.to_dict()
      "models": {NAME: {"path", "status": "ok"|"error", "error"?, "backend", "precision", "model_name",
                        "model_hash", "input_hw", "has_confidence"}},
      "bags":   {NAME: {"path", "status": "ok"|"error"|"empty", "error", "partial", "condition",
                        "condition_source": "metadata"|"/rig/info"|"option"|"none", "duration_s",
                        "thermal_messages", "expected_frames", "frames_read", "wall_s", "rig_info",
                        "thermal_topic", "thermal_type", "ros_version": 1|2, "frames_skipped"?, "frames_blind"?}},
      "results":      [GROUP + {"model", "bag", "condition"}],    # model x bag
      "by_condition": [GROUP + {"model", "condition"}],           # model x condition (all bags)
      "overall":      [GROUP + {"model"}],                        # model, all bags
      "error_vs_distance": {MODEL: {"bin_m", "centers_m", "pixels", "mean_abs_err_m", "mean_abs_rel"}},
      "frames": [{"model", "bag", "index", "stamp_ns", "gt_stamp_ns", "gt": bool, "dropped"?,
                  "abs_rel"?, "rmse"?, "a1"?, "silog"?, "boundary_f1"?, "coverage"?, "scale"?,
                  "total_ms"?, "latency_ms"?}],
      "live": {...}?,                    # live mode only: per model published/received counts, rates
      "errors": [str]
    }
    GROUP = {"frames_scored", "frames_without_gt", "frames_unscored", "frames_dropped", "pixels",
             "coverage", "metrics": {a1, a2, a3, abs_rel, sq_rel, rmse, rmse_log, log_10, silog} | null,
             "bins": [{"range_m": [lo, hi], "pixels", "metrics" | null}], "boundary_f1" | null,
             "boundary_f1_frames", "scale": STATS | null, "timing_ms": {KEY: STATS}}
    STATS = {"mean", "p50", "p95", "max", "n"}

``metrics`` are per-frame means; ``bins`` pool pixels by ground-truth distance; ``timing_ms`` keys are the
engine's ``preprocess_ms``, ``inference_ms``, ``postprocess_ms``, ``total_ms`` (offline) or ``latency_ms``
(live: bag-player publish -> depth received). Every write goes to a temporary file renamed into place.
"""
from __future__ import annotations

import datetime as _dt
import json
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np

from monother_ros.fileio import atomic_write_bytes

__all__ = ["METRICS_SCHEMA", "METRICS_VERSION", "metrics_document", "write_metrics", "write_report", "write_all"]

LOG = logging.getLogger(__name__)

METRICS_SCHEMA = "monother_ros.eval.metrics"
METRICS_VERSION = 1
METRICS_FILE = "metrics.json"
REPORT_FILE = "report.md"


def _clean(value: Any) -> Any:
    """JSON-safe: NaN/inf -> None, numpy scalars -> Python."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, (np.floating, float)):
        f = float(value)
        return f if math.isfinite(f) else None
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, Path):
        return str(value)
    return value


def _curves(run: Any) -> dict[str, Any]:
    from monother_ros.eval.evaluate import CURVE_BIN_M

    out = {}
    for model, s in run.overall.items():
        if s.curve is None:
            continue
        n, err, rel = s.curve
        with np.errstate(invalid="ignore", divide="ignore"):
            out[model] = {
                "bin_m": CURVE_BIN_M,
                "centers_m": ((np.arange(n.size) + 0.5) * CURVE_BIN_M).tolist(),
                "pixels": n.astype(int).tolist(),
                "mean_abs_err_m": np.where(n > 0, err / np.maximum(n, 1), np.nan).tolist(),
                "mean_abs_rel": np.where(n > 0, rel / np.maximum(n, 1), np.nan).tolist(),
            }
    return out


def metrics_document(run: Any, *, complete: bool) -> dict[str, Any]:
    """The ``metrics.json`` content of an ``EvalRun``."""
    results = [{"model": m, "bag": b, "condition": run.bags.get(b, {}).get("condition", "unknown"), **s.to_dict()}
               for (m, b), s in run.per_bag.items()]
    by_condition = [{"model": m, "condition": c, **s.to_dict()} for (m, c), s in run.per_condition.items()]
    overall = [{"model": m, **s.to_dict()} for m, s in run.overall.items()]
    doc = {
        "schema": METRICS_SCHEMA,
        "version": METRICS_VERSION,
        "created_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "mode": run.mode,
        "complete": complete,
        "wall_s": run.wall_s,
        "load_s": run.load_s,
        "options": run.options.to_dict(),
        "models": run.models,
        "bags": run.bags,
        "results": results,
        "by_condition": by_condition,
        "overall": overall,
        "error_vs_distance": _curves(run),
        "frames": run.frames,
        "errors": run.errors,
    }
    if run.extra:
        doc.update(run.extra)
    return _clean(doc)


def write_metrics(run: Any, out_dir: Path, *, complete: bool = False) -> Path:
    """Write ``metrics.json`` atomically; returns its path."""
    path = Path(out_dir) / METRICS_FILE
    atomic_write_bytes(path, (json.dumps(metrics_document(run, complete=complete), indent=1) + "\n").encode())
    return path


# ---------------------------------------------------------------------------------------- markdown
def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        if not math.isfinite(value):
            return "–"
        return f"{value:.{digits}f}"
    return str(value)


_TABLE_KEYS = ("abs_rel", "sq_rel", "rmse", "rmse_log", "log_10", "silog", "a1", "a2", "a3")


def _metric_table(rows: list[dict[str, Any]], labels: tuple[str, ...]) -> list[str]:
    head = list(labels) + ["frames", "no GT"] + [k for k in _TABLE_KEYS] + ["bF1", "coverage"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        m = row.get("metrics") or {}
        cells = [str(row[label]) for label in labels] + [str(row["frames_scored"]), str(row["frames_without_gt"])]
        cells += [_fmt(m.get(k)) for k in _TABLE_KEYS]
        cells += [_fmt(row.get("boundary_f1")), _fmt(row.get("coverage"))]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _report_lines(doc: dict[str, Any], pictures: dict[str, Any]) -> list[str]:
    opts = doc["options"]
    lines = [
        "# monother eval report",
        "",
        f"Mode **{doc['mode']}**, {len(doc['bags'])} bag(s), {len(doc['models'])} model(s), "
        f"wall time {doc['wall_s']:.1f} s (+ {doc.get('load_s') or 0.0:.1f} s loading models), created "
        f"{doc['created_utc']}.",
        "",
        f"Ground truth: {opts['gt_source']} on `{opts['gt_topic']}` (stamp tolerance "
        f"{opts['tolerance_ns'] / 1e6:g} ms); range ({opts['min_depth']:g}, {opts['max_depth']:g}) m; alignment "
        f"`{opts['align']}` (in depth space); every {opts['every']} frame(s)"
        + (f", at most {opts['max_frames']} per bag" if opts["max_frames"] else "") + ".",
        "",
        "Metrics are per-frame means (MonoTher / ZoeDepth protocol: predictions clamped to the range, pixels "
        "with GT inside the range and a finite prediction). AbsRel, SqRel, RMSE (m), RMSE-log, log10, SILog "
        "(x100): lower is better; a1-a3 (delta < 1.25^k) and bF1 (Depth Pro boundary F1, dense GT only): "
        "higher is better. coverage = share of GT pixels with a finite prediction.",
        "",
        "## Models",
        "",
        "| model | status | path | backend | input | confidence | hash |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, m in doc["models"].items():
        lines.append(f"| {name} | {m.get('status')} | `{m.get('path')}` | {m.get('backend', '–')} | "
                     f"{'x'.join(str(v) for v in m.get('input_hw', [])) or '–'} | {m.get('has_confidence', '–')} | "
                     f"{str(m.get('model_hash', '–'))[:12]} |")
    lines += ["", "## Bags", "", "| bag | condition (source) | duration s | thermal msgs | frames read | status |",
              "|---|---|---|---|---|---|"]
    for name, b in doc["bags"].items():
        status = b.get("status", "?") + (" (partial)" if b.get("partial") else "")
        lines.append(f"| {name} | {b.get('condition', '–')} ({b.get('condition_source', '–')}) | "
                     f"{_fmt(b.get('duration_s'), 2)} | {b.get('thermal_messages', '–')} | "
                     f"{b.get('frames_read', '–')} | "
                     f"{status} |")
    lines += ["", "## Results per model x bag", ""] + _metric_table(doc["results"], ("model", "bag", "condition"))
    lines += ["", "## Per condition", ""] + _metric_table(doc["by_condition"], ("model", "condition"))
    lines += ["", "## Overall", ""] + _metric_table(doc["overall"], ("model",))
    if opts["align"] != "none":
        lines += ["", f"Per-frame `{opts['align']}` alignment scale applied to the predictions "
                      "(1 = metric already):", ""]
        for row in doc["overall"]:
            st = row.get("scale")
            if st:
                lines.append(f"- {row['model']}: mean {st['mean']:.3f}, median {st['p50']:.3f}, p95 {st['p95']:.3f}")
    # Distance bins.
    lines += ["", "## Per distance bin (pixels pooled over frames)", ""]
    if doc["overall"]:
        edges = [b["range_m"] for b in doc["overall"][0]["bins"]]
        head = ["model", "metric"] + [f"{lo:g}-{hi:g} m" for lo, hi in edges]
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for row in doc["overall"]:
            for key in ("abs_rel", "rmse", "a1"):
                cells = [row["model"], key] + [_fmt((b["metrics"] or {}).get(key)) for b in row["bins"]]
                lines.append("| " + " | ".join(cells) + " |")
            lines.append("| " + " | ".join([row["model"], "pixels"] + [str(b["pixels"]) for b in row["bins"]]) + " |")
    # Timing.
    lines += ["", "## Timing (ms per frame)", "", "| model | stage | mean | p50 | p95 | max | n |",
              "|---|---|---|---|---|---|---|"]
    for row in doc["overall"]:
        for key, st in row["timing_ms"].items():
            if st:
                lines.append(f"| {row['model']} | {key} | {st['mean']:.2f} | {st['p50']:.2f} | {st['p95']:.2f} | "
                             f"{st['max']:.2f} | {st['n']} |")
    bag_s = sum(b.get("duration_s") or 0.0 for b in doc["bags"].values())
    if doc["wall_s"] > 0 and bag_s > 0:
        lines += ["", f"Bag time {bag_s:.2f} s evaluated in {doc['wall_s']:.2f} s wall: "
                      f"{bag_s / doc['wall_s']:.2f}x real time (all models, every {opts['every']} frame(s))."]
    if doc.get("live"):
        lines += ["", "## Live replay", "", "| model | thermal published | depth received | dropped | output Hz | "
                  "input Hz | latency mean ms | latency p95 ms |", "|---|---|---|---|---|---|---|---|"]
        for name, lv in doc["live"].items():
            lat = lv.get("latency_ms") or {}
            lines.append(f"| {name} | {lv['published']} | {lv['received']} | {lv['dropped']} | "
                         f"{_fmt(lv.get('output_rate_hz'), 2)} | {_fmt(lv.get('input_rate_hz'), 2)} | "
                         f"{_fmt(lat.get('mean'), 1)} | {_fmt(lat.get('p95'), 1)} |")
    if pictures:
        lines += ["", "## Pictures", ""]
        for title, rel in pictures.items():
            lines += [f"### {title}", "", f"![{title}]({rel})", ""]
    if doc["errors"]:
        lines += ["", "## Problems", ""] + [f"- {e}" for e in doc["errors"]]
    return lines


def write_report(doc: dict[str, Any], out_dir: Path, pictures: dict[str, str]) -> Path:
    path = Path(out_dir) / REPORT_FILE
    atomic_write_bytes(path, ("\n".join(_report_lines(doc, pictures)) + "\n").encode())
    return path


# ---------------------------------------------------------------------------------------- pictures
def _error_image(pred: np.ndarray, gt: np.ndarray, max_rel: float = 0.5) -> np.ndarray:
    """|pred - gt| / gt in [0, max_rel] as a red ramp; black where not scored."""
    from monother_ros.sim.preview import apply_colormap

    with np.errstate(invalid="ignore", divide="ignore"):
        rel = np.abs(pred - gt) / gt
    ramp = np.array([[20, 20, 20], [90, 40, 110], [200, 60, 60], [255, 200, 60], [255, 255, 255]], np.float32)
    ok = np.isfinite(rel)
    rgb = apply_colormap(np.where(ok, rel / max_rel, np.nan), ramp)
    return rgb


def _sparse_visible(depth_rgb: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """Dilate sparse (LiDAR) GT colours by one pixel so that they are visible at mosaic size."""
    valid = np.isfinite(gt)
    if valid.mean() > 0.3:
        return depth_rgb
    out = depth_rgb.copy()
    for dy, dx in ((0, 1), (1, 0), (1, 1), (0, -1), (-1, 0)):
        shifted = np.roll(np.roll(depth_rgb, dy, 0), dx, 1)
        sv = np.roll(np.roll(valid, dy, 0), dx, 1)
        fill = sv & ~valid
        out[fill] = shifted[fill]
    return out


def _mosaics(run: Any, out_dir: Path) -> dict[str, str]:
    from monother_ros.sim.preview import colorize_confidence, colorize_depth, colorize_thermal, mosaic, save_png

    pics: dict[str, str] = {}
    max_d = run.options.max_depth
    models = [m for m, d in run.models.items() if d.get("status") == "ok"]
    for bag, samples in run.samples.items():
        rows = []
        for sample in samples:
            row = [colorize_thermal(sample.thermal), _sparse_visible(colorize_depth(sample.gt, max_d), sample.gt)]
            for model in models:
                if model not in sample.outputs:
                    continue
                pred, conf = sample.outputs[model]
                row.append(colorize_depth(pred, max_d))
                row.append(_error_image(pred, sample.gt))
                if conf is not None:
                    row.append(colorize_confidence(conf))
            rows.append(row)
        if not rows:
            continue
        name = f"mosaic_{bag}.png"
        save_png(mosaic(rows, tile_width=256), Path(out_dir) / name)
        cols = ["thermal", "GT"] + [f"{m}: depth, |err|/gt (0-50 %), confidence (log, 1e-4 to 1)" for m in models]
        pics[f"Frames of {bag} ({' | '.join(cols)})"] = name
    return pics


def _plots(doc: dict[str, Any], out_dir: Path) -> dict[str, str]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        LOG.warning("matplotlib is not installed: no plots (pip install matplotlib)")
        return {}
    pics: dict[str, str] = {}
    curves = doc["error_vs_distance"]
    if curves:
        fig, ax = plt.subplots(1, 2, figsize=(11, 4))
        for model, c in curves.items():
            x = np.asarray(c["centers_m"])
            ax[0].plot(x, np.asarray(c["mean_abs_err_m"], dtype=float), marker=".", label=model)
            ax[1].plot(x, np.asarray(c["mean_abs_rel"], dtype=float), marker=".", label=model)
        ax[0].set(xlabel="ground-truth depth (m)", ylabel="mean |pred - gt| (m)", title="Absolute error vs distance")
        ax[1].set(xlabel="ground-truth depth (m)", ylabel="mean |pred - gt| / gt", title="AbsRel vs distance")
        for a in ax:
            a.grid(alpha=0.3)
            a.legend()
        fig.tight_layout()
        fig.savefig(Path(out_dir) / "error_vs_distance.png", dpi=100)
        plt.close(fig)
        pics["Error vs distance"] = "error_vs_distance.png"
    frames = [f for f in doc["frames"] if f.get("abs_rel") is not None]
    if frames:
        fig, ax = plt.subplots(figsize=(11, 4))
        bags = list(dict.fromkeys(f["bag"] for f in frames))
        for model in dict.fromkeys(f["model"] for f in frames):
            for bag in bags:
                sel = [f for f in frames if f["model"] == model and f["bag"] == bag]
                if not sel:
                    continue
                t0 = sel[0]["stamp_ns"]
                t = [(f["stamp_ns"] - t0) * 1e-9 for f in sel]
                label = model if len(bags) == 1 else f"{model} / {bag}"
                ax.plot(t, [f["abs_rel"] for f in sel], marker=".", label=label)
        ax.set(xlabel="time since the first scored frame (s)", ylabel="AbsRel", title="AbsRel over time")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
        fig.tight_layout()
        fig.savefig(Path(out_dir) / "abs_rel_over_time.png", dpi=100)
        plt.close(fig)
        pics["AbsRel over time"] = "abs_rel_over_time.png"
    return pics


def write_all(run: Any, out_dir: Path) -> dict[str, Path]:
    """``metrics.json`` (complete), pictures, ``report.md``; returns the paths written."""
    out_dir = Path(out_dir)
    metrics = write_metrics(run, out_dir, complete=True)
    doc = metrics_document(run, complete=True)
    pictures: dict[str, str] = {}
    try:
        if run.options.pictures:
            pictures.update(_mosaics(run, out_dir))
            pictures.update(_plots(doc, out_dir))
    except Exception as exc:  # a picture failing must not lose the numbers
        LOG.error("could not draw the pictures: %s: %s", type(exc).__name__, exc)
        run.errors.append(f"pictures failed: {type(exc).__name__}: {exc}")
        metrics = write_metrics(run, out_dir, complete=True)
        doc = metrics_document(run, complete=True)
    report = write_report(doc, out_dir, pictures)
    paths = {"metrics": metrics, "report": report}
    paths.update({k: out_dir / v for k, v in pictures.items()})
    return paths
