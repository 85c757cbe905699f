"""Benchmark the simulated rig: per-frame render times and the wall time to write a bag.

    .venv/bin/python bench/bench_sim.py                      # 10 s day/urban bag (300 thermal + 200 RGB)
    .venv/bin/python bench/bench_sim.py --seconds 2 --scenario night --family campus --workers 0

Prints render times per sensor (single process), then the bag's total wall time, CPU time (this
process + rendering workers), frames per second and the load average before / after (other processes
sharing the CPU slow the figure down: report it with the load).
"""
from __future__ import annotations

import argparse
import os
import resource
import shutil
import tempfile
import time
from pathlib import Path


def _cpu_seconds() -> tuple[float, float]:
    """CPU seconds of (this process, reaped children: the rendering workers)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime, children.ru_utime + children.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--scenario", default="day")
    parser.add_argument("--family", default="urban")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=None, help="rendering processes (default: up to 2)")
    parser.add_argument("--frames", type=int, default=5, help="frames per sensor for the render timing")
    parser.add_argument("--storage", default="mcap")
    args = parser.parse_args()

    from monother_ros.sim.bag import write_bag
    from monother_ros.sim.rig import SimRig

    rig = SimRig(args.seed, args.scenario, args.family)
    rig.render_thermal(0.0)  # warm-up: scene segments, caches
    rig.render_rgb(0.0)
    print(f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    for name, fn in (("thermal 640x512", rig.render_thermal), ("rgb 1280x720", rig.render_rgb),
                     ("lidar 16x1800", rig.lidar_scan)):
        t0, c0 = time.perf_counter(), time.process_time()
        for k in range(args.frames):
            fn(0.1 + 0.05 * k)
        wall = (time.perf_counter() - t0) / args.frames
        cpu = (time.process_time() - c0) / args.frames
        print(f"{name:16s} {1000 * wall:7.1f} ms/frame wall, {1000 * cpu:7.1f} ms CPU  ({1 / wall:5.1f} frames/s)")

    out_dir = Path(tempfile.mkdtemp(prefix="bench_sim_"))
    try:
        cpu0, t0 = _cpu_seconds(), time.perf_counter()
        summary = write_bag(out_dir / "bag", seconds=args.seconds, seed=args.seed, scenario=args.scenario,
                            family=args.family, storage=args.storage, workers=args.workers)
        wall = time.perf_counter() - t0
        cpu1 = _cpu_seconds()
        cpu_main, cpu_workers = cpu1[0] - cpu0[0], cpu1[1] - cpu0[1]
        size = sum(f.stat().st_size for f in (out_dir / "bag").rglob("*") if f.is_file())
    finally:
        shutil.rmtree(out_dir, ignore_errors=True)
    n_th = summary.counts["/thermal/image_raw"]
    n_rgb = summary.counts["/rgb/image_raw"]
    n_li = summary.counts["/lidar/points"]
    print(f"bag {args.seconds:g} s {args.scenario}/{args.family} ({args.storage}): {n_th} thermal + {n_rgb} RGB "
          f"+ {n_th} GT depth + {n_li} LiDAR, {size / 1e6:.0f} MB")
    print(f"total {wall:.1f} s wall, CPU {cpu_main + cpu_workers:.1f} s (writer process {cpu_main:.1f} s, rendering "
          f"workers {cpu_workers:.1f} s); {(n_th + n_rgb) / wall:.1f} camera frames/s; "
          f"{'PASS' if wall < 60 * args.seconds / 10 else 'SLOWER THAN'} the 60 s per 10 s target")
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
