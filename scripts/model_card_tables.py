#!/usr/bin/env python3
"""Markdown tables for engines/default/MODEL_CARD.md from a `train_default_model.sh` run folder.

Reads what the script's `eval` phase wrote (``eval/metrics.json``, ``eval_day/metrics.json``,
``confidence*/confidence.json``, ``timings.txt``) and prints the card's tables, so no figure is copied by
hand. Usage::

    .venv/bin/python scripts/model_card_tables.py runs/default_model
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

METRICS = ("abs_rel", "sq_rel", "rmse", "rmse_log", "log_10", "silog", "a1", "a2", "a3")
HEADER = ("AbsRel", "SqRel", "RMSE (m)", "RMSE log", "log10", "SILog", "delta1", "delta2", "delta3")
ROWS = {"no_distillation": "(a) no distillation (stage-1 student)", "no_confidence": "(b) distillation without confidence",
        "full": "(c) full (shipped)", "stage1": "stage-1 student"}


def overall_table(metrics_json: Path) -> str:
    doc = json.loads(metrics_json.read_text())
    lines = ["| row | frames | " + " | ".join(HEADER) + " |", "|---|---|" + "---|" * len(HEADER)]
    for row in doc["overall"]:
        m = row["metrics"]
        lines.append(f"| {ROWS.get(row['model'], row['model'])} | {row['frames_scored']} | "
                     + " | ".join(f"{m[k]:.4f}" for k in METRICS) + " |")
    return "\n".join(lines)


def bins_table(metrics_json: Path) -> str:
    doc = json.loads(metrics_json.read_text())
    first = doc["overall"][0]["bins"]
    ranges = [f"{b['range_m'][0]:g}-{b['range_m'][1]:g} m" for b in first]
    lines = ["| row | " + " | ".join(f"AbsRel {r}" for r in ranges) + " | share of pixels |",
             "|---|" + "---|" * (len(ranges) + 1)]
    total = sum(b["pixels"] for b in first)
    shares = " / ".join(f"{100 * b['pixels'] / total:.0f} %" for b in first)
    for row in doc["overall"]:
        lines.append(f"| {ROWS.get(row['model'], row['model'])} | "
                     + " | ".join(f"{b['metrics']['abs_rel']:.3f}" for b in row["bins"]) + f" | {shares} |")
    return "\n".join(lines)


def confidence_line(confidence_json: Path) -> str:
    c = json.loads(confidence_json.read_text())
    return (f"AbsRel all pixels {c['abs_rel_all']:.3f}; most confident {int(100 * c['keep_fraction'])} % "
            f"**{c['abs_rel_most_confident']:.3f}**; least confident {c['abs_rel_least_confident']:.3f}; "
            f"Spearman(confidence, relative error) {c['spearman_conf_vs_error']:+.3f}, with the metric error "
            f"{c['spearman_conf_vs_abs_err_m']:+.3f}; gap to the oracle curve (AUSE-like) {c['ause']:.3f} "
            f"({c['frames']} frames, {c['pixels']} pixels)")


def timing_line(metrics_json: Path, model: str = "full") -> str:
    doc = json.loads(metrics_json.read_text())
    row = next(r for r in doc["overall"] if r["model"] == model)
    t = row["timing_ms"]
    return (f"inference {t['inference_ms']['p50']:.1f} ms, with pre/post-processing {t['total_ms']['p50']:.1f} ms "
            f"(median of {t['total_ms']['n']} frames)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run", help="the script's work folder (W), e.g. runs/default_model")
    args = parser.parse_args(argv)
    run = Path(args.run)
    print("### Held-out night bag\n" + overall_table(run / "eval" / "metrics.json") + "\n")
    print("### Per distance bin\n" + bins_table(run / "eval" / "metrics.json") + "\n")
    if (run / "eval_day" / "metrics.json").is_file():
        print("### Stage-1 domain check (urban/day)\n" + overall_table(run / "eval_day" / "metrics.json") + "\n")
    for name in ("confidence", "confidence_stage1"):
        if (run / name / "confidence.json").is_file():
            print(f"### {name}\n" + confidence_line(run / name / "confidence.json") + "\n")
    print("### Timing (shipped model)\n" + timing_line(run / "eval" / "metrics.json") + "\n")
    if (run / "timings.txt").is_file():
        print("### Training wall time\n" + (run / "timings.txt").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
