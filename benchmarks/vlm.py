"""Notebook 06's measurements: connectors against each other, the text-only baseline, stage 1 alone, the number
of visual tokens, the KV cache, and the chat's answer latency.

    python benchmarks/vlm.py [--quick]

Every connector is trained here with the same short two-stage budget (``STAGE1`` + ``STAGE2`` steps, the
same training pool, seed and learning rate), on the bundled frozen ``clip_shapes`` and ``lm_shapes``, and
scored on fresh images (``SEED``, never used by training or by a card): VQA exact match per question type,
caption exact match and content-word recall, after stage 1 and after both stages. The bundled ``vlm_shapes``
(the long recipe) is scored on the same images. Writes results/vlm.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch

import mmcourse
from mmcourse import pretrained
from mmcourse.data.chat import QUESTION_TYPES, chat_prefix, chat_tokenizer
from mmcourse.peft import disable_lora
from mmcourse.recipes.vlm_shapes import SETTINGS, eval_set, evaluate_vlm, text_only_baseline, train_vlm, training_pool
from mmcourse.vlm import seconds_per_call

SEED = 9_300_000
STAGE1, STAGE2, POOL, N_EVAL = 100, 200, 2048, 200
LORA = SETTINGS["lora"]
# (name, connector, visual_tokens, options): at roughly equal trainable parameters (the table lists them)
RUNS = [
    ("LLaVA linear", "linear", None, {}),
    ("LLaVA MLP", "mlp", None, {}),
    ("Perceiver resampler", "resampler", None, {"num_latents": 16, "dim": 32, "depth": 1}),
    ("Q-Former", "qformer", None, {"num_queries": 16, "dim": 32, "depth": 1}),
    ("Flamingo (resampler + gated x-attn)", "flamingo", None, {"num_latents": 16, "dim": 32, "depth": 1, "every": 4}),
]
TOKEN_RUNS = [  # the number of visual tokens: pooled patches for the MLP, latents for the resampler
    ("LLaVA MLP", "mlp", 1, {}),
    ("LLaVA MLP", "mlp", 4, {}),
    ("Perceiver resampler", "resampler", None, {"num_latents": 4, "dim": 32, "depth": 1}),
]
OUT = Path(__file__).parent / "results"


def tokens_of(model) -> int:
    with torch.no_grad():
        return model.encode_images(torch.zeros(1, 3, 32, 32)).shape[1]


def answer_seconds(model, data, n: int = 64) -> float:
    """Median wall time to answer n questions (one per image) in one call, per answer."""
    n = min(n, len(data))
    qs = ["how many shapes are there?"] * n
    return seconds_per_call(lambda: model.answer(data.images[:n], qs, max_new_tokens=4), repeat=3) / n


def kv_cache_ratio(lm, *, new_tokens: int = 48, batch: int = 8) -> dict:
    tok = chat_tokenizer()
    ids = torch.tensor([chat_prefix(tok)] * batch)
    out = {}
    for use_cache in (True, False):
        sec = seconds_per_call(lambda: lm.generate(ids, new_tokens, use_cache=use_cache), repeat=3)
        out["cached" if use_cache else "recomputed"] = batch * new_tokens / sec
    same = torch.equal(lm.generate(ids, new_tokens), lm.generate(ids, new_tokens, use_cache=False))
    return {"tokens_per_second": {k: round(v, 1) for k, v in out.items()}, "ratio": round(out["cached"] / out["recomputed"], 2),
            "new_tokens": new_tokens, "batch": batch, "prompt_tokens": ids.shape[1], "same_tokens": same}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="a smoke run: 10 + 10 steps, 40 images")
    parser.add_argument("--runs", help="train only these runs (indices into RUNS + TOKEN_RUNS, e.g. 0,2,4) and write "
                        "their rows to --part; `--finish PART...` then merges the parts and measures the rest")
    parser.add_argument("--part", type=Path, help="where --runs writes its rows (JSON)")
    parser.add_argument("--finish", type=Path, nargs="+", help="merge these parts, add the bundled model and the timings")
    args = parser.parse_args()
    s1, s2, n_eval = (10, 10, 40) if args.quick else (STAGE1, STAGE2, N_EVAL)
    mmcourse.start(0, quiet=True)
    start = time.perf_counter()
    data, qas = eval_set(n_eval, seed=SEED)
    every = [("runs", r) for r in RUNS] + [("token_runs", r) for r in TOKEN_RUNS]
    if args.finish:
        results = merge([json.loads(p.read_text()) for p in args.finish])
    else:
        chosen = range(len(every)) if args.runs is None else [int(i) for i in args.runs.split(",")]
        results = train_runs([every[i] for i in chosen], data, qas, s1, s2)
        if args.runs is not None:
            args.part.write_text(json.dumps(results, indent=1) + "\n")
            return
    finish(results, data, qas)
    results["seconds"] = round(results.get("seconds", 0) + time.perf_counter() - start, 1)
    results["machine"] = {"cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
                          "torch": torch.__version__, "load_average": [round(x, 1) for x in os.getloadavg()]}
    if args.quick:
        print(json.dumps(results, indent=1)[:3000])
        return
    OUT.mkdir(exist_ok=True)
    (OUT / "vlm.json").write_text(json.dumps(results, indent=1) + "\n")
    (OUT.parent.parent / "assets" / "results" / "vlm.json").write_text(json.dumps(results, indent=1) + "\n")  # shipped copy
    (OUT / "vlm.md").write_text(markdown(results))
    print(markdown(results))


def train_runs(runs, data, qas, s1: int, s2: int) -> dict:
    start = time.perf_counter()
    pool = training_pool(POOL, seed=0)
    results: dict = {"seed": SEED, "images": len(data), "questions": sum(map(len, qas)), "stage1_steps": s1,
                     "stage2_steps": s2, "pool": POOL, "runs": [], "token_runs": []}
    for key, (name, kind, tokens, options) in runs:
        t0 = time.perf_counter()
        model, metrics = train_vlm(pretrained.load("clip_shapes"), pretrained.load("lm_shapes"), connector=kind,
                                   visual_tokens=tokens, options=options, lora=LORA, stage1_steps=s1, stage2_steps=s2,
                                   lr=SETTINGS["lr"], describe_share=SETTINGS["describe_share"], pool_data=pool,
                                   progress=False, after_stage1=lambda m: evaluate_vlm(m, data, qas))
        row = {"name": name, "connector": kind, "options": options, "tokens": tokens_of(model),
               "trainable": metrics["trainable_parameters"], "train_seconds": metrics["seconds"],
               "stage1_only": metrics["stage1_only"], "both": evaluate_vlm(model, data, qas),
               "seconds_per_answer": answer_seconds(model, data)}
        results[key].append(row)
        print(f"{name:38s} {row['tokens']:3d} tokens  stage 1 {row['stage1_only']['vqa']['all']:.3f}  "
              f"both {row['both']['vqa']['all']:.3f}  ({time.perf_counter() - t0:.0f} s)", flush=True)
    results["seconds"] = round(time.perf_counter() - start, 1)
    return results


def merge(parts: list[dict]) -> dict:
    out = dict(parts[0], runs=[], token_runs=[], seconds=max(p["seconds"] for p in parts))
    for key, runs in (("runs", RUNS), ("token_runs", TOKEN_RUNS)):
        rows = [r for p in parts for r in p[key]]
        order = [(name, kind, options) for name, kind, _, options in runs]
        out[key] = sorted(rows, key=lambda r: next(i for i, o in enumerate(order) if o[1] == r["connector"]
                                                   and o[2] == r["options"] and o[0] == r["name"]) * 100 + r["tokens"])
    return out


def finish(results: dict, data, qas) -> None:
    lm = pretrained.load("lm_shapes")
    results["text_only"] = text_only_baseline(lm, data, qas)
    bundled = pretrained.load("vlm_shapes")
    results["bundled"] = {"card": pretrained.card("vlm_shapes")["metrics"].get("recipe", {}),
                          "eval": evaluate_vlm(bundled, data, qas), "tokens": tokens_of(bundled),
                          "seconds_per_answer": answer_seconds(bundled, data)}
    with disable_lora(bundled.lm):
        results["bundled"]["without_lora"] = evaluate_vlm(bundled, data, qas)["vqa"]
    results["kv_cache"] = kv_cache_ratio(lm)
    chat_q = ["what color is the star?"]
    results["chat_latency_ms"] = round(1000 * seconds_per_call(lambda: bundled.answer(data.images[:1], chat_q), repeat=9), 1)


def _row(name: str, tokens, trainable, vqa: dict, caption: dict | None, ms: float | None) -> str:
    cells = [f"{vqa.get(k, float('nan')):.2f}" for k in ("all", *QUESTION_TYPES)]
    cap = f"{caption['exact']:.2f} / {caption['recall']:.2f}" if caption else "—"
    return (f"| {name} | {tokens} | {trainable} | " + " | ".join(cells) + f" | {cap} | "
            + (f"{ms:.1f}" if ms is not None else "—") + " |")


def markdown(r: dict) -> str:
    head = ("| model | visual tokens | trainable parameters | VQA all | " + " | ".join(QUESTION_TYPES)
            + " | caption exact / recall | ms per answer |\n|" + " --- |" * (6 + len(QUESTION_TYPES)) + "\n")
    lines = ["# Vision-language models on the shapes world (notebook 06)", "",
             f"`python benchmarks/vlm.py`: {r['images']} fresh images (seed {r['seed']}), {r['questions']} questions "
             f"(every question of `mmcourse.data.chat.questions` per image), exact match. Machine: {r['machine']['cpu']}, "
             f"{r['machine']['threads']} threads, torch {r['machine']['torch']}, **shared with other jobs** (load average "
             f"{r['machine']['load_average']}): times are comparable within this table only. Whole run: {r['seconds']:.0f} s.",
             "", f"## Connectors at one short budget ({r['stage1_steps']} stage-1 + {r['stage2_steps']} stage-2 steps, "
             f"batch {SETTINGS['batch_size']}, LoRA r = {LORA['r']} on {', '.join(LORA['targets'])}; same pool of {r['pool']} images)", "",
             head.rstrip("\n")]
    t = r["text_only"]
    lines.append(_row("text only (lm_shapes, no image)", 0, 0, t, None, None))
    b = r["bundled"]
    lines.append(_row(f"**vlm_shapes** (bundled: MLP, {b['card'].get('stage1_steps', '?')} + {b['card'].get('stage2_steps', '?')} steps)",
                      b["tokens"], "see card", b["eval"]["vqa"], b["eval"]["caption"], 1000 * b["seconds_per_answer"]))
    for row in r["runs"]:
        tr = row["trainable"]
        lines.append(_row(f"{row['name']}, stage 1 only", row["tokens"], f"{tr['connector']:,}", row["stage1_only"]["vqa"],
                          row["stage1_only"]["caption"], None))
        lines.append(_row(f"{row['name']}, stages 1 + 2", row["tokens"], f"{tr['connector']:,} + {tr['lora']:,} LoRA",
                          row["both"]["vqa"], row["both"]["caption"], 1000 * row["seconds_per_answer"]))
    best = max(row["both"]["vqa"]["all"] for row in r["runs"])
    lines += ["", f"Best connector of the short runs minus text only: {100 * (best - t['all']):+.1f} points (VQA all); the "
              f"bundled vlm_shapes (same design as LLaVA MLP, 4x the steps): {100 * (b['eval']['vqa']['all'] - t['all']):+.1f} "
              f"points. The bundled model without its LoRA matrices (its stage-2 projector before a frozen LM): "
              f"{b['without_lora']['all']:.2f}.", "",
              "## The number of visual tokens", "", head.rstrip("\n")]
    for row in [*r["token_runs"], *[x for x in r["runs"] if x["connector"] in ("mlp", "resampler")]]:
        tr = row["trainable"]
        lines.append(_row(f"{row['name']}, {row['tokens']} tokens", row["tokens"], f"{tr['connector']:,} + {tr['lora']:,} LoRA",
                          row["both"]["vqa"], row["both"]["caption"], 1000 * row["seconds_per_answer"]))
    kv = r["kv_cache"]
    lines += ["", "## Generation", "",
              f"* KV cache: lm_shapes generating {kv['new_tokens']} tokens after a {kv['prompt_tokens']}-token prompt, batch "
              f"{kv['batch']}: {kv['tokens_per_second']['cached']:.0f} tokens/s with the cache, "
              f"{kv['tokens_per_second']['recomputed']:.0f} recomputing the sequence each step: **{kv['ratio']:.2f}x** "
              f"(same tokens: {kv['same_tokens']}).",
              f"* Chat answer latency (vlm_shapes, one image, one question, median of 9): {r['chat_latency_ms']:.0f} ms with "
              f"{r['machine']['threads']} threads" + (f"; {r['chat_latency_ms_one_thread']:.0f} ms with one thread pinned to one core "
              f"({r['one_thread_note']})" if "chat_latency_ms_one_thread" in r else "") + ". On a loaded machine two "
              "threads wait for each other at every operation (the notebooks' budgets assume 2 quiet cores).", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
