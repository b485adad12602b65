# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.16.0
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown] slideshow={"slide_type": "slide"}
# # 05 · LoRA and adapters
#
# **In this notebook you will**
#
# 1. see why fine-tuning sometimes must change the parameters, and why not all of them;
# 2. write a **LoRA** layer's forward pass, y = Wx + b + (α/r)·BAx, with the B = 0 start, and check it against
#    the course package (`mmcourse.peft`, itself tested against Hugging Face's peft);
# 3. give the course CLIP a **new scope** it fails at, French prompts, and teach it with a head, full
#    fine-tuning, **bottleneck adapters** and LoRA;
# 4. read the **rank sweep**: accuracy against trainable parameters, and what training holds in memory;
# 5. measure what fine-tuning **forgets**, and why LoRA can give it back exactly;
# 6. **merge** LoRA into the weights (free inference) and see why merging in bfloat16 is not exact;
# 7. test the "low intrinsic rank" hypothesis on a real update.
#
# About 45 minutes. Everything runs on a laptop CPU in under a minute; the sweep comes from
# `benchmarks/lora_sweep.py` (minutes), committed with its table.

# %% tags=["setup"]
import sys

if "google.colab" in sys.modules:  # on Colab: install the course package, pinned to this notebook's version
    import subprocess

    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "mmcourse @ git+https://github.com/mmcourse/mmcourse@v0.1.0"],
        check=True,
    )

import copy
import math

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F
from torch import nn

import mmcourse
from mmcourse import check
from mmcourse.course import measured
from mmcourse import new_language as nl
from mmcourse.data import french

device = mmcourse.start(seed=0)

# %% [markdown] slideshow={"slide_type": "slide"}
# ## 1 · The idea
#
# Prompts let a model generalise in context, without changing a weight (notebooks 03 and 04). The lecture:
# *sometimes in-context learning is not enough, we need to alter the parameters* — "when exposed to a new
# task, new language, or any other new scope". The problem: a 10 B-parameter network cannot simply be
# updated on a laptop. Full fine-tuning needs, besides the weights, a gradient for every parameter and
# Adam's two moment estimates: four copies of the model in memory, and a new copy of the whole model on
# disk for every task.
#
# **Parameter-efficient fine-tuning** keeps the network frozen and trains a small set of new parameters:
#
# * **adapters** (Houlsby et al., 2019): small bottleneck blocks, down-projection → nonlinearity →
#   up-projection with a residual, inserted after each sublayer; only they train. The up-projection starts
#   at zero, so the adapted network starts *as* the frozen one.
# * **LoRA** (Hu et al., 2021): *most of the parameters of transformers are in the linear layers; maybe
#   their updates have a lower intrinsic dimensionality.* So learn the update of a weight W (out × in) as a
#   low-rank product, ΔW = B A with A (r × in) and B (out × r), r ≪ min(in, out):
#
# $$ y = W x + b + \frac{\alpha}{r}\, B A x .$$
#
# A starts random (Kaiming-uniform, as `nn.Linear` initialises its weight), **B starts at zero**: at step 0
# ΔW = 0 and the model is exactly the pretrained one, yet the gradient with respect to B is not zero (it is
# the upstream gradient times Ax), so training moves B first. The factor **α/r** (peft's convention) keeps
# the size of the update from growing with r when α is fixed; rsLoRA (Kalajdzievski, 2023) argues for
# **α/√r** instead, and some from-scratch tutorials multiply by α alone. The same α means different updates
# under the three conventions, so always say which one you use. The course uses peft's α/r.

# %% [markdown] slideshow={"slide_type": "slide"}
# ## 2 · A LoRA layer from scratch
#
# **Exercise 05.lora_forward** (3 points). Write the forward pass of a LoRA layer from plain tensors:
# `x` (…, in), the frozen `weight` (out, in) and `bias` (out,) or `None`, `lora_A` (r, in), `lora_B`
# (out, r) and `alpha`. Read the rank off the shapes; scale by α/r, or by α/√r when `rslora=True`.

# %% exercise="05.lora_forward"
def lora_forward(x: torch.Tensor, weight: torch.Tensor, bias, lora_A: torch.Tensor, lora_B: torch.Tensor,
                 alpha: float, rslora: bool = False) -> torch.Tensor:
    """(..., in) -> (..., out): x W^T + b + s (x A^T) B^T with s = alpha / r (alpha / sqrt(r) with rslora)."""
    ### BEGIN SOLUTION
    r = lora_A.shape[0]
    scaling = alpha / math.sqrt(r) if rslora else alpha / r
    y = x @ weight.T + (x @ lora_A.T) @ lora_B.T * scaling
    return y if bias is None else y + bias
    ### END SOLUTION


# %% tags=["check"]
check.exercise("05.lora_forward", lora_forward)

# %% [markdown]
# A worked version, as a module that wraps a frozen `nn.Linear`. The low-rank branch is computed as
# B(A x), never as the matrix BA: that costs r·(in + out) multiplications per token instead of in·out.

# %%
def scratch_lora_forward(x, weight, bias, lora_A, lora_B, alpha, rslora=False):
    r = lora_A.shape[0]
    scaling = alpha / math.sqrt(r) if rslora else alpha / r
    frozen = F.linear(x, weight, bias)  # x W^T + b
    return frozen + F.linear(F.linear(x, lora_A), lora_B) * scaling  # + s (x A^T) B^T


class ScratchLoRA(nn.Module):
    def __init__(self, base: nn.Linear, r: int, alpha: float):
        super().__init__()
        self.base, self.alpha = base.requires_grad_(False), alpha
        self.lora_A = nn.Parameter(torch.empty(r, base.in_features))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, r))  # B = 0: the layer starts as the base layer

    def forward(self, x):
        return scratch_lora_forward(x, self.base.weight, self.base.bias, self.lora_A, self.lora_B, self.alpha)


# %% [markdown]
# The package's `LoRALinear` (peft's names: `lora_A`, `lora_B`, `scaling`) on the same weights gives the same
# outputs, and at step 0 it is *bit for bit* the base layer:

# %%
from mmcourse.peft import LoRALinear, count_parameters, disable_lora, lora_layers, merge_lora, unmerge_lora

torch.manual_seed(0)
base = nn.Linear(16, 12)
scratch, package = ScratchLoRA(base, r=4, alpha=8.0), LoRALinear(copy.deepcopy(base), r=4, alpha=8.0)
x = torch.randn(5, 16)
print("at step 0, identical to the base layer:", torch.equal(package(x), base(x)))
with torch.no_grad():  # give both the same non-zero adapter weights
    package.lora_A.weight.copy_(scratch.lora_A)
    scratch.lora_B.normal_()
    package.lora_B.weight.copy_(scratch.lora_B)
print("from scratch vs mmcourse.peft, largest difference:", (scratch(x) - package(x)).abs().max().item())
print(package)

# %% [markdown] slideshow={"slide_type": "slide"}
# ## 3 · A new scope: French
#
# The course CLIP (notebook 02) read English captions only. Its zero-shot classifier names all 64 colour–shape
# pairs from prompts such as "a photo of a red square". Ask it in French, "une photo d'un carre rouge", and two
# things break: most words are **new** (the tokenizer maps them to `<unk>`), and the **grammar** differs (the
# colour follows the noun and agrees with its gender: "un coeur vert", "une croix verte"). Some words survive
# because English spells them the same — "orange", "rose", "cyan", "violet", "triangle", "photo".
#
# To make LoRA's targets reachable, the text tower is rebuilt with separate query, key, value and output
# projections (`TextTower.from_clip`: `nn.MultiheadAttention`'s fused projection split, same function), and
# the new French words get embedding rows of their own, starting as the `<unk>` embedding, so before any
# training the tower computes exactly what the frozen CLIP computes.

# %%
from mmcourse.models.text_tower import TextTower

clip = mmcourse.pretrained.load("clip_shapes").eval()
scale = clip.scale().item()


def fresh_tower(clip):
    """The course CLIP's text side, q/k/v split, the French words appended; nothing trainable yet."""
    return TextTower.from_clip(clip, french.NEW_WORDS).requires_grad_(False)


print("new words:", ", ".join(french.NEW_WORDS))
print("known to the English vocabulary:", ", ".join(w for w in french.SHARED_WORDS if w.isalpha()))
print("examples:", french.prompts([("green", "cross"), ("blue", "heart")])[:3])

train_x, train_y = nl.image_features(clip, 1000, seed=1, split="train")  # the frozen image encoder, once
test_x, test_y = nl.image_features(clip, 600, seed=2, split="all")  # all 64 pairs, held-out ones included
tower = fresh_tower(clip)
same = torch.allclose(tower(["a photo of a red square"]), clip.encode_text(["a photo of a red square"]), atol=1e-6)
zero_french, zero_english = nl.accuracy(tower, test_x, test_y), nl.accuracy(tower, test_x, test_y, language="english")
print(f"TextTower computes encode_text: {same}")
print(f"zero-shot, 64 classes: English prompts {zero_english:.3f}, French prompts {zero_french:.3f} "
      f"(chance {1 / 64:.3f})")

# %% [markdown]
# English works, French fails (see the output above). A linear **head** on the frozen text features cannot fix
# this: every French prompt whose words are all unknown is the same sequence of `<unk>` tokens, so the frozen
# tower gives the same feature for "un carre rouge" and "un cercle bleu", and no linear map can tell equal
# vectors apart. The new words need meanings, so in every method below except "head" their embeddings train too.

# %% [markdown] slideshow={"slide_type": "slide"}
# ## 4 · Head, full fine-tuning, adapters and LoRA
#
# Each method trains on French prompts of the 56 seen colour–shape pairs (one random template per class per
# step, CoOp-style: cross-entropy over CLIP's scaled cosines between image features and class embeddings) and
# is tested on all 64, the 8 held-out pairs included. A short live run, LoRA with r = 4 on the query and value
# projections, the LoRA paper's choice:

# %%
live = nl.prepare(fresh_tower(clip), "lora-qv", r=4)
print(f"trainable: {count_parameters(live):,} of {count_parameters(live, trainable=False):,} parameters "
      f"(LoRA {sum(count_parameters(m) for m in lora_layers(live).values()):,}, new words {live.new_embedding.numel():,})")
losses = nl.fine_tune(live, train_x, train_y, steps=80, lr=3e-3, logit_scale=scale, seed=0)
lora_french, lora_english = nl.accuracy(live, test_x, test_y), nl.accuracy(live, test_x, test_y, language="english")

fig, ax = plt.subplots(figsize=(5.5, 3))
ax.plot(losses)
ax.axhline(math.log(56), ls=":", color="gray", label="ln 56 (chance)")
ax.set_xlabel("step")
ax.set_ylabel("cross-entropy")
ax.set_title(f"LoRA r = 4 on q, v: French accuracy {zero_french:.2f} -> {lora_french:.2f}")
ax.legend()
plt.tight_layout()
plt.show()

# %% [markdown]
# The sweep (`benchmarks/lora_sweep.py`, 3 seeds per configuration, more steps than the live run) compares
# all methods on the same data; its committed results:

# %%
sweep = measured("lora_sweep")  # the committed results of benchmarks/lora_sweep.py, shipped with the package
summary = sweep["summary"]
full = next(e for e in summary if e["method"] == "full")
print(f"{'method':22s} {'trainable':>9s} {'% of full':>9s}  French acc (mean ± sd)  held-out pairs  English after")
print(f"{'zero-shot':22s} {0:9,d} {0:9.1f}  {sweep['zero_shot']['french']:.3f}                  "
      f"{sweep['zero_shot']['french_heldout']:.3f}           {sweep['zero_shot']['english']:.3f}")
for e in summary:
    print(f"{e['config']:22s} {e['trainable']:9,d} {100 * e['trainable'] / full['trainable']:9.1f}  "
          f"{e['french']:.3f} ± {e['french_sd']:.3f}          {e['french_heldout']:.3f}           {e['english']:.3f}")

# %% [markdown]
# Read the table above with the lecture's question in mind. The head alone stays near the zero-shot level:
# it cannot tell the `<unk>` prompts apart. Giving the new words a meaning is most of the work on this toy
# scope: the new-word embeddings plus the head already land near full fine-tuning, so the frozen blocks cope
# with the French word order. LoRA and the adapters, which here train no head, need some rank or width to get
# there; the rank curve below shows how much. Full fine-tuning trains every parameter of the tower and does
# not beat them. (In the LoRA paper's Table 6, r = 1 on Wq, Wv already reached 73.4 on WikiSQL against 73.8
# at r = 8 with GPT-3: a flat curve too, on a task where the pretrained model's blocks do most of the work.)

# %% [markdown] slideshow={"slide_type": "slide"}
# ## 5 · The rank sweep and parameter counts
#
# **Exercise 05.lora_params** (3 points). How many parameters does LoRA add? `layers` maps each linear layer's
# name to its weight shape (out, in); `targets` is a list of names matched as peft matches them (a layer is
# selected when its name equals a target or ends with "." + target, so "q_proj" selects
# "blocks.0.attn.q_proj" but "proj" selects nothing there). Return the number of trainable LoRA parameters at rank r.

# %% exercise="05.lora_params"
def lora_params(layers: dict, targets: list, r: int) -> int:
    """{name: (out, in)}, target names, rank -> the number of parameters LoRA adds (an int)."""
    ### BEGIN SOLUTION
    total = 0
    for name, (out_features, in_features) in layers.items():
        if any(name == t or name.endswith("." + t) for t in targets):
            total += r * (in_features + out_features)  # A: (r, in), B: (out, r)
    return total
    ### END SOLUTION


# %% tags=["check"]
check.exercise("05.lora_params", lora_params)

# %% [markdown]
# Worked version, and the count checked on the live model: A is r × in and B is out × r, so a layer adds
# r·(in + out) parameters — linear in r, against in·out for the layer itself.

# %%
def worked_lora_params(layers, targets, r):
    selected = [name for name in layers if any(name == t or name.endswith("." + t) for t in targets)]
    return sum(r * (layers[n][0] + layers[n][1]) for n in selected)


shapes = {n: tuple(m.weight.shape) for n, m in fresh_tower(clip).named_modules() if isinstance(m, nn.Linear)}
print("LoRA on q, v at r = 4, counted from shapes:", worked_lora_params(shapes, ["q_proj", "v_proj"], 4),
      "| in the live model:", sum(count_parameters(m) for m in lora_layers(live).values()))

# %% [markdown]
# Accuracy against trainable parameters, for LoRA at r = 1 … 64 on {q, v} and on every linear layer of the
# blocks (q, k, v, out and both MLP layers), beside the other methods (grey). Slide the rank: the right panel
# counts what training holds besides the weights, a gradient and AdamW's two moments per trainable parameter
# (fp32), against full fine-tuning.

# %%
from mmcourse.widgets.lora_rank import RankExplorer

explorer = RankExplorer(summary)
explorer.widget(r=4)

# %%
lora8 = [e for e in summary if e["method"].startswith("lora") and e["r"] <= 8]
small = [e for e in lora8 if e["trainable"] <= 0.15 * full["trainable"]]  # at most 15 % of full's parameters
best = max(small, key=lambda e: e["french"])
head = next(e for e in summary if e["method"] == "head")
print(f"full fine-tuning: {full['french']:.3f} with {full['trainable']:,} trainable parameters, "
      f"{(full['gradient_bytes'] + full['optimizer_bytes']) / 1e3:.0f} kB of gradients and AdamW state")
print(f"best LoRA at r <= 8 with <= 15 % of full's parameters: {best['config']}, {best['french']:.3f} with "
      f"{best['trainable']:,} ({100 * best['trainable'] / full['trainable']:.1f} % of full), "
      f"{(best['gradient_bytes'] + best['optimizer_bytes']) / 1e3:.0f} kB")
print("within 6 points of full:", ", ".join(e["config"] for e in small if full["french"] - e["french"] <= 0.06) or "none")
print(f"every LoRA at r <= 8 at least head-only ({head['french']:.3f}) + 10 points: "
      f"{min(e['french'] for e in lora8) >= head['french'] + 0.10}")

# %% [markdown]
# At GPT-3's scale the same counting is what made LoRA matter: the paper reports the trainable parameters cut
# by 10 000 times and GPU memory by 3 times against full fine-tuning of the 175 B model, and a checkpoint per
# task of 35 MB instead of 350 GB. The weights themselves still have to sit in memory; LoRA saves the
# gradients and optimiser state of the frozen ones (QLoRA then shrinks the frozen weights to 4 bits).

# %% [markdown] slideshow={"slide_type": "slide"}
# ## 6 · What fine-tuning forgets
#
# The lecture warns that fine-tuning can decrease performance. Here the original task is English zero-shot
# classification; the sweep measured it after each French fine-tuning (table in section 4, last column):

# %%
english_rows = [(e["config"], e["english"], e.get("english_lora_off")) for e in summary]
print(f"frozen CLIP, English: {sweep['zero_shot']['english']:.3f}")
for name, after, off in english_rows:
    print(f"{name:22s} English after: {after:.3f}" + (f"   LoRA switched off: {off:.3f}" if off is not None else ""))

# %% [markdown]
# Full fine-tuning and the head rewrite weights that English also uses, and English accuracy drops; LoRA,
# while it is switched on, moves English a little too. But LoRA leaves W untouched: switching the branch off
# (or unmerging, below) gives the pretrained model back *exactly*, as the live model shows:

# %%
english_tower = fresh_tower(clip)
texts_en = nl.english_prompts(nl.all_classes())
with torch.no_grad(), disable_lora(live):
    exact = torch.equal(live(texts_en), english_tower(texts_en))
    english_off = nl.accuracy(live, test_x, test_y, language="english")
print(f"live LoRA model: French {lora_french:.3f}; English with LoRA on {lora_english:.3f}, "
      f"with LoRA off {english_off:.3f} (frozen CLIP {zero_english:.3f})")
print("LoRA off gives bit-identical English embeddings to the frozen tower:", exact)

# %% [markdown] slideshow={"slide_type": "slide"}
# ## 7 · Merging
#
# After training, W' = W + (α/r)·BA can be written into the weight (`merge_lora`): the merged layer is a plain
# linear layer again, so inference costs what the base model costs, and `unmerge_lora` subtracts ΔW to switch
# tasks. In float32 merged and unmerged outputs agree to rounding:

# %%
prompts_fr = french.prompts(nl.all_classes())
with torch.no_grad():
    unmerged_out = live(prompts_fr)
    merge_lora(live)
    merged_out = live(prompts_fr)
    unmerge_lora(live)
print(f"float32: max |merged - unmerged| = {(merged_out - unmerged_out).abs().max().item():.2e} "
      f"(outputs up to {unmerged_out.abs().max().item():.2f})")
timing = sweep["timing"]["ratio_to_base"]
print("inference time relative to the base tower (sweep: fastest of interleaved repeats on a shared machine):",
      ", ".join(f"{k} {v:.2f}x" for k, v in timing.items()))

# %% [markdown]
# In bfloat16 the merge is *not* exact, and peft's users have reported it as a bug (peft issues 1388, 1836).
# It is rounding: bf16 keeps 8 significant bits, so storing W + ΔW rounds each entry by up to half a step,
# about |W|/512, and that error is not small next to ΔW itself. Unmerged, W is used as stored and the small
# branch BAx is rounded on its own: the two paths round differently, and both differ from float32.

# %%
live_bf16 = copy.deepcopy(live).to(torch.bfloat16)
with torch.no_grad():
    reference = live(prompts_fr)
    a = live_bf16(prompts_fr).float()
    merge_lora(live_bf16)
    b = live_bf16(prompts_fr).float()
layer = lora_layers(live)["blocks.0.attn.q_proj"]
w, dw = layer.base.weight.detach(), layer.delta_weight().detach()
rounding = ((w + dw).to(torch.bfloat16).float() - (w + dw)).abs()
print(f"bfloat16: max |merged - unmerged| = {(a - b).abs().max().item():.2e}; against float32: unmerged "
      f"{(a - reference).abs().max().item():.2e}, merged {(b - reference).abs().max().item():.2e}")
print(f"blocks.0 q_proj: median |W| = {w.abs().median():.3f}, median |ΔW| = {dw.abs().median():.2e}, "
      f"median rounding of a merged bf16 entry = {rounding.median():.1e} "
      f"({100 * (rounding / dw.abs()).median():.1f} % of that entry's ΔW)")

# On a GPU the unmerged forward, x Wᵀ + b + s·(x Aᵀ) Bᵀ, can run as one kernel: `mmcourse.kernels.lora_linear`
# keeps the (tokens × r) product x Aᵀ in registers instead of writing it to memory and reading it back
# (Triton; a PyTorch fallback is chosen automatically on a CPU, as here). Its GPU benchmark
# (`benchmarks/lora_kernel.py`) writes its table when a GPU is available.

# %%
from mmcourse.kernels import lora_linear

q = lora_layers(live)["blocks.0.attn.q_proj"]
xs = torch.randn(7, q.in_features)
y = lora_linear(xs, q.base.weight, q.base.bias, q.lora_A.weight, q.lora_B.weight, q.scaling)  # torch path here
print("lora_linear equals the LoRA layer:", torch.allclose(y, q(xs), atol=1e-6))

# %% [markdown] slideshow={"slide_type": "slide"}
# ## 8 · Is the update really low-rank?
#
# LoRA's premise is that the update a fine-tuning makes has a low intrinsic rank. Test it on a real update:
# fine-tune the whole tower for a few steps, take ΔW of one projection, and ask how well a rank-r matrix can
# approximate it.
#
# **Exercise 05.low_rank** (3 points). Return factors `(B, A)`, B (out, r) and A (r, in), whose product is the
# rank-r matrix closest to `delta` (out, in) (in the Frobenius norm).

# %% exercise="05.low_rank"
def low_rank(delta: torch.Tensor, r: int):
    """(out, in), r -> (B (out, r), A (r, in)) with B @ A the best rank-r approximation of delta."""
    ### BEGIN SOLUTION
    U, S, Vh = torch.linalg.svd(delta, full_matrices=False)  # S sorted, largest first
    return U[:, :r] * S[:r], Vh[:r]
    ### END SOLUTION


# %% tags=["check"]
check.exercise("05.low_rank", low_rank)

# %% [markdown]
# Worked version: by the Eckart–Young theorem the truncated SVD is the best rank-r approximation; the
# squared error left is the sum of the squared singular values that were dropped.

# %%
def worked_low_rank(delta, r):
    U, S, Vh = torch.linalg.svd(delta, full_matrices=False)
    return U[:, :r] * S[:r], Vh[:r]


full_tower = nl.prepare(fresh_tower(clip), "full")
before = {n: m.weight.detach().clone() for n, m in full_tower.named_modules() if isinstance(m, nn.Linear)}
nl.fine_tune(full_tower, train_x, train_y, steps=30, lr=1e-3, logit_scale=scale, seed=0)
def relative_errors(delta):
    """||delta - B A|| / ||delta|| for the best rank-r factors, r = 1 .. min(out, in)."""
    out = []
    for r in range(1, min(delta.shape) + 1):
        B, A = worked_low_rank(delta, r)
        out.append(((delta - B @ A).norm() / delta.norm()).item())
    return out


curves = {name: relative_errors(full_tower.get_submodule(name).weight.detach() - before[name])
          for name in ("blocks.0.attn.q_proj", "blocks.0.attn.v_proj", "blocks.1.attn.v_proj")}
curves["random 64 x 64 matrix (no structure)"] = relative_errors(torch.randn(64, 64, generator=torch.Generator().manual_seed(0)))
fig, ax = plt.subplots(figsize=(6.5, 3.4))
for name, errors in curves.items():
    ax.plot(range(1, len(errors) + 1), errors, label=name, ls="--" if name.startswith("random") else "-")
ax.set_xscale("log", base=2)
ax.set_xlabel("rank r")
ax.set_ylabel("relative error ||ΔW - BA|| / ||ΔW||")
ax.set_title("how much of a full fine-tuning update a rank-r matrix misses")
ax.legend(fontsize=8)
plt.tight_layout()
plt.show()
for name, errors in curves.items():
    print(f"{name:38s} error left at r = 1: {errors[0]:.2f}, r = 4: {errors[3]:.2f}, r = 8: {errors[7]:.2f}")

# %% [markdown]
# Compare the updates with the dashed random matrix (the numbers are printed above). The update of a short
# full fine-tuning concentrates more of its norm in its top directions than a matrix without structure does,
# but on this toy scope it is far from rank 1: a rank-8 matrix still misses a sizeable part of it. That is
# consistent with the sweep, where LoRA at small ranks reached the accuracy of full fine-tuning anyway: LoRA
# does not need to reproduce the whole ΔW, only the directions the task needs (the LoRA paper's section 7
# finds the same: the learned low-rank update amplifies a few directions the pretrained weights had not
# emphasised). Low intrinsic rank is a hypothesis about what the *task* needs, not a property every update has.

# %% [markdown] slideshow={"slide_type": "slide"}
# ## What to remember
#
# * Fine-tuning every parameter costs a gradient and two optimiser moments per parameter and a full model copy
#   per task; parameter-efficient methods train a small set of new parameters next to a frozen network.
# * **Adapters**: bottleneck blocks with a residual after each sublayer, the up-projection at zero.
# * **LoRA**: y = Wx + b + (α/r)·BAx, A random, B = 0 so training starts at the pretrained model; r·(in + out)
#   parameters per layer. Say your scaling convention: peft α/r, rsLoRA α/√r.
# * LoRA targets linear layers **by name**; fused attention (`nn.MultiheadAttention`) must be split into q, k,
#   v, out projections first. New words need their own trainable embeddings: no adapter recovers a word the
#   tokenizer lost.
# * Merging W + (α/r)·BA makes inference free; unmerging (or switching LoRA off) gives the pretrained model
#   back, so nothing is forgotten. In bfloat16 merging rounds small updates away.
# * Measure honestly: on this toy scope the new word embeddings did most of the work, and rank barely mattered.
#
# ## References
#
# * N. Houlsby et al., *Parameter-Efficient Transfer Learning for NLP*, ICML 2019 (adapters).
# * E. J. Hu et al., *LoRA: Low-Rank Adaptation of Large Language Models*, ICLR 2022 (Table 6: rank sweep).
# * D. Kalajdzievski, *A Rank Stabilization Scaling Factor for Fine-Tuning with LoRA*, 2023 (rsLoRA).
# * T. Dettmers et al., *QLoRA: Efficient Finetuning of Quantized LLMs*, NeurIPS 2023.
# * K. Zhou et al., *Learning to Prompt for Vision-Language Models* (CoOp), IJCV 2022.
# * Hugging Face peft, `tuners/lora/layer.py` (the layer `mmcourse.peft` is tested against).
