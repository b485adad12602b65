"""How the CLIP loss scales with the batch: time and peak memory of forward + backward, by batch size N.

    python benchmarks/clip_loss_scaling.py [--threads 2] [--max-n 16384] [--run-limit-s 40]

Four implementations of the same loss, D = 512 features, N = 1024, 2048, ... doubling:

- ``naive``: :func:`mmcourse.losses.clip_loss`, the (N, N) logits and both cross-entropies;
- ``open_clip``: ``open_clip.loss.ClipLoss()`` (the same algorithm; the oracle of the course's tests);
- ``chunked``: ``fused_clip_loss(..., backend="torch")``, chunks of rows, recomputed in backward;
- ``triton``: ``fused_clip_loss(..., backend="triton")``, tiles in registers (only with a CUDA GPU).

bf16 features on a GPU, fp32 on the CPU. A method stops at the first N whose predicted time (the last
time times 4: the work grows like N^2) exceeds ``--run-limit-s`` or whose predicted peak memory (the
last peak times 4) exceeds half of the free memory, or when it runs out of GPU memory.

Peak memory is the increase over the memory in use just before the step (the inputs): on a GPU
``torch.cuda.max_memory_allocated``; on the CPU the high-water mark of the resident size (VmHWM, reset
through /proc/self/clear_refs), with glibc told to give every freed block of 64 KiB or more back to the
system so that the mark follows the live tensors. On a GPU it also reports the share of the chip's
dense bf16 peak that the fused kernel reaches, counting 8 N^2 D FLOPs for forward + backward (one
N x N x D matmul forward, three backward; the kernel itself does 10 N^2 D, since it recomputes the
logits in both backward passes).

Writes benchmarks/results/clip_loss_scaling_{cpu,cuda}.md and .json.
"""

from __future__ import annotations

import argparse
import ctypes
import datetime
import json
import os
import platform
import re
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from mmcourse.kernels import fused_clip_loss
from mmcourse.losses import clip_loss

RESULTS = Path(__file__).parent / "results"

# Dense bf16 tensor-core peak with fp32 accumulation, TFLOP/s, from the vendors' spec sheets.
BF16_PEAK_TFLOPS = {
    "H200": 989.4,
    "H100 80GB HBM3": 989.4,
    "H100 NVL": 835.0,
    "H100 PCIe": 756.0,
    "A100": 312.0,
    "L40S": 362.0,
    "L4": 121.0,
    "A10": 125.0,
}


# ------------------------------------------------------------------------------ the machine


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def gpu_peak_tflops(name: str) -> float | None:
    """The spec-sheet peak for a device name such as "NVIDIA H100 80GB HBM3"; None for unknown chips."""
    words = set(re.split(r"[\s\-_]+", name))
    for key, tflops in BF16_PEAK_TFLOPS.items():
        if set(key.split()) <= words:
            return tflops
    return None


def machine(device: torch.device, threads: int) -> dict:
    info = {
        "cpu": cpu_model(),
        "cpu_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "torch_threads": threads,
        "torch": torch.__version__,
        "python": platform.python_version(),
    }
    try:
        import triton

        info["triton"] = triton.__version__
    except ImportError:
        info["triton"] = None
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info["gpu"] = props.name
        info["gpu_memory_gib"] = round(props.total_memory / 2**30, 1)
        info["gpu_bf16_peak_tflops"] = gpu_peak_tflops(props.name)
    return info


# ------------------------------------------------------------------------------ memory


def _status(key: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith(key))


def _free_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    with open("/proc/meminfo") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable"))


class PeakMemory:
    """Peak bytes allocated during a ``with`` block, over what was in use when it began."""

    def __init__(self, device: torch.device):
        self.device = device

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.before = torch.cuda.memory_allocated(self.device)
        else:
            with open("/proc/self/clear_refs", "w") as f:  # VmHWM := VmRSS
                f.write("5")
            self.before = _status("VmRSS")
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak = torch.cuda.max_memory_allocated(self.device) - self.before
        else:
            self.peak = _status("VmHWM") - self.before
        return False


def release_freed_memory_at_once() -> None:
    """glibc: serve (and return on free) every block >= 64 KiB with mmap, so RSS follows live tensors."""
    try:
        ctypes.CDLL("libc.so.6").mallopt(-3, 64 * 1024)  # M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        pass


# ------------------------------------------------------------------------------ the runs


def methods(device: torch.device) -> dict[str, Callable]:
    out = {"naive": clip_loss}
    try:
        from open_clip.loss import ClipLoss

        open_clip_loss = ClipLoss()
        out["open_clip"] = lambda i, t, s: open_clip_loss(i, t, s)
    except ImportError:
        print("open_clip is not installed: skipping it")
    out["chunked"] = lambda i, t, s: fused_clip_loss(i, t, s, backend="torch")
    if device.type == "cuda":
        out["triton"] = lambda i, t, s: fused_clip_loss(i, t, s, backend="triton")
    return out


def step(fn: Callable, img: torch.Tensor, txt: torch.Tensor, scale: torch.Tensor) -> float:
    img.grad = txt.grad = scale.grad = None
    loss = fn(img, txt, scale)
    loss.backward()
    return loss.item()  # waits for the GPU


def measure(fn, n: int, d: int, dtype: torch.dtype, device: torch.device, repeats: int) -> dict:
    g = torch.Generator().manual_seed(n)
    img = F.normalize(torch.randn(n, d, generator=g), dim=1).to(device, dtype).requires_grad_()
    txt = F.normalize(torch.randn(n, d, generator=g), dim=1).to(device, dtype).requires_grad_()
    scale = torch.tensor(1 / 0.07, device=device, requires_grad=True)  # CLIP's initial logit scale
    with PeakMemory(device) as mem:  # also the warm-up (Triton compiles here)
        start = time.perf_counter()
        loss = step(fn, img, txt, scale)
        first = time.perf_counter() - start
    times = [first]
    if device.type == "cuda" or first < 2.0:  # big CPU runs: the first run is the measurement
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            step(fn, img, txt, scale)
            times.append(time.perf_counter() - start)
    return {"time_s": min(times), "runs": len(times), "peak_bytes": mem.peak, "loss": loss}


def run(args) -> dict:
    device = torch.device("cuda" if torch.cuda.is_available() and not args.cpu else "cpu")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    torch.set_num_threads(args.threads)
    if device.type == "cpu":
        release_freed_memory_at_once()
    records = []
    load_before = os.getloadavg()[0]
    for name, fn in methods(device).items():
        last = None
        n = args.min_n
        while n <= args.max_n:
            if last is not None:
                grow = (n / last["n"]) ** 2
                if last["time_s"] * grow > args.run_limit_s:
                    records.append(dict(method=name, n=n, status=f"skipped: predicted {last['time_s'] * grow:.0f} s"))
                    break
                if last["peak_bytes"] * grow > 0.5 * _free_bytes(device):
                    predicted = last["peak_bytes"] * grow / 2**30
                    records.append(dict(method=name, n=n, status=f"skipped: predicted {predicted:.1f} GiB"))
                    break
            try:
                result = measure(fn, n, args.d, dtype, device, args.repeats)
            except torch.cuda.OutOfMemoryError:
                torch.cuda.empty_cache()
                records.append(dict(method=name, n=n, status="out of memory"))
                break
            last = dict(method=name, n=n, status="ok", **result)
            records.append(last)
            print(f"{name:>9}  N={n:>6}  {result['time_s'] * 1e3:9.1f} ms  {result['peak_bytes'] / 2**20:8.0f} MiB"
                  f"  loss {result['loss']:.4f}", flush=True)
            n *= 2
            if device.type == "cuda":
                torch.cuda.empty_cache()
    info = machine(device, args.threads)
    if args.peak_tflops:
        info["gpu_bf16_peak_tflops"] = args.peak_tflops
    info["load_average_1min"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]  # at start, at end
    for r in records:
        if r["status"] == "ok":
            r["tflops_8n2d"] = 8 * r["n"] ** 2 * args.d / r["time_s"] / 1e12
            if info.get("gpu_bf16_peak_tflops"):
                r["fraction_of_bf16_peak"] = r["tflops_8n2d"] / info["gpu_bf16_peak_tflops"]
    return {
        "benchmark": "clip_loss_scaling",
        "date": datetime.date.today().isoformat(),
        "command": "python benchmarks/clip_loss_scaling.py " + " ".join(args.argv),
        "device": device.type,
        "dtype": str(dtype).removeprefix("torch."),
        "d": args.d,
        "machine": info,
        "records": records,
    }


# ------------------------------------------------------------------------------ the report


def _cell(r: dict | None, what: str) -> str:
    if r is None:
        return ""
    if r["status"] != "ok":
        return r["status"] if what == "time" else ""
    if what == "time":
        return f"{r['time_s'] * 1e3:,.0f} ms" if r["time_s"] >= 0.1 else f"{r['time_s'] * 1e3:.1f} ms"
    if what == "peak":
        return f"{r['peak_bytes'] / 2**20:,.0f} MiB"
    return f"{100 * r['fraction_of_bf16_peak']:.0f} %" if "fraction_of_bf16_peak" in r else ""


def markdown(report: dict) -> str:
    m = report["machine"]
    names = list(dict.fromkeys(r["method"] for r in report["records"]))
    ns = sorted({r["n"] for r in report["records"]})
    by = {(r["method"], r["n"]): r for r in report["records"]}
    where = f"{m['cpu']}, {m['cpu_cores']} cores, {m['torch_threads']} torch threads"
    if report["device"] == "cuda":
        where = f"{m['gpu']} ({m['gpu_memory_gib']} GiB); host {where}"
    header = ["N"] + [f"{name} {what}" for name in names for what in ("time", "peak")]
    if "triton" in names:
        header.append("triton, share of bf16 peak (8 N²D)")
    rows = []
    for n in ns:
        cells = [f"{n:,}"] + [_cell(by.get((name, n)), what) for name in names for what in ("time", "peak")]
        if "triton" in names:
            cells.append(_cell(by.get(("triton", n)), "fraction"))
        rows.append("| " + " | ".join(cells) + " |")
    lines = [
        f"CLIP loss, forward + backward, D = {report['d']}, {report['dtype']} (`{report['command']}`, {report['date']})",
        f"Machine: {where}; torch {m['torch']}, triton {m['triton']}; 1-minute load average "
        f"{m['load_average_1min'][0]} at the start, {m['load_average_1min'][1]} at the end (above the thread count: "
        "other processes competed for the cores, and the times are pessimistic)",
        "",
        "| " + " | ".join(header) + " |",
        "|" + " --- |" * len(header),
        *rows,
        "",
        "Time: best of the runs after a warm-up (a single run where it takes over 2 s on the CPU). Peak: memory "
        "allocated during the step beyond the inputs (GPU: max_memory_allocated; CPU: the high-water mark of "
        "the resident size). A method stops where its predicted time or memory (x4 per doubling) exceeds the limits.",
    ]
    if report["device"] != "cuda":
        lines.append("No CUDA GPU on this machine: the Triton kernel and the GPU columns were not measured.")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    import sys

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--d", type=int, default=512)
    parser.add_argument("--min-n", type=int, default=1024)
    parser.add_argument("--max-n", type=int, default=None, help="default: 16384 on the CPU, 131072 on a GPU")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--run-limit-s", type=float, default=None, help="default: 40 on the CPU, 10 on a GPU")
    parser.add_argument("--peak-tflops", type=float, default=None, help="the GPU's dense bf16 peak, if not in the table")
    parser.add_argument("--cpu", action="store_true", help="measure the CPU even where a GPU is present")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    args.argv = sys.argv[1:] if argv is None else argv
    on_gpu = torch.cuda.is_available() and not args.cpu
    args.max_n = args.max_n or (131072 if on_gpu else 16384)
    args.run_limit_s = args.run_limit_s or (10.0 if on_gpu else 40.0)
    report = run(args)
    table = markdown(report)
    print(table)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = f"clip_loss_scaling_{report['device']}"
    (args.out / f"{stem}.md").write_text(table)
    (args.out / f"{stem}.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out / stem}.md and .json")


if __name__ == "__main__":
    main()
