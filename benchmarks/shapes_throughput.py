"""Throughput of the shapes world generator (images per second) for common settings.

    python benchmarks/shapes_throughput.py [--n 20000] [--threads 2]

Prints a Markdown table and writes it to benchmarks/results/shapes_throughput.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import torch

from mmcourse.data import make_shapes

SETTINGS = [
    ("32x32, photo, 1 object (default)", dict(size=32)),
    ("32x32, sketch, 1 object", dict(size=32, style="sketch")),
    ("32x32, photo/sketch/flat/cartoon mix, 1-3 objects", dict(size=32, style=("photo", "sketch", "flat", "cartoon"), objects=(1, 3))),
    ("16x16, photo, 1 object", dict(size=16)),
    ("64x64, photo, 1 object", dict(size=64)),
]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=20000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    make_shapes(256, seed=0)  # warm up
    rows = []
    for name, kwargs in SETTINGS:
        times = []
        for r in range(args.repeats):
            start = time.perf_counter()
            make_shapes(args.n, seed=r, **kwargs)
            times.append(time.perf_counter() - start)
        best = min(times)
        rows.append(f"| {name} | {args.n} | {best:.2f} s | {args.n / best:,.0f} |")
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, {args.threads} threads"
    table = "\n".join(
        [
            f"Shapes world throughput (best of {args.repeats}; images, captions and attributes; `{' '.join(['python', 'benchmarks/shapes_throughput.py', '--n', str(args.n), '--threads', str(args.threads)])}`)",
            f"Machine: {machine}",
            "",
            "| setting | images | time | images/s |",
            "| --- | --- | --- | --- |",
            *rows,
        ]
    )
    print(table)
    out = Path(__file__).parent / "results" / "shapes_throughput.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(table + "\n")


if __name__ == "__main__":
    main()
