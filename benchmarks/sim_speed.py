"""Generation rate of maximask.sim frames (wall and CPU time per frame, one process, one thread).

Usage: OMP_NUM_THREADS=1 nice -n 10 python benchmarks/sim_speed.py [--sizes 256 512 1024] [--n 30]
CPU time is reported beside wall time because the shared machine is often oversubscribed.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from maximask.sim import simulate_frame, simulate_tracking_frame


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--sizes", type=int, nargs="+", default=[256, 512, 1024])
    ap.add_argument("--n", type=int, default=30)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    print("| frames | size | n | wall median (s) | CPU median (s) | CPU p90 (s) | frames/s (CPU) |")
    print("|---|---|---|---|---|---|---|")
    for kind, fn in (("masking", simulate_frame), ("tracking", simulate_tracking_frame)):
        for size in a.sizes:
            n = max(3, a.n * 256 * 256 // (size * size)) if size > 256 else a.n
            rng = np.random.default_rng(a.seed)
            wall, cpu = [], []
            for _ in range(n):
                w0, c0 = time.perf_counter(), time.process_time()
                fn((size, size), rng)
                wall.append(time.perf_counter() - w0)
                cpu.append(time.process_time() - c0)
            print(f"| {kind} | {size} | {n} | {np.median(wall):.3f} | {np.median(cpu):.3f} | {np.percentile(cpu, 90):.3f} | {len(cpu) / np.sum(cpu):.1f} |")


if __name__ == "__main__":
    main()
