"""Training throughput (samples/s) at the default config on this CPU: one process vs two gloo processes.

    .venv/bin/python bench/bench_train.py [--frames 24] [--stage supervised] [--bag PATH]

Writes (or reuses) a simulated day bag, then trains one epoch of the shipped recipe (model
``monother-default`` at 112x140, confidence width 16, global batch 4, stage 1 with full distillation) twice on the
same data: once in one process using every core (``threads`` = CPU count), once as two gloo processes
(torchrun semantics, each with CPU count / 2 threads, per-rank batch 2). Throughput is the epoch's
samples / s from the run's ``metrics.jsonl`` (training steps only: data decoding, validation and
checkpoints excluded). Prints both and the ratio (two processes / one). On a CPU shared with other
work, compare with ``--single-threads 1 --skip-ddp`` (one process, one thread): OpenMP threads of one
process wait for each other at every op, which costs most when cores are oversubscribed.
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _overrides(args, out: Path, threads: int) -> list[str]:
    return [
        f"train_data=[{args.bag}]", f"out_dir={out}", f"model={args.model}", f"stage={args.stage}",
        "distillation=full", "epochs=1", "batch_size=4", f"max_frames_per_source={args.frames}",
        f"threads={threads}", "device=cpu", f"cache_dir={out.parent / 'cache'}",
        f"input_size=[{args.input_size.replace('x', ',')}]", f"confidence_width={args.confidence_width}",
    ]


def _worker(rank: int, world: int, port: int, overrides: list[str]) -> None:
    os.environ.update({"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(world),
                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
    from training.config import load_config
    from training.train import run

    run(load_config(None, overrides), progress=False)


def _epoch_rate(out: Path) -> float:
    lines = (out / "metrics.jsonl").read_text().splitlines()
    return float(json.loads(lines[-1])["samples_per_s"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bag", help="existing bag (default: simulate one under the work folder)")
    parser.add_argument("--frames", type=int, default=24, help="training pairs (multiple of 4)")
    parser.add_argument("--model", default="monother-default")
    parser.add_argument("--stage", default="supervised", choices=("supervised", "label_free"))
    # Defaults: the shipped model's recipe (scripts/train_default_model.sh).
    parser.add_argument("--input-size", default="112x140", help="network input HxW (multiples of 14)")
    parser.add_argument("--confidence-width", type=int, default=16, help="confidence U-Net base width")
    parser.add_argument("--work", default=None, help="work folder (default: a temporary one)")
    parser.add_argument("--single-threads", type=int, default=0, help="threads of the one-process run (default: all cores)")
    parser.add_argument("--skip-ddp", action="store_true", help="only the one-process run")
    args = parser.parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix="bench_train_"))
    work.mkdir(parents=True, exist_ok=True)
    if not args.bag:
        from monother_ros.sim.bag import write_bag

        args.bag = str(work / "day_bag")
        if not Path(args.bag).exists():
            t = time.perf_counter()
            write_bag(args.bag, seconds=args.frames / 30.0 + 0.2, seed=11, scenario="day", family="urban", preview=False)
            print(f"simulated {args.bag} in {time.perf_counter() - t:.1f} s")
    cores = os.cpu_count() or 1
    import torch.multiprocessing as mp

    from training.config import load_config
    from training.train import run

    # Decode once into the cache so neither timed run pays for it.
    threads = args.single_threads or cores
    single_out = work / f"single{threads}"
    t = time.perf_counter()
    run(load_config(None, _overrides(args, single_out, threads)), progress=False)
    single = _epoch_rate(single_out)
    print(f"1 process, {threads} thread(s): {single:.3f} samples/s (run {time.perf_counter() - t:.1f} s)")
    if args.skip_ddp:
        return 0
    ddp_out = work / "ddp2"
    t = time.perf_counter()
    mp.spawn(_worker, args=(2, _free_port(), _overrides(args, ddp_out, max(cores // 2, 1))), nprocs=2, join=True)
    ddp = _epoch_rate(ddp_out)
    print(f"2 gloo processes, {max(cores // 2, 1)} thread(s) each: {ddp:.3f} samples/s (run {time.perf_counter() - t:.1f} s)")
    print(json.dumps({"model": args.model, "stage": args.stage, "batch": 4, "frames": args.frames, "cores": cores,
                      "single_samples_per_s": round(single, 4), "gloo2_samples_per_s": round(ddp, 4),
                      "ratio_gloo2_over_single": round(ddp / single, 3)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
