"""Quality and speed of the bundled text-to-image model ``diffusion_shapes`` (notebook 08).

    python benchmarks/diffusion_quality.py [--threads 2] [--per-caption 16] [--seed 31337]

* **guidance sweep**: for w in 0, 1, 1.5, 2, 3, 3.5, 4.5, 6.5 (diffusers' guidance_scale 1 + w), DDPM
  with 50 steps (the default of ``mmcourse.diffusion.sample``), ``--per-caption`` samples of "a {colour} {shape}" for eight pairs that cover every
  colour and every shape once; fidelity = how often the independent ``attributes_shapes`` classifier
  (trained on real images only) reads the colour, the shape, and both; diversity = the per-pixel
  standard deviation across the samples of one caption. The same scores for real images of the
  training distribution, and for samples of the eight held-out pairs (never seen in training).
* **the issue's bar** (issue 8, section 3), checked on these numbers: at w = 3 colour-and-shape
  accuracy >= 0.7 and >= 0.10 above w = 0 (or >= 0.9 at both); diversity strictly decreasing in w;
  diversity at w = 0 close to the real images' (reported as a ratio).
* **samplers**: DDIM (eps recomputed from the clipped x0_hat, the package's default, and as predicted,
  the paper's form) and DDPM at several step counts, w = 3: seconds per image (a batch of 32) and
  colour-and-shape accuracy.

The seed differs from the one the card's numbers were measured with, so the two are independent
measurements. Writes benchmarks/results/diffusion_quality.{json,md}.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import time
from pathlib import Path

import torch

import mmcourse
from mmcourse import diffusion as D
from mmcourse import fidelity, pretrained

RESULTS = Path(__file__).parent / "results"
WEIGHTS = (0.0, 1.0, 1.5, 2.0, 3.0, 3.5, 4.5, 6.5)
SAMPLERS = (("ddim", D.ddim_step_clipped, 10), ("ddim", D.ddim_step_clipped, 25), ("ddim", D.ddim_step_clipped, 50),
            ("ddim", D.ddim_step_clipped, 100), ("ddim, eps as predicted", D.ddim_step_clipped_x0_only, 50),
            ("ddpm", D.ddpm_step, 10), ("ddpm", D.ddpm_step, 50), ("ddpm", D.ddpm_step, 250), ("ddpm", D.ddpm_step, 1000))


def bar(sweep: dict[float, dict], real: dict) -> dict:
    """The issue's quality targets, evaluated on a sweep (keys: w as floats)."""
    w0, w3 = sweep[0.0]["both"], sweep[3.0]["both"]
    ws = sorted(sweep)
    div = [sweep[w]["diversity"] for w in ws]
    return {
        "both_w0": w0,
        "both_w3": w3,
        "w3_at_least_0.7": w3 >= 0.7,
        "w3_gain_at_least_0.10_or_both_at_least_0.9": (w3 - w0 >= 0.10) or (w0 >= 0.9 and w3 >= 0.9),
        "diversity_strictly_decreasing": all(a > b for a, b in zip(div, div[1:])),
        "diversity_w0_over_real": round(sweep[0.0]["diversity"] / real["diversity"], 3),
    }


def sampler_table(model, per_caption: int, seed: int, classifier) -> list[dict]:
    pairs = fidelity.eval_pairs()
    captions = fidelity.eval_captions(per_caption=per_caption)
    rows = []
    for sampler, step, steps in SAMPLERS:
        start = time.perf_counter()
        x = D.sample(model, captions, guidance_scale=3.0, steps=steps, seed=seed, step=step).cpu()
        seconds = time.perf_counter() - start
        score = fidelity.score_images(x.view(len(pairs), per_caption, *x.shape[1:]), pairs, classifier)
        rows.append({"sampler": sampler, "steps": steps, "ms_per_image": round(1000 * seconds / len(x), 1), **score})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--per-caption", type=int, default=16)
    parser.add_argument("--seed", type=int, default=31337)
    args = parser.parse_args()
    mmcourse.start(0, threads=args.threads, quiet=True)
    load_start = os.getloadavg()[0]
    model = pretrained.load("diffusion_shapes")
    info = pretrained.card("diffusion_shapes")
    classifier = pretrained.load("attributes_shapes")
    style = info["metrics"]["recipe"]["style"]

    start = time.perf_counter()
    sweep = fidelity.evaluate_guidance(model, classifier, WEIGHTS, per_caption=args.per_caption, steps=50, seed=args.seed)
    heldout = fidelity.evaluate_guidance(model, classifier, (0.0, 3.0), per_caption=args.per_caption, steps=50, seed=args.seed, heldout=True)
    real = fidelity.real_reference(classifier, per_caption=args.per_caption, seed=args.seed, style=style, size=model.image_size)
    real_heldout = fidelity.real_reference(classifier, per_caption=args.per_caption, seed=args.seed, style=style, size=model.image_size,
                                    heldout=True)
    sweep_seconds = time.perf_counter() - start
    samplers = sampler_table(model, max(2, 3 * args.per_caption // 4), args.seed, classifier)
    speed = fidelity.sampling_time(model, n=32, steps=50)
    result = {
        "command": f"python benchmarks/diffusion_quality.py --threads {args.threads} --per-caption {args.per_caption} "
                   f"--seed {args.seed}",
        "date": datetime.date.today().isoformat(),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, {args.threads} torch threads, torch {torch.__version__}",
        "load_average": [round(load_start, 2), round(os.getloadavg()[0], 2)],
        "checkpoint_sha256": info["sha256"],
        "image_size": model.image_size,
        "per_caption": args.per_caption,
        "guidance": {f"{w:g}": s for w, s in sweep.items()},
        "heldout_pairs": {f"{w:g}": s for w, s in heldout.items()},
        "real_images": real,
        "real_images_heldout_pairs": real_heldout,
        "bar": bar(sweep, real),
        "sweep_seconds": round(sweep_seconds, 1),
        "samplers_at_w3": samplers,
        "sampling_seconds_per_image": speed,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "diffusion_quality.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS.parent.parent / "assets" / "results" / "diffusion_quality.json").write_text(json.dumps(result, indent=2) + "\n")  # shipped copy
    (RESULTS / "diffusion_quality.md").write_text(markdown(result))
    print(markdown(result))


def markdown(r: dict) -> str:
    lines = [
        f"diffusion_shapes quality (`{r['command']}`, {r['date']})",
        f"Machine: {r['machine']}; 1-minute load average {r['load_average'][0]} at the start, {r['load_average'][1]} at the end.",
        f"Checkpoint sha256 {r['checkpoint_sha256'][:12]}..., {r['image_size']} x {r['image_size']} images; "
        f"{r['per_caption']} samples per caption, 8 captions \"a {{colour}} {{shape}}\" (every colour and every shape once), "
        "DDPM 50 steps; judged by `attributes_shapes` (trained on real images only).",
        "",
        "| w | diffusers guidance_scale | colour | shape | colour and shape | diversity |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for w, s in r["guidance"].items():
        lines.append(f"| {w} | {1 + float(w):g} | {s['color']:.3f} | {s['shape']:.3f} | {s['both']:.3f} | {s['diversity']:.4f} |")
    real = r["real_images"]
    lines.append(f"| real images | | {real['color']:.3f} | {real['shape']:.3f} | {real['both']:.3f} | {real['diversity']:.4f} |")
    lines += ["", "Held-out pairs (never in training):", "", "| w | colour | shape | colour and shape | diversity |",
              "| --- | --- | --- | --- | --- |"]
    for w, s in r["heldout_pairs"].items():
        lines.append(f"| {w} | {s['color']:.3f} | {s['shape']:.3f} | {s['both']:.3f} | {s['diversity']:.4f} |")
    rh = r["real_images_heldout_pairs"]
    lines.append(f"| real images | {rh['color']:.3f} | {rh['shape']:.3f} | {rh['both']:.3f} | {rh['diversity']:.4f} |")
    b = r["bar"]
    lines += [
        "",
        "Issue 8's bar: " + "; ".join([
            f"colour-and-shape accuracy {b['both_w0']:.3f} at w = 0, {b['both_w3']:.3f} at w = 3 "
            f"(>= 0.7: {'yes' if b['w3_at_least_0.7'] else 'NO'}; +0.10 or both >= 0.9: "
            f"{'yes' if b['w3_gain_at_least_0.10_or_both_at_least_0.9'] else 'NO'})",
            f"diversity strictly decreasing in w: {'yes' if b['diversity_strictly_decreasing'] else 'NO'}",
            f"diversity at w = 0 / real images' = {b['diversity_w0_over_real']:.2f}",
        ]),
        "",
        f"Samplers at w = 3 ({max(2, 3 * r['per_caption'] // 4)} samples per caption):",
        "",
        "| sampler | steps | ms per image | colour and shape | diversity |",
        "| --- | --- | --- | --- | --- |",
    ]
    for row in r["samplers_at_w3"]:
        lines.append(f"| {row['sampler'].replace('ddim', 'DDIM').replace('ddpm', 'DDPM')} | {row['steps']} | {row['ms_per_image']:.1f} | {row['both']:.3f} | {row['diversity']:.4f} |")
    sp = r["sampling_seconds_per_image"]
    lines += [
        "",
        f"Sampling time per image (a batch of {sp['batch']}, {sp['sampler'].upper()} {sp['steps']} steps, {sp['threads']} threads): "
        f"{1000 * sp['w=0']:.1f} ms unguided (w = 0), {1000 * sp['w=3']:.1f} ms guided (w = 3: two network passes per step).",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
