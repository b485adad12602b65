"""DALL-E on the shapes world (notebook 07): the tokenizers, sampling cost and sample-then-re-rank.

    python benchmarks/dalle.py [--threads 2] [--steps 300] [--draws 4] [--seed 777] [--part all|tokenizers|stage2]

* **tokenizers** (stage 1), every variant trained ``--steps`` steps from the same seed, data and
  architecture (K = 128 codes, 8 x 8 grid), one module or one setting changed: the dVAE with the
  bundled recipe's settings, with straight-through (hard) samples, with tau held at 1 (no annealing)
  and with beta 10x larger, and VQ-VAE with and without its dead-code remedies (k-means
  initialisation and restarts); plus the bundled ``dvae_shapes``. Reconstruction MSE (encode, then
  decode the codes), perplexity of the code histogram over 2 048 fresh images (and over one batch of
  32, to show why the whole set is needed), and codes never used.
* **sampling** (stage 2, bundled ``dalle_shapes``): time per image with and without the key-value
  cache, and their ratio, measured side by side.
* **re-ranking**: for the eight captions "a {colour} {shape}" that cover every colour and shape once
  (and separately the eight held-out pairs), ``--draws`` independent draws of 32 samples each; for
  K = 1, 2, 4, 8, 16, 32 the course CLIP keeps the best of the first K samples of each draw, and the
  independent ``attributes_shapes`` classifier (trained on real images only) reads colour and shape.
* **versus notebook 08**: the same captions and judge, one image per caption: DALL-E at K = 1 and at
  K = 16 (re-ranked), and ``diffusion_shapes`` (DDPM 50 steps, w = 3), with the CPU seconds each
  image cost (process time, all threads), so fidelity per CPU-second can be compared.

Timings are ratios measured side by side in one run on a machine shared with other jobs. Writes
benchmarks/results/dalle.{json,md}.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import time
from pathlib import Path

import torch

import mmcourse
from mmcourse import dalle as DL
from mmcourse import diffusion as D
from mmcourse import dvae as V
from mmcourse import fidelity, pretrained
from mmcourse.data import make_shapes
from mmcourse.recipes.dvae_shapes import GUMBEL, evaluate, train_dvae

RESULTS = Path(__file__).parent / "results"
KS = (1, 2, 4, 8, 16, 32)


def tokenizers(steps: int, seed: int) -> list[dict]:
    base = {k: v for k, v in GUMBEL.items() if k not in ("steps", "quantizer")}
    base["beta_warmup"] = steps // 5
    variants = [
        ("dVAE (soft, tau 1 -> 1/16, beta 0.01 ramped)", "gumbel", {}),
        ("dVAE, straight-through (hard samples)", "gumbel", {"hard": True}),
        ("dVAE, tau held at 1 (no annealing)", "gumbel", {"tau_end": 1.0}),
        ("dVAE, beta x 10", "gumbel", {"beta": 10 * GUMBEL["beta"]}),
        ("VQ-VAE, k-means init + restarts", "vq", {}),
        ("VQ-VAE, no remedy (random init, no restarts)", "vq", {"remedies": False}),
    ]
    rows = []
    for name, quantizer, change in variants:
        kwargs = {**base, **change, "quantizer": quantizer, "steps": steps, "seed": seed, "progress": False}
        remedies = kwargs.pop("remedies", True)
        if quantizer == "vq":
            kwargs = {k: v for k, v in kwargs.items() if k not in ("tau_start", "tau_end", "beta", "beta_warmup", "hard")}
        start = time.perf_counter()
        model, metrics = train_dvae(**kwargs, vq_remedies=remedies) if quantizer == "vq" else train_dvae(**kwargs)
        rows.append(_tokenizer_row(name, model, time.perf_counter() - start, seed))
        print(rows[-1], flush=True)
    bundled = pretrained.load("dvae_shapes")
    card = pretrained.card("dvae_shapes")
    rows.append(_tokenizer_row(f"bundled dvae_shapes (VQ-VAE, {card['metrics']['steps']} steps)", bundled, None, seed))
    return rows


def _tokenizer_row(name: str, model, seconds: float | None, seed: int) -> dict:
    ev = evaluate(model, n=2048, seed=50_000 + seed)
    images = make_shapes(32, seed=50_000 + seed, style="flat").images
    one_batch = V.codebook_usage(model.encode(images), model.num_codes)
    return {"name": name, "mse": ev["seen"]["mse"], "perplexity": ev["seen"]["perplexity"], "dead": ev["seen"]["dead"],
            "perplexity_over_K": ev["seen"]["perplexity_over_K"], "heldout_mse": ev["heldout"]["mse"],
            "one_batch_perplexity": one_batch["perplexity"], "one_batch_dead": one_batch["dead"],
            "train_seconds": None if seconds is None else round(seconds, 1)}


def sampling(model) -> dict:
    captions = fidelity.eval_captions()
    out = {}
    for use_cache in (True, False):
        DL.sample_codes(model, captions[:2], seed=0, use_cache=use_cache)  # warm-up
        start = time.perf_counter()
        DL.sample_codes(model, captions, seed=0, use_cache=use_cache)
        out["cached" if use_cache else "uncached"] = round((time.perf_counter() - start) / len(captions), 4)
    out["speedup"] = round(out["uncached"] / out["cached"], 2)
    out["batch"] = len(captions)
    return out


def versus_diffusion(model, clip, classifier, draws: int, seed: int) -> dict:
    pairs = fidelity.eval_pairs()
    captions = fidelity.eval_captions(per_caption=draws)  # each caption `draws` times in a row
    out = {}
    cpu = time.process_time()
    images = DL.generate(model, captions, seed=seed)
    out["dalle_k1"] = {**fidelity.score_images(images.view(len(pairs), draws, *images.shape[1:]), pairs, classifier),
                       "cpu_seconds_per_image": round((time.process_time() - cpu) / len(captions), 4)}
    cpu = time.process_time()
    k = 16
    many = [c for c in captions for _ in range(k)]
    images = torch.cat([DL.generate(model, many[i : i + 256], seed=seed + 1 + i) for i in range(0, len(many), 256)])
    scores = torch.cat([DL.clip_scores(clip, images[i : i + 256], many[i : i + 256]) for i in range(0, len(many), 256)])
    best = images.view(len(captions), k, *images.shape[1:])[torch.arange(len(captions)), scores.view(-1, k).argmax(1)]
    out["dalle_k16"] = {**fidelity.score_images(best.view(len(pairs), draws, *best.shape[1:]), pairs, classifier),
                        "cpu_seconds_per_image": round((time.process_time() - cpu) / len(captions), 4)}
    diffusion = pretrained.load("diffusion_shapes")
    cpu = time.process_time()
    images = D.sample(diffusion, captions, guidance_scale=3.0, steps=50, seed=seed).cpu()
    out["diffusion"] = {**fidelity.score_images(images.view(len(pairs), draws, *images.shape[1:]), pairs, classifier),
                        "cpu_seconds_per_image": round((time.process_time() - cpu) / len(captions), 4),
                        "sampler": "DDPM 50 steps, w = 3 (16 x 16 images, upsampled for the judge)"}
    for row in out.values():
        row["both_per_cpu_second"] = round(row["both"] / row["cpu_seconds_per_image"], 2)
    out["images_per_caption"] = draws
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=300, help="training steps of each tokenizer variant")
    parser.add_argument("--draws", type=int, default=4, help="independent draws of 32 samples per caption")
    parser.add_argument("--seed", type=int, default=777)
    parser.add_argument("--part", choices=("all", "tokenizers", "stage2"), default="all",
                        help="run one part and merge it into the existing results (both parts take minutes)")
    args = parser.parse_args()
    mmcourse.start(seed=args.seed, threads=args.threads, quiet=True)
    start = time.perf_counter()
    path = RESULTS / "dalle.json"
    result = json.loads(path.read_text()) if args.part != "all" and path.is_file() else {}
    result.update({
        "date": datetime.date.today().isoformat(),
        "machine": f"{platform.machine()}, {args.threads} threads, torch {torch.__version__}, shared with other jobs",
    })
    seconds = result.get("part_seconds", {})
    if args.part in ("all", "tokenizers"):
        result["tokenizers_note"] = (f"each variant {args.steps} steps of 32 images from one seed; MSE, perplexity and "
                                     "dead codes over 2 048 fresh images")
        result["tokenizers"] = tokenizers(args.steps, args.seed)
        seconds["tokenizers"] = round(time.perf_counter() - start, 1)
    if args.part in ("all", "stage2"):
        start2 = time.perf_counter()
        stage2(result, args)
        seconds["stage2"] = round(time.perf_counter() - start2, 1)
    if args.part != "all" and path.is_file():  # another part may have finished meanwhile: keep its results
        result = {**json.loads(path.read_text()), **result}
        seconds = {**result.get("part_seconds", {}), **seconds}
    result["part_seconds"] = seconds
    result["seconds"] = round(sum(seconds.values()), 1)
    RESULTS.mkdir(exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS.parent.parent / "assets" / "results" / "dalle.json").write_text(path.read_text())  # shipped copy (measured)
    (RESULTS / "dalle.md").write_text(markdown(result))
    print(markdown(result))


def stage2(result: dict, args) -> None:
    model = pretrained.load("dalle_shapes")
    clip = pretrained.load("clip_shapes")
    classifier = pretrained.load("attributes_shapes")
    result["sampling_seconds_per_image"] = sampling(model)
    print(result["sampling_seconds_per_image"], flush=True)
    rerank = {"ks": list(KS), "draws_per_pair": args.draws}
    for name, held in (("seen", False), ("heldout", True)):
        curve = DL.rerank_curve(model, clip, classifier, fidelity.eval_pairs(heldout=held), KS, groups=args.draws, seed=args.seed)
        rerank[name] = {str(k): v for k, v in curve.items()}
        print(name, {k: v["both"] for k, v in curve.items()}, flush=True)
    real = fidelity.real_reference(classifier, per_caption=16, seed=args.seed, style="flat", size=32)
    rerank["real_images"] = real
    result["rerank"] = rerank
    result["versus_diffusion"] = versus_diffusion(model, clip, classifier, args.draws, args.seed)


def markdown(r: dict) -> str:
    lines = [
        "# DALL-E on the shapes world (notebook 07)",
        "",
        f"`python benchmarks/dalle.py`, {r['date']}, {r['machine']}; {r['seconds']:.0f} s in all. Timings are ratios "
        "measured side by side in this run; absolute times are inflated by the other jobs on the machine.",
        "",
    ]
    if "tokenizers" in r:
        lines += [
            f"## Stage 1: tokenizers ({r['tokenizers_note']})",
            "",
            "| tokenizer | reconstruction MSE | perplexity (whole set) | / K | codes never used | perplexity in one batch of 32 | 'dead' in one batch | MSE, held-out pairs |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for t in r["tokenizers"]:
            lines.append(f"| {t['name']} | {t['mse']:.4f} | {t['perplexity']:.1f} | {t['perplexity_over_K']:.2f} | {t['dead']} | "
                         f"{t['one_batch_perplexity']:.1f} | {t['one_batch_dead']} | {t['heldout_mse']:.4f} |")
        lines.append("")
    if "rerank" not in r:
        return "\n".join(lines)
    s = r["sampling_seconds_per_image"]
    lines += [
        "## Stage 2: sampling time per image",
        "",
        f"A batch of {s['batch']} captions, 64 image tokens each: {1000 * s['cached']:.0f} ms per image with the key-value "
        f"cache, {1000 * s['uncached']:.0f} ms without: **{s['speedup']:.1f}x** faster with it (the same tokens).",
        "",
        f"## Sample, then re-rank with the course CLIP ({r['rerank']['draws_per_pair']} draws of 32 samples per caption; "
        "judge: attributes_shapes, trained on real images only)",
        "",
        "| K | seen pairs: colour and shape | colour | shape | held-out pairs: colour and shape | colour | shape | CLIP score of the kept (seen) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for k in r["rerank"]["ks"]:
        a, b = r["rerank"]["seen"][str(k)], r["rerank"]["heldout"][str(k)]
        lines.append(f"| {k} | {a['both']:.3f} | {a['color']:.3f} | {a['shape']:.3f} | {b['both']:.3f} | {b['color']:.3f} | "
                     f"{b['shape']:.3f} | {a['clip']:.3f} |")
    re_ = r["rerank"]["real_images"]
    seen = r["rerank"]["seen"]
    lines += [
        f"| real images | {re_['both']:.3f} | {re_['color']:.3f} | {re_['shape']:.3f} | | | | |",
        "",
        f"Issue 19's bar: K = 16 ({seen['16']['both']:.3f}) >= K = 1 ({seen['1']['both']:.3f}) + 0.15: "
        f"{'yes' if seen['16']['both'] >= seen['1']['both'] + 0.15 else 'NO'}; non-decreasing in K: "
        f"{'yes' if all(seen[str(a)]['both'] <= seen[str(b)]['both'] for a, b in zip(r['rerank']['ks'], r['rerank']['ks'][1:])) else 'NO'}.",
        "",
    ]
    d = r["versus_diffusion"]
    lines += [
        f"## Versus notebook 08's diffusion model (same eight captions, same judge, {d['images_per_caption']} images per caption)",
        "",
        "| model | colour and shape | CPU seconds per image | colour-and-shape per CPU-second |",
        "| --- | --- | --- | --- |",
        f"| dalle_shapes, K = 1 | {d['dalle_k1']['both']:.3f} | {d['dalle_k1']['cpu_seconds_per_image']:.3f} | {d['dalle_k1']['both_per_cpu_second']:.2f} |",
        f"| dalle_shapes, best of K = 16 by CLIP | {d['dalle_k16']['both']:.3f} | {d['dalle_k16']['cpu_seconds_per_image']:.3f} | {d['dalle_k16']['both_per_cpu_second']:.2f} |",
        f"| diffusion_shapes, {d['diffusion']['sampler']} | {d['diffusion']['both']:.3f} | {d['diffusion']['cpu_seconds_per_image']:.3f} | {d['diffusion']['both_per_cpu_second']:.2f} |",
        "",
        "The two models differ in more than the method (32 x 32 vs 16 x 16 pixels, a frozen CLIP text tower vs a "
        "text embedding learned with the prior, different training budgets), so this compares two bundled course "
        "models, not DALL-E with diffusion in general.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
