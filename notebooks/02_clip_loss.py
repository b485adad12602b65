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
# # 02 · The CLIP loss
#
# **In this notebook you will**
#
# 1. write contrastive learning as an **N-way classification per row** of a similarity matrix, from the
#    lecture's InfoNCE equation, stable at CLIP's largest logit scale, and see why the code calls `F.cross_entropy`;
# 2. make it **symmetric** (images → texts and texts → images), as CLIP does, and derive its **gradient**:
#    which pairs the loss pulls together and which it pushes apart, and how hard;
# 3. find the loss of a model that has learned nothing (**ln N**) and what a **margin** between
#    positives and negatives buys at a given batch size and temperature;
# 4. see what the **temperature** τ and the learnable **logit scale** 1/τ do to the softmax;
# 5. measure how the **batch size**, the number of negatives, changes what a model learns;
# 6. meet **false negatives** (captions that also fit another image of the batch) and fix them with
#    content-level targets;
# 7. train a small CLIP live, then study the course's bundled CLIP beside the paper's: similarity
#    heatmap, retrieval both ways, Recall@K, and two contrastive text towers (bag of words, transformer);
# 8. see how the loss scales to huge batches: without the N × N matrix, and over several processes.
#
# About 75 minutes. Everything runs on a laptop CPU in under a minute; the bundled model
# (`mmcourse train clip_shapes` rebuilds it) took minutes to train.

# %% tags=["setup"]
import sys

if "google.colab" in sys.modules:  # on Colab: install the course package, pinned to this notebook's version
    import subprocess

    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "mmcourse @ git+https://github.com/mmcourse/mmcourse@v0.1.0"],
        check=True,
    )

import math
import time

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F

import mmcourse
from mmcourse import check
from mmcourse.data import make_shapes

device = mmcourse.start(seed=0)

# %% [markdown] slideshow={"slide_type": "slide"}
# ## 1 · The idea
#
# The web is full of images with a few words beside them: alt-text, captions, titles. The words
# *somewhat* describe the image, often loosely or wrongly, and nothing says which region of the image
# a word refers to: there is no pixel- or region-level supervision at all (the lecture's "How to
# learn joint embeddings?"). What the web does tell reliably is which text came with which image.
# Contrastive learning uses exactly that: pull each image–text pair together, push the other pairs of
# the batch apart. It needs no labels, so it scales to whatever the web holds, and a noisy caption
# costs one pair, not a wrong class for a whole category.
#
# CLIP has two encoders, one for an image and one for a sentence describing it, and aligns their
# outputs with this contrastive loss. The paper's pseudocode, in NumPy style:
#
# ```python
# I_f = image_encoder(I)                      # [n, d_i]
# T_f = text_encoder(T)                       # [n, d_t]
# I_e = l2_normalize(np.dot(I_f, W_i), axis=1)  # [n, d_e]  joint multimodal embedding
# T_e = l2_normalize(np.dot(T_f, W_t), axis=1)  # [n, d_e]
# logits = np.dot(I_e, T_e.T) * np.exp(t)     # [n, n]  scaled pairwise cosine similarities
# labels = np.arange(n)
# loss_i = cross_entropy_loss(logits, labels, axis=0)
# loss_t = cross_entropy_loss(logits, labels, axis=1)
# loss = (loss_i + loss_t) / 2
# ```
#
# Everything in this notebook is about the last five lines. In a batch of *N* pairs the logits form
# an *N × N* matrix; the matching pairs sit on its diagonal, and the goal is a high diagonal and a
# low everything else. (Section 9 sets the paper's scale, 400 M pairs and batches of 32 768, beside
# the course's.)

# %%
from mmcourse.losses import clip_logits

g = torch.Generator().manual_seed(0)
n, d = 6, 16
image_emb = F.normalize(torch.randn(n, d, generator=g), dim=1)
text_emb = F.normalize(image_emb + 0.6 * torch.randn(n, d, generator=g), dim=1)  # each text near its image

logits = clip_logits(image_emb, text_emb, 1 / 0.07)  # (N, N) = exp(t) * cosines
fig, ax = plt.subplots(figsize=(3.8, 3.2))
im = ax.imshow(logits.numpy(), cmap="viridis")
ax.set_xlabel("text j")
ax.set_ylabel("image i")
ax.set_title("logits = cos(I_i, T_j) / 0.07")
fig.colorbar(im, ax=ax)
plt.tight_layout()
plt.show()

# %% [markdown] slideshow={"slide_type": "slide"}
# ## 2 · Contrastive learning is N-way classification
#
# Take row *i*: image *i* against all *N* texts. Exactly one of them, text *i*, is right; the other
# *N − 1* are negatives. That is a classification problem with *N* classes, and its loss is the
# cross-entropy of a softmax over the candidates, the **InfoNCE** loss. In the lecture's notation, for
# an anchor whose positive has cosine $s^+$ and whose candidates have cosines $s_1, \dots, s_N$ (the
# positive among them):
#
# $$\mathcal L = -\log \frac{\exp(s^+/\tau)}{\sum_{j=1}^{N} \exp(s_j/\tau)}.$$
#
# **Exercise 02.infonce** (3 points). Write `infonce(positive, negatives, tau)` from this equation:
# `positive` (B,) holds each of *B* anchors' cosine with its positive, `negatives` (B, K) its cosines
# with its *K* negatives; return the (B,) losses, one per anchor. It must stay finite at τ = 0.01, the
# smallest temperature CLIP allows, where $e^{s/\tau}$ can reach $e^{100}$, far beyond float32's largest
# number (about $3.4 \times 10^{38} \approx e^{88.7}$).

# %% exercise="02.infonce"
def infonce(positive: torch.Tensor, negatives: torch.Tensor, tau: float) -> torch.Tensor:
    """(B,) positive cosines, (B, K) negative cosines, temperature tau -> (B,) InfoNCE loss per anchor."""
    ### BEGIN SOLUTION
    x = torch.cat([positive[:, None], negatives], dim=1) / tau  # (B, 1 + K): the positive is candidate 0
    m = x.max(dim=1, keepdim=True).values  # shift by the row maximum: every exponent <= 0, no overflow
    log_sum = m.squeeze(1) + (x - m).exp().sum(dim=1).log()
    return log_sum - x[:, 0]
    ### END SOLUTION


# %% tags=["check"]
check.exercise("02.infonce", infonce)

# %% [markdown]
# **The worked version.** Put the positive and the negatives side by side, divide by τ, and the loss
# of an anchor is $\log \sum_j e^{x_j} - x_+$: a log-sum-exp minus the positive's logit. Computed as
# written, $e^{x_j}$ overflows once $x_j > 88.7$ in float32, and the loss becomes `inf − inf = nan`.
# The stable form subtracts the row's maximum $m$ first, $\log\sum_j e^{x_j} = m + \log\sum_j e^{x_j - m}$,
# so every exponent is at most 0 and the largest term is exactly 1. `torch.logsumexp` does just that.

# %%
x = torch.tensor([[0.95, 0.97, 0.90, 0.40]]) / 0.01  # one anchor at tau = 0.01: logits up to 97
naive = -(x[:, 0].exp() / x.exp().sum(dim=1)).log()
m = x.max(dim=1, keepdim=True).values
shifted = m.squeeze(1) + (x - m).exp().sum(dim=1).log() - x[:, 0]
print(f"e^(s/tau) in float32: {x.exp()[0].tolist()}")
print(f"naive: {naive.item()}   shifted by the row maximum: {shifted.item():.4f}   "
      f"torch.logsumexp: {(torch.logsumexp(x, dim=1) - x[:, 0]).item():.4f}")

# %% [markdown]
# In CLIP's matrix every row is such an anchor: its positive is the diagonal entry and its negatives
# are the rest of the row. The mean over the rows is then exactly `F.cross_entropy(logits, labels)`
# with `labels = arange(N)`: the "class" of row *i* is its own index, and PyTorch's cross-entropy is the
# stable log-sum-exp minus the right class's logit. That is why CLIP's code is so short (the lecture:
# "this explains why PyTorch uses `F.cross_entropy`!"). On the toy batch of section 1:

# %%
labels = torch.arange(n)
row_by_row = torch.logsumexp(logits, dim=1) - logits.diagonal()  # each row: all N candidates, the positive among them
print(f"mean of the rows' InfoNCE: {row_by_row.mean():.6f}   F.cross_entropy(logits, arange(N)): "
      f"{F.cross_entropy(logits, labels):.6f}")

# %% [markdown]
# With a batch of 1 024 pairs each image has one positive and 1 023 negatives; CLIP trained with
# 32 768 pairs per batch, so 32 767 (the lecture's numbers).

# %% [markdown] slideshow={"slide_type": "slide"}
# ## 3 · The symmetric loss and its gradient
#
# Row *i* asks "which text describes image *i*?". Column *j* asks the converse, "which image does text
# *j* describe?", and CLIP trains both: the loss is the mean of the image → text and the text → image
# cross-entropies. The lecture's "CLIP in 6 lines":
#
# ```python
# logits = (z_i @ z_t.t()) / tau
# labels = torch.arange(len(z_i), device=logits.device)
# loss = 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels))
# ```
#
# The package's version, `mmcourse.losses.clip_loss`, is what the rest of the course uses. Its tests
# compare it, value and gradients, with `open_clip`'s `ClipLoss`; here we compare it with the six
# lines, run on our toy batch.

# %%
from mmcourse.losses import clip_loss

tau = 0.07
six_lines_logits = (image_emb @ text_emb.t()) / tau
six_lines = 0.5 * (F.cross_entropy(six_lines_logits, labels) + F.cross_entropy(six_lines_logits.t(), labels))
package = clip_loss(image_emb, text_emb, 1 / tau)
print(f"CLIP in 6 lines: {six_lines:.6f}   mmcourse.losses.clip_loss: {package:.6f}")
assert torch.allclose(six_lines, package, atol=1e-6), "the six lines and the package disagree"

# %% [markdown]
# Autograd computes the gradient of these lines for us, but the gradient is where the loss's
# behaviour is written: which pairs it pulls together, which it pushes apart, and how hard.
#
# **Exercise 02.gradient** (3 points). Derive, by hand, the gradient of the symmetric CLIP loss
# $\mathcal L = \tfrac12(\mathcal L_{I\to T} + \mathcal L_{T\to I})$ with respect to the logits, each
# direction being a mean over its *N* rows (or columns), and write `clip_loss_grad(logits)`: for an
# (N, N) matrix of logits, the (N, N) matrix of $\partial\mathcal L / \partial\,\mathrm{logits}_{ij}$.
# No autograd: the formula is the point. It must stay finite for logits up to 100.

# %% exercise="02.gradient"
def clip_loss_grad(logits: torch.Tensor) -> torch.Tensor:
    """(N, N) logits, rows = images, columns = texts -> (N, N) gradient of the symmetric CLIP loss."""
    ### BEGIN SOLUTION
    n = logits.shape[0]
    eye = torch.eye(n, dtype=logits.dtype, device=logits.device)
    rows = torch.softmax(logits, dim=1)  # image -> text: each row's softmax over the texts
    cols = torch.softmax(logits, dim=0)  # text -> image: each column's softmax over the images
    return (rows - eye + cols - eye) / (2 * n)
    ### END SOLUTION


# %% tags=["check"]
check.exercise("02.gradient", clip_loss_grad)

# %% [markdown]
# **The worked version.** For one row $z$ with right answer $i$, $-\log \mathrm{softmax}(z)_i = \log\sum_j
# e^{z_j} - z_i$, whose derivative with respect to $z_j$ is $\mathrm{softmax}(z)_j - [j = i]$. The image →
# text loss averages *N* rows, so its gradient is $(P - I)/N$ with $P$ the row-wise softmax; the text →
# image loss does the same on the columns, with $Q$ the column-wise softmax. Hence
#
# $$\frac{\partial \mathcal L}{\partial\, \mathrm{logits}} = \frac{(P - I) + (Q - I)}{2N}.$$
#
# Read it: a matching pair's entry is negative (gradient descent raises its logit, pulling the pair
# together) until the model gives it probability 1; a non-matching pair's entry is its probability
# (descent lowers the logit, pushing the pair apart) in proportion to how much the model currently
# believes the wrong match. The hardest negatives are pushed hardest, the easy ones hardly at all; no
# negative mining is needed. And since logits = cosines / τ, the gradient on a cosine is 1/τ times this:
# a small τ makes the softmaxes peaky and concentrates the push on the few hardest negatives. Autograd
# agrees, on the toy batch:

# %%
z = logits.clone().requires_grad_()
loss = 0.5 * (F.cross_entropy(z, labels) + F.cross_entropy(z.T, labels))
(by_autograd,) = torch.autograd.grad(loss, z)
eye = torch.eye(n)
by_formula = (torch.softmax(logits, dim=1) - eye + torch.softmax(logits, dim=0) - eye) / (2 * n)
print(f"largest difference between the formula and autograd: {(by_formula - by_autograd).abs().max():.1e}")
hardest = by_formula.masked_fill(eye.bool(), -math.inf).argmax(dim=1)  # the largest off-diagonal entry of each row
print("the negative pushed hardest in each row (image i -> text j):",
      ", ".join(f"{i}->{j}" for i, j in enumerate(hardest.tolist())))
fig, ax = plt.subplots(figsize=(3.8, 3.2))
lim = by_formula.abs().max().item()
im = ax.imshow(by_formula.numpy(), cmap="RdBu_r", vmin=-lim, vmax=lim)
ax.set_xlabel("text j")
ax.set_ylabel("image i")
ax.set_title("dL/dlogits: pull (blue), push (red)", fontsize=9)
fig.colorbar(im, ax=ax)
plt.tight_layout()
plt.show()

# %% [markdown] slideshow={"slide_type": "slide"}
# ## 4 · Where training starts, and what a margin buys
#
# Before training, an encoder has no idea which text goes with which image: its similarities are
# nearly equal, and so is the softmax over each row. That fixes the loss a fresh model starts from, and
# a loss that does not go below it means nothing was learned. As training goes on, the matching pairs
# pull ahead of the rest.
#
# **Exercise 02.margin** (2 points). Take an idealised batch of *N* pairs in which every matching
# pair's cosine is larger than every non-matching pair's cosine by the same **margin** *m* (and all
# the non-matching cosines are equal). Derive its CLIP loss at temperature τ and write
# `margin_loss(n, margin, tau)`, returning it as a number. A margin of 0 is a model that has learned
# nothing.

# %% exercise="02.margin"
def margin_loss(n: int, margin: float, tau: float) -> float:
    """The CLIP loss of n pairs whose positives beat every negative cosine by `margin`, at temperature tau."""
    ### BEGIN SOLUTION
    return math.log1p((n - 1) * math.exp(-margin / tau))
    ### END SOLUTION


# %% tags=["check"]
check.exercise("02.margin", margin_loss)

# %% [markdown]
# **The worked version.** Every row holds the positive's logit $(s + m)/\tau$ once and the negatives'
# $s/\tau$ *N − 1* times, so the positive's probability is $e^{m/\tau} / (e^{m/\tau} + N - 1)$ and
#
# $$\mathcal L = \ln\!\left(1 + (N - 1)\, e^{-m/\tau}\right).$$
#
# The columns give the same number, and so does their mean. At *m* = 0 it is **ln N**, the loss of a
# model that cannot tell the pairs apart, whatever τ: the chance level a CLIP training curve starts near
# (a fresh model's similarities are not exactly equal, so its first losses can even lie above it: watch
# the start of section 8's curve). The package agrees, below. For a large margin it is about $(N-1)\,e^{-m/\tau}$, close to 0.
# In between, at a fixed margin the loss grows like $\ln(N-1) - m/\tau$: the same model scores a higher
# loss on a bigger batch, so losses at different batch sizes compare only against their own ln N, and a
# batch *k* times larger needs a margin larger by about τ ln *k* to reach the same loss.

# %%
ones = F.normalize(torch.ones(256, 4), dim=1)  # every image and every text the same: all logits equal
print(f"all-equal logits, N = 256: clip_loss = {clip_loss(ones, ones, 14.3):.4f}, ln 256 = {math.log(256):.4f}")

batch_range = torch.logspace(1, math.log10(32768), 60)
fig, ax = plt.subplots(figsize=(5, 3.2))
for margin in (0.0, 0.1, 0.2, 0.4):
    curve = torch.log1p((batch_range - 1) * math.exp(-margin / 0.07))
    ax.plot(batch_range, curve, label=f"margin {margin}" + (" (chance, ln N)" if margin == 0 else ""))
ax.set_xscale("log", base=2)
ax.set_xlabel("batch size N")
ax.set_ylabel("CLIP loss at tau = 0.07")
ax.set_title("the same margin is worth less in a bigger batch", fontsize=9)
ax.legend(fontsize=8)
plt.tight_layout()
plt.show()
print(f"from N = 256 to CLIP's 32 768 the margin must grow by tau * ln(32768 / 256) = "
      f"{0.07 * math.log(32768 / 256):.3f} (cosine units, at tau = 0.07) to keep the same loss")

# %% [markdown] slideshow={"slide_type": "slide"}
# ## 5 · Temperature and the learnable logit scale
#
# Cosines live in [−1, 1]. A softmax over numbers that close is nearly uniform, so the logits are the
# cosines divided by a **temperature** τ. A small τ sharpens the distribution (the hardest negatives
# dominate the gradient, as section 3 showed); a large τ smooths it (an easier, but vaguer, objective).
#
# CLIP learns τ. It stores $t = \log(1/\tau)$ and multiplies by $e^{t}$: the log keeps the scale
# positive and makes its steps relative. $t$ starts at $\log(1/0.07) \approx 2.66$ and the
# multiplier is clipped at 100 (τ ≥ 0.01), because beyond that training became unstable.
#
# How sharp is "sharp"? Ask the converse question: how small must τ be before the right caption wins
# a given share of the probability?
#
# **Exercise 02.temperature** (3 points). Write `temperature_for(similarities, positive, p)`: for one
# row of cosines whose entry `positive` is its largest, the temperature τ > 0 at which the softmax of
# `similarities / tau` gives the positive probability *p* (with 1/N < *p* < 1), to a relative
# accuracy of 0.1 %. A general row has no closed-form answer: think about how the positive's
# probability moves as τ grows. Some cases need τ far below 0.01.

# %% exercise="02.temperature"
def temperature_for(similarities: torch.Tensor, positive: int, p: float) -> float:
    """(N,) cosines, the index of the positive (the row's largest), a probability p -> tau (a float)."""
    ### BEGIN SOLUTION
    lo, hi = math.log(1e-6), math.log(1e6)  # bisect on log tau: the probability falls as tau grows
    for _ in range(100):
        mid = (lo + hi) / 2
        if torch.softmax(similarities / math.exp(mid), dim=-1)[positive] > p:
            lo = mid
        else:
            hi = mid
    return math.exp((lo + hi) / 2)
    ### END SOLUTION


# %% tags=["check"]
check.exercise("02.temperature", temperature_for)

# %% [markdown]
# **The worked version.** As τ grows, the positive's probability falls steadily, from 1 (τ → 0: the
# largest entry takes everything) to 1/N (τ → ∞: the softmax turns uniform). Steadily, because the
# derivative of $\log p_+$ with respect to $1/\tau$ is $s_+ - \mathbb E_p[s]$, never negative when $s_+$
# is the row's largest cosine. A function that falls steadily crosses *p* exactly once, so bisection
# finds τ: keep an interval of log τ that brackets the answer, evaluate the probability (with a stable
# softmax) at its midpoint, keep the half that still brackets *p*. Here is the whole curve for one
# image of a batch of eight, embedded by the course CLIP (section 9 introduces it), with the points where
# it crosses three values of *p* read off the curve.

# %%
from mmcourse import pretrained
from mmcourse.widgets.temperature import TemperatureExplorer

clip = pretrained.load("clip_shapes", device=device)
demo = make_shapes(8, seed=21, split="train", style=("photo", "sketch", "flat", "cartoon"))
with torch.no_grad():
    demo_img, demo_txt = clip.encode_image(demo.images.to(device)).cpu(), clip.encode_text(demo.captions).cpu()
demo_cos = F.normalize(demo_img.double(), dim=1) @ F.normalize(demo_txt.double(), dim=1).T
row = 0
taus = torch.logspace(-3.5, 1.5, 500, dtype=torch.float64)
p_right = torch.stack([torch.softmax(demo_cos[row] / t, dim=0)[row] for t in taus])
learned_tau = 1 / clip.scale().item()
print(f"image {row}: {demo.captions[row]!r}; its caption is the row's largest cosine: "
      f"{bool(demo_cos[row].argmax() == row)}")

fig, ax = plt.subplots(figsize=(5.5, 3.4))
ax.plot(taus, p_right, color="tab:green", label="p(right caption)")
ax.axhline(1 / len(demo_cos), ls=":", color="gray", label="1/N (uniform)")
for target in (0.5, 0.9, 0.99):
    below = (p_right < target).nonzero()
    if len(below) and below[0, 0] > 0:  # the curve crosses target between grid points k - 1 and k
        k = below[0, 0].item()
        frac = (p_right[k - 1] - target) / (p_right[k - 1] - p_right[k])
        tau_at = math.exp(math.log(taus[k - 1]) + frac.item() * (math.log(taus[k]) - math.log(taus[k - 1])))
        ax.plot([tau_at], [target], "ko", ms=4)
        print(f"p = {target}: tau = {tau_at:.4f} (logit scale {1 / tau_at:.1f})")
ax.axvline(0.07, ls="--", color="tab:orange", lw=1, label="CLIP's start, 0.07")
ax.axvline(0.01, ls="--", color="tab:red", lw=1, label="the clamp, 1/100")
ax.axvline(learned_tau, ls="-", color="tab:purple", lw=1, label=f"learned, {learned_tau:.3f}")
ax.set_xscale("log")
ax.set_xlabel("temperature tau")
ax.set_ylabel("probability of the right caption")
ax.legend(fontsize=7)
plt.tight_layout()
plt.show()

# %% [markdown] slideshow={"slide_type": "slide"}
# ### Play: slide τ
#
# The same eight images and captions. Left: the softmax of one image's row over the eight captions;
# right: the loss of the whole batch as a function of τ. Watch the row go from uniform (large τ, loss
# near ln 8) to one-hot (small τ). The loss is lowest at a small τ only when the diagonal really is the
# largest entry of every row and column; the learned τ is the model's own compromise.

# %%
explorer = TemperatureExplorer(demo_img, demo_txt, [c[:28] for c in demo.captions], row=row)
print(f"the bundled model learned tau = {learned_tau:.4f} (logit scale {clip.scale().item():.1f})")
explorer.widget(tau=0.07)

# %% [markdown] slideshow={"slide_type": "notes"}
# Instructor: drag τ from 10 down to 0.003. At τ = 10 every caption gets about 1/8; near 0.07 the right
# caption dominates; the loss curve shows the batch loss falls as τ shrinks while every diagonal
# entry wins its row, and rises again if one pair is confused.

# %% [markdown] slideshow={"slide_type": "slide"}
# ## 6 · Batch size is the number of negatives
#
# Each row of the loss compares one positive with the *N − 1* other captions of the batch. A bigger
# batch gives every step more, and harder, negatives to tell apart — CLIP's 32 768 pairs per batch
# gave each image 32 767 of them, with no hard-negative mining at all.
#
# An experiment at toy scale. We freeze the course CLIP's image encoder and a bag-of-words text
# representation, and train only the two projections $W_i, W_t$ from scratch, for the same number
# of steps at several batch sizes. The question each model must answer afterwards: which of 64
# prompts "a {colour} {shape}" fits this image?

# %%
from mmcourse.losses import clip_loss_grouped
from mmcourse.models import bag_of_words
from mmcourse.models.clip import capped_scale
from mmcourse.zeroshot import color_shape_classes

classes = color_shape_classes()
prompts = [f"a {c} {s}" for c, s in classes]
pool = make_shapes(6000, seed=31, split="train", style=("photo", "photo", "flat", "cartoon", "sketch"))
probe = make_shapes(1000, seed=32, split="all")
with torch.no_grad():
    pool_img = clip.visual(pool.images.to(device)).cpu()
    probe_img = clip.visual(probe.images.to(device)).cpu()
pool_txt, prompt_txt = bag_of_words(pool.captions), bag_of_words(prompts)
probe_truth = torch.tensor([classes.index(p) for p in probe.combos])


def train_projections(batch_size, steps=150, seed=0, groups=None):
    """Fresh projections W_i, W_t and logit scale, trained with the CLIP loss; returns zero-shot accuracy.
    ``groups`` (one id per pool item) switches to group-level targets (section 7)."""
    torch.manual_seed(seed)
    w_i = torch.nn.Linear(pool_img.shape[1], 32, bias=False)
    w_t = torch.nn.Linear(pool_txt.shape[1], 32, bias=False)
    t = torch.nn.Parameter(torch.tensor(math.log(1 / 0.07)))
    opt = torch.optim.Adam([*w_i.parameters(), *w_t.parameters(), t], lr=1e-2)
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        idx = torch.randint(0, len(pool_img), (batch_size,), generator=g)
        img, txt, scale = F.normalize(w_i(pool_img[idx]), dim=1), F.normalize(w_t(pool_txt[idx]), dim=1), capped_scale(t)
        loss = clip_loss(img, txt, scale) if groups is None else clip_loss_grouped(img, txt, scale, groups[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        sims = F.normalize(w_i(probe_img), dim=1) @ F.normalize(w_t(prompt_txt), dim=1).T
    return (sims.argmax(1) == probe_truth).float().mean().item()


batch_sizes = [2, 4, 8, 16, 32, 64, 128, 256]
start = time.perf_counter()
acc_by_batch = [train_projections(b) for b in batch_sizes]
print(f"{len(batch_sizes)} runs in {time.perf_counter() - start:.1f} s")
fig, ax = plt.subplots(figsize=(5, 3.2))
ax.plot(batch_sizes, acc_by_batch, "o-")
ax.axhline(1 / 64, ls=":", color="gray", label="chance (1/64)")
ax.set_xscale("log", base=2)
ax.set_xlabel("batch size N (N - 1 negatives per positive)")
ax.set_ylabel("64-way zero-shot accuracy")
ax.set_title("same number of steps, more negatives per step")
ax.legend()
plt.tight_layout()
plt.show()
for b, a in zip(batch_sizes, acc_by_batch):
    print(f"N = {b:4d}: {a:.3f}")

# %% [markdown] slideshow={"slide_type": "fragment"}
# With two pairs per batch a model only learns to tell two captions apart, which is rarely hard; the
# bigger the batch, the likelier a negative that differs from the positive in a single word ("a red
# square" against "a red diamond"), and those are what teach the fine distinctions. (A bigger batch
# also sees more data per step; CLIP's argument is that the contrastive signal per step grows with
# *N* too.)

# %% [markdown] slideshow={"slide_type": "slide"}
# ## 7 · False negatives
#
# The loss assumes that text *j* is wrong for image *i* whenever *j ≠ i*. On the web that is nearly
# always true. In a small world it is not: ours has only a few dozen colour–shape pairs for training
# (the cell below counts them), and a batch of 256 images is certain to hold several images that one
# caption describes equally well. Those captions are **false negatives**: the loss pushes them away
# from images they fit.

# %%
from mmcourse.data.shapes import HELDOUT_COMBOS

batch = make_shapes(256, seed=41, split="train")  # varied captions, as in training
counts = {}
for c in batch.captions:
    counts[c] = counts.get(c, 0) + 1
same_content = sum(a == b for a in batch.combos for b in batch.combos) - len(batch)
same_string = sum(k * (k - 1) for k in counts.values())
print(f"{len(classes) - len(HELDOUT_COMBOS)} colour-shape pairs for training ({len(HELDOUT_COMBOS)} of "
      f"{len(classes)} held out)")
print(f"{len(counts)} distinct captions among {len(batch)}; ordered pairs (i, j), i != j, that are false negatives:")
print(f"  same caption string:                  {same_string:5d}")
print(f"  same colour and shape, any wording:   {same_content:5d}   e.g. {batch.captions[0]!r} / "
      f"{next(batch.captions[j] for j in range(1, len(batch)) if batch.combos[j] == batch.combos[0])!r}")

# %% [markdown]
# **Identical captions are harmless.** Two copies of "a red square" get the *same* text embedding, so
# their two columns of the logits are equal: row *i* cannot prefer its own copy, and the loss has a
# floor of $\frac1N\sum_i \ln k_i$ for captions that appear $k_i$ times. But that floor is all they do.
# The fix one might reach for, **caption-level targets** (every copy counts as a positive, each row's
# target spread evenly over them), gives exactly the same loss and the same gradients for the
# encoders. Check it on the bundled model, with the package's `clip_loss_grouped`:

# %%
from mmcourse.losses import caption_groups, clip_loss_grouped

images_b = batch.images.to(device)
grads = {}
for name in ("plain targets", "caption-level targets"):
    clip.zero_grad()
    img_b, txt_b, scale_b = clip(images_b, batch.captions)
    groups = caption_groups(batch.captions).to(device)
    loss = clip_loss(img_b, txt_b, scale_b) if name == "plain targets" else clip_loss_grouped(img_b, txt_b, scale_b, groups)
    loss.backward()
    grads[name] = torch.cat([p.grad.flatten() for p in clip.parameters()])
    print(f"{name:22s} loss {loss.item():.6f}   gradient norm {grads[name].norm():.6f}")
clip.zero_grad()
diff = (grads["plain targets"] - grads["caption-level targets"]).norm() / grads["plain targets"].norm()
print(f"relative difference of the two gradients: {diff:.1e} (float rounding)")

# %% [markdown] slideshow={"slide_type": "slide"}
# **Different words for the same thing are not.** "a red square" and "a small red square" are
# different strings, their embeddings differ, and with plain targets the loss pushes the second
# away from an image the first describes. In the shapes world we *know* what each image shows, so we
# can measure what these false negatives cost: train the projections of section 6 again, once with
# plain targets and once with **content-level targets** (every pair showing the same colour and shape
# is a positive), at growing batch sizes.
#
# **Exercise 02.false_negatives** (3 points). Write `grouped_clip_loss(logits, keys)`: the CLIP loss
# of an (N, N) matrix of logits with *group-level* targets. `keys` holds one string per pair; row *i*
# counts every text *j* whose key equals key *i* as a right answer, sharing its target evenly among
# them (1/k each when *k* keys are equal), column *i* likewise for the images, and the loss is the
# mean of the two directions, as before. Pass it captions as keys and you get caption-level targets;
# pass it the content ("red square") and you get content-level ones. With all keys different it must be
# the plain CLIP loss.

# %% exercise="02.false_negatives"
def grouped_clip_loss(logits: torch.Tensor, keys: list[str]) -> torch.Tensor:
    """(N, N) logits, N strings -> scalar symmetric CLIP loss in which pairs with equal keys are positives."""
    ### BEGIN SOLUTION
    same = torch.tensor([[float(a == b) for b in keys] for a in keys], dtype=logits.dtype, device=logits.device)
    targets = same / same.sum(dim=1, keepdim=True)  # row i: 1/k on each of the k pairs sharing key i
    return 0.5 * (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets))
    ### END SOLUTION


# %% tags=["check"]
check.exercise("02.false_negatives", grouped_clip_loss)

# %% [markdown]
# **The worked version.** The target matrix has $1/k$ wherever two keys agree and 0 elsewhere: every row
# sums to 1, and it is symmetric, so the columns use the same matrix. `F.cross_entropy` accepts such a
# matrix of probabilities in place of class indices and computes $-\sum_j t_{ij} \log p_{ij}$ per row.
# The package builds the same targets (`grouped_targets`) and loss (`clip_loss_grouped`); here are its
# targets for three captions, and then the experiment with content-level targets.

# %%
from mmcourse.losses import grouped_targets

pool_content = caption_groups([f"{c} {s}" for c, s in pool.combos])  # what each training image shows
print(f"caption-level targets of ['a', 'b', 'a']:\n{grouped_targets(caption_groups(['a', 'b', 'a']))}")
print(f"{'batch':>6s}{'plain targets':>16s}{'content-level':>16s}   (error rate of 64-way zero-shot)")
for b in (16, 64, 256, 1024):
    plain_acc = train_projections(b)
    content_acc = train_projections(b, groups=pool_content)
    print(f"{b:6d}{1 - plain_acc:16.3f}{1 - content_acc:16.3f}")

# %% [markdown] slideshow={"slide_type": "fragment"}
# Compare the two columns as the batch grows. With plain targets a bigger batch brings more negatives,
# and more of them are false; content-level targets remove those. Real image–text data has no labels to
# group by; remedies there estimate the grouping (drop or down-weight negatives whose caption is too
# similar to the positive's) or soften all targets. The course CLIP simply uses the plain loss.

# %% [markdown] slideshow={"slide_type": "slide"}
# ## 8 · Train a CLIP, live
#
# Now the whole model: a small CNN for images and a bag-of-words encoder for text, each with its
# projection, and the learnable logit scale; `mmcourse.models.CLIP` wires them as in the pseudocode.
# A few seconds of training on a CPU (the cell prints how long), on simple photos:

# %%
from mmcourse.models import CLIP
from mmcourse.losses import contrastive_loss

torch.manual_seed(0)
small = CLIP(image={"kind": "cnn", "out_dim": 64, "width": 16}, text={"kind": "bow", "width": 32}, embed_dim=32)
live = make_shapes(2048, seed=51, split="train", captions="plain")
opt = torch.optim.AdamW(small.parameters(), lr=3e-3)
g = torch.Generator().manual_seed(0)
live_losses, start = [], time.perf_counter()
small.train()
for step in range(120):
    idx = torch.randint(0, len(live), (128,), generator=g).tolist()
    loss = contrastive_loss(small, live.images[idx], [live.captions[i] for i in idx])
    opt.zero_grad()
    loss.backward()
    opt.step()
    small.clamp_logit_scale_()
    live_losses.append(loss.item())
small.eval()
print(f"120 steps in {time.perf_counter() - start:.1f} s; loss {live_losses[0]:.2f} -> {sum(live_losses[-10:]) / 10:.2f} "
      f"(ln 128 = {math.log(128):.2f}); logit scale {small.scale().item():.1f}")
fig, ax = plt.subplots(figsize=(5, 3))
ax.plot(live_losses)
ax.axhline(math.log(128), ls=":", color="gray", label="ln N: chance")
ax.set_xlabel("step")
ax.set_ylabel("CLIP loss")
ax.legend()
plt.tight_layout()
plt.show()

# %% [markdown] slideshow={"slide_type": "slide"}
# ## 9 · The course CLIP, and the paper's
#
# The bundled model is the same recipe at a larger scale: a CNN image encoder, a small text
# transformer (causal attention, features read at the end-of-text token, as in CLIP), trained on a
# stream of fresh images in mixed styles (photo, flat, cartoon, sketch) with varied captions, and never
# shown the eight held-out colour–shape pairs. The paper's CLIP is the same recipe at web scale. The
# table sets the two side by side: the left column quotes the CLIP paper (Radford et al., 2021) and
# the lecture; the right column is read from the course model and its card, so it stays true when the
# checkpoint is rebuilt.

# %%
info = pretrained.card("clip_shapes")
cfg, metrics = info["config"], info["metrics"]
text_cfg = clip.text.config
pairs_seen = metrics["steps"] * metrics["batch_size"]
table = [
    ("", "CLIP (paper)", "the course CLIP"),
    ("training data", "400 M web image-text pairs (WIT)", "the shapes world: generated pairs, fresh every step"),
    ("pairs seen", f"32 epochs x 400 M = {32 * 400e6 / 1e9:.1f} B", f"{metrics['steps']:,} steps x {metrics['batch_size']} = "
     f"{pairs_seen:,} (each once)"),
    ("batch size N", "32 768 (32 767 negatives)", f"{metrics['batch_size']} ({metrics['batch_size'] - 1} negatives)"),
    ("image tower", "ResNet-50 (RN-50) ... RN50x64, ViT-B/32, ViT-B/16, ViT-L/14",
     f"{cfg['image']['kind'].upper()}, width {cfg['image']['width']}, {cfg['image']['out_dim']} features"),
    ("text tower", "transformer, 12 layers, 512 wide, 8 heads (63 M parameters)",
     f"transformer, {text_cfg['layers']} layers, {text_cfg['width']} wide, {text_cfg['heads']} heads "
     f"({sum(p.numel() for p in clip.text.parameters()):,} parameters)"),
    ("text input", "76 BPE tokens, 49 152-token vocabulary", f"{text_cfg['context_length']} tokens, "
     f"{text_cfg['vocab_size']}-token vocabulary"),
    ("joint embedding", "512 (RN-101, ViT-B), 768 (ViT-L/14), 1 024 (RN-50)", f"{cfg['embed_dim']}"),
    ("logit scale 1/tau", "learned, from 1/0.07, capped at 100", f"learned, from 1/0.07, capped at 100: "
     f"{clip.scale().item():.1f} now"),
    ("training compute", "ViT-L/14: 12 days on 256 V100 GPUs", f"{info['train']['seconds']:.0f} s on "
     f"{info['train']['machine']}"),
]
width = max(len(r[0]) for r in table)
for i, (what, paper, ours) in enumerate(table):
    print(f"{what:{width}s} | {paper:60s} | {ours}")
    if i == 0:
        print("-" * (width + 1) + "+" + "-" * 62 + "+" + "-" * 40)
print(f"\nthe lecture's '333x ImageNet': 400 M / 1.2 M = {400e6 / 1.2e6:.0f}; with ImageNet-1k's "
      f"1 281 167 training images it is {400e6 / 1_281_167:.0f}x")
print(f"the course CLIP has {sum(p.numel() for p in clip.parameters()):,} parameters in all")
for key, value in metrics["zero_shot"].items():
    print(f"  course CLIP, zero-shot 64-way, {key:16s} accuracy {value['accuracy']:.3f}")

# %% [markdown]
# Two corrections to the lecture's slide. Its "512- or 768-dim" embeddings hold for ViT-B/32 (512) and
# ViT-L/14 (768), but the released ResNet-50 CLIP embeds in 1 024 dimensions. And its "12 layers, 8
# attention heads" text transformer is the base size (512 wide); the paper widens the text tower with
# the image tower, so ViT-L/14's is 768 wide with 12 heads (open_clip's model configurations list them).
# The "333×" divides 400 M by ImageNet's 1.2 M images as the lecture rounds them, see the output above.
#
# The similarity matrix of a fresh batch: twelve images against their twelve captions.

# %%
from mmcourse.plots import image_grid, show_images
from mmcourse.retrieval import cosine_similarity, recall_table

shown = make_shapes(12, seed=61, split="all", style=("photo", "sketch", "cartoon"))
with torch.no_grad():
    sims = cosine_similarity(clip.encode_image(shown.images.to(device)), clip.encode_text(shown.captions)).cpu()
fig, (ax_img, ax) = plt.subplots(2, 1, figsize=(9, 8.5), gridspec_kw={"height_ratios": [1, 6]})
ax_img.imshow(image_grid(shown.images), interpolation="nearest")
ax_img.axis("off")
ax_img.set_title("images 0-11")
im = ax.imshow(sims.numpy(), cmap="viridis")
ax.set_yticks(range(12), [f"image {i}" for i in range(12)], fontsize=7)
ax.set_xticks(range(12), [c[:30] for c in shown.captions], rotation=45, ha="right", fontsize=7)
ax.set_title("cosine(image, caption)")
fig.colorbar(im, ax=ax, shrink=0.7)
plt.tight_layout()
plt.show()

# %% [markdown]
# The diagonal is bright: each image is closest to its own caption. The bright cells off the diagonal
# are worth a look: they are mostly images and captions of the same colour and shape in other words
# ("a doodle of a golden triangle", "there is a yellow wedge in the ..."): false negatives, as in
# section 7, which the model rightly refuses to push apart.

# %% [markdown] slideshow={"slide_type": "slide"}
# ### Retrieval, both ways
#
# A gallery of 1 000 images with their captions, seen and held-out pairs alike. A caption counts as
# relevant to every image with the same colour–shape subject (many images share one), and Recall@K is
# measured in both directions as in notebook 01.

# %%
gallery = make_shapes(1000, seed=62, split="all", style="photo")
with torch.no_grad():
    g_img = clip.encode_image(gallery.images.to(device)).cpu()
    g_txt = clip.encode_text(gallery.captions).cpu()
relevant = torch.tensor([[a == b for b in gallery.combos] for a in gallery.combos])
table = recall_table(g_img, g_txt, relevant)
for direction, scores in table.items():
    print(f"{direction:15s}" + "  ".join(f"R@{k} {v:.3f}" for k, v in scores.items()))

query = "a red triangle"  # a held-out pair: no red triangle was ever in training
with torch.no_grad():
    q = clip.encode_text([query]).cpu()
top = cosine_similarity(q, g_img)[0].topk(8).indices.tolist()
show_images(gallery.images[top], [" ".join(gallery.combos[i]) for i in top], size=1.25,
            title=f'text -> image: top 8 for "{query}"')

# %% [markdown] slideshow={"slide_type": "slide"}
# ## 10 · Bag of words or transformer?
#
# The CLIP paper's Fig. 2 compares three training **objectives** at equal compute, by the zero-shot
# ImageNet accuracy they reach: a transformer language model that predicts the caption word by word
# learned about 3× more slowly than a model that predicts the caption's bag of words, and replacing that
# prediction by the **contrastive** objective (with a bag-of-words text encoder) made it another 4× more
# efficient. That figure is the paper's case for the loss of this notebook.
#
# Our experiment asks a different, smaller question, and we say so: both of our text towers are
# trained with the same contrastive loss; what differs is the **tower**. With the course CLIP's image
# side frozen, we train a fresh bag-of-words encoder and a fresh two-layer transformer on the same
# batches, and ask both to classify 64 colour–shape pairs, including the eight pairs no caption ever
# mentioned together. The bag of words gets two budgets: the transformer's number of steps, and six
# times as many.

# %%
from mmcourse.models.text import BagOfWordsEncoder, TextTransformer

text_pool = make_shapes(4096, seed=71, split="train", style=("photo", "photo", "flat", "cartoon", "sketch"))
with torch.no_grad():
    frozen_img = F.normalize(clip.encode_image(text_pool.images.to(device)).cpu(), dim=1)
tests = {name: make_shapes(600, seed=72, split=split) for name, split in (("seen", "train"), ("held-out", "heldout"))}
with torch.no_grad():
    test_img = {name: F.normalize(clip.encode_image(d.images.to(device)).cpu(), dim=1) for name, d in tests.items()}


pool_ids = clip.tokenize(text_pool.captions)  # both encoders read the same token ids


def train_text_encoder(encoder, steps=100, batch_size=256, seed=0):
    torch.manual_seed(seed)
    head = torch.nn.Linear(encoder.width, clip.embed_dim, bias=False)
    params = [*encoder.parameters(), *head.parameters()]
    opt = torch.optim.AdamW(params, lr=3e-3)
    g = torch.Generator().manual_seed(seed)
    start = time.perf_counter()
    for _ in range(steps):
        idx = torch.randint(0, len(text_pool), (batch_size,), generator=g)
        txt = F.normalize(head(encoder(pool_ids[idx])), dim=1)
        loss = clip_loss(frozen_img[idx], txt, clip.scale().detach())
        opt.zero_grad()
        loss.backward()
        opt.step()
    seconds = time.perf_counter() - start
    with torch.no_grad():
        cls = F.normalize(head(encoder(encoder.tokenize(prompts))), dim=1)
    acc = {name: (test_img[name] @ cls.T).argmax(1).eq(torch.tensor([classes.index(p) for p in d.combos])).float().mean().item()
           for name, d in tests.items()}
    return acc, seconds, loss.item()


runs = [("bag of words", 100), ("bag of words", 600), ("transformer", 100)]
results = {}
print(f"{'text encoder':14s}{'steps':>6s}{'params':>9s}{'seconds':>9s}{'loss':>7s}{'seen':>7s}{'held-out':>10s}")
for name, steps in runs:
    torch.manual_seed(0)
    enc = BagOfWordsEncoder(width=64) if name == "bag of words" else TextTransformer(width=64, layers=2)
    acc, sec, last = train_text_encoder(enc, steps=steps)
    results[name, steps] = acc, sec
    print(f"{name:14s}{steps:6d}{sum(p.numel() for p in enc.parameters()):9,d}{sec:9.1f}{last:7.2f}"
          f"{acc['seen']:7.3f}{acc['held-out']:10.3f}")
(bow_acc, bow_sec), (tf_acc, tf_sec) = results["bag of words", 600], results["transformer", 100]
print(f"\nmilliseconds per step: bag of words {1000 * results['bag of words', 100][1] / 100:.1f}, "
      f"transformer {1000 * tf_sec / 100:.1f}")
print(f"the 600-step bag of words took {bow_sec / tf_sec:.2f}x the transformer's time and scores "
      f"{bow_acc['held-out'] - tf_acc['held-out']:+.3f} on held-out pairs")

# %% [markdown] slideshow={"slide_type": "fragment"}
# Read the table (the seconds are measured on your machine): step for step, compare the two
# 100-step rows; time for time, the 600-step bag of words against the 100-step transformer. A
# transformer can model which words go together, so a step teaches it more; a bag-of-words step costs a
# fraction of a transformer step. In this world a caption's meaning is nearly the sum of its words
# ("red" + "triangle"), which is exactly what a bag of words computes. Where order matters ("a red circle
# left of a blue square" against "a blue circle left of a red square"), a bag of words cannot even tell
# the two apart, and that is why the bundled model uses a transformer. None of this is the paper's
# Fig. 2, which held the text encoder fixed and changed the objective.

# %% [markdown] slideshow={"slide_type": "slide"}
# ## 11 · Scaling the batch
#
# CLIP's batch of 32 768 pairs makes a 32 768 × 32 768 matrix of logits: 4 GiB in fp32, and autograd
# keeps more such matrices (the softmaxes) for the backward pass. Two ideas make large batches
# affordable, and the package implements both.
#
# **Never store the N × N matrix.** The loss only needs, for every row and every column, a
# log-sum-exp and the diagonal entry. `mmcourse.kernels.fused_clip_loss` computes the logits a block
# at a time, keeps a running log-sum-exp per row and per column, and recomputes the blocks in the
# backward pass: memory grows like *N · D* instead of *N²*. On a GPU it is a Triton kernel; elsewhere
# the same algorithm runs in PyTorch chunks. Below we count what each version keeps for the backward
# pass (every tensor autograd saves), on this machine.

# %%
from mmcourse.kernels import fused_clip_loss


def saved_for_backward(loss_fn, n, d=64):
    """Bytes of the tensors autograd saves while computing the loss of n random pairs (and the loss)."""
    g = torch.Generator().manual_seed(n)
    img = F.normalize(torch.randn(n, d, generator=g), dim=1).requires_grad_()
    txt = F.normalize(torch.randn(n, d, generator=g), dim=1).requires_grad_()
    storages = {}

    def pack(t):
        storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = loss_fn(img, txt, torch.tensor(1 / 0.07))
    return sum(storages.values()), loss.item()


sizes = [512, 1024, 2048, 4096, 8192]
naive_bytes, fused_bytes = [], []
for n in sizes:
    (nb, naive_value), (fb, fused_value) = saved_for_backward(clip_loss, n), saved_for_backward(fused_clip_loss, n)
    assert abs(naive_value - fused_value) < 1e-4, "the fused loss has the same value"
    naive_bytes.append(nb)
    fused_bytes.append(fb)
    print(f"N = {n:5d}: naive keeps {nb / 2**20:8.1f} MiB, fused {fb / 2**20:6.2f} MiB  (loss {naive_value:.4f} both)")
fig, ax = plt.subplots(figsize=(5, 3.2))
ax.loglog(sizes, [b / 2**20 for b in naive_bytes], "o-", label="naive: the N x N logits and softmaxes")
ax.loglog(sizes, [b / 2**20 for b in fused_bytes], "s-", label="fused: features and per-row/column statistics")
ax.set_xlabel("batch size N")
ax.set_ylabel("MiB kept for the backward pass")
ax.legend(fontsize=8)
plt.tight_layout()
plt.show()


# %% [markdown] slideshow={"slide_type": "slide"}
# **Several processes, one batch of negatives.** CLIP spread its batch over many GPUs. If each of *W*
# processes (ranks) computed the loss on its own *N / W* pairs, every image would meet only *N / W − 1*
# negatives. Instead each rank gathers every rank's features (`all_gather_with_grad`, which also sends
# the gradients back), in rank order, so that all ranks hold the same (N, D) matrices of the whole
# batch; then each rank computes the loss of its own pairs only, against all the others.
#
# **Exercise 02.local_loss** (3 points). Write `rank_loss(image_features, text_features, logit_scale,
# rank, world_size)`: given the gathered, L2-normalised (N, D) features of the whole batch (rank 0's
# pairs first) and the multiplier `logit_scale`, the loss that rank `rank` of `world_size` computes
# (*N* divisible by *W*): its images classify all *N* texts, its texts classify all *N* images, and it
# returns the mean of the two directions over its own pairs. Averaged over the *W* ranks, these losses
# must give the loss of the whole batch.

# %% exercise="02.local_loss"
def rank_loss(image_features: torch.Tensor, text_features: torch.Tensor, logit_scale, rank: int,
              world_size: int) -> torch.Tensor:
    """Gathered (N, D) features, the multiplier, this rank and W -> this rank's scalar share of the CLIP loss."""
    ### BEGIN SOLUTION
    per = image_features.shape[0] // world_size
    mine = slice(rank * per, (rank + 1) * per)
    labels = torch.arange(per, device=image_features.device) + rank * per  # the right answers in the gathered batch
    logits_per_image = logit_scale * image_features[mine] @ text_features.T  # (N / W, N)
    logits_per_text = logit_scale * text_features[mine] @ image_features.T  # (N / W, N)
    return 0.5 * (F.cross_entropy(logits_per_image, labels) + F.cross_entropy(logits_per_text, labels))
    ### END SOLUTION


# %% tags=["check"]
check.exercise("02.local_loss", rank_loss)

# %% [markdown]
# **The worked version.** Rank *r* holds the rows $rN/W \dots (r+1)N/W - 1$ of the batch. It scores its
# images against all *N* texts, an (N/W) × N block of the logits, and its texts against all *N* images,
# another such block; image *i* of the rank has its right answer at column $rN/W + i$ of the gathered
# batch, not at column *i*. Each rank's loss averages over its own N/W rows, so the mean of the *W*
# local losses is the mean over all *N* rows: the loss of the whole batch. The package's
# `mmcourse.distributed.local_clip_loss` is this function (it takes the rank's slice and the offset
# $rN/W$); here the *W* "processes" are slices of one batch, so the arithmetic is visible, and
# `mmcourse train clip_shapes --nproc 2` runs the real thing with `torch.distributed`.

# %%
from mmcourse.distributed import local_clip_loss

g = torch.Generator().manual_seed(7)
n, w = 512, 4
img = F.normalize(torch.randn(n, 32, generator=g), dim=1)
txt = F.normalize(img + 0.8 * torch.randn(n, 32, generator=g), dim=1)
per = n // w
gathered = [local_clip_loss(img[r * per:(r + 1) * per], txt[r * per:(r + 1) * per], 10.0, img, txt, offset=r * per)
            for r in range(w)]
alone = [clip_loss(img[r * per:(r + 1) * per], txt[r * per:(r + 1) * per], 10.0) for r in range(w)]
print(f"whole batch of {n}:                       {clip_loss(img, txt, 10.0):.4f}")
print(f"mean of {w} local losses with gathering:    {torch.stack(gathered).mean():.4f}   ({n - 1} negatives each)")
print(f"mean of {w} local losses without it:        {torch.stack(alone).mean():.4f}   ({per - 1} negatives each)")

# %% [markdown] slideshow={"slide_type": "slide"}
# ## What to remember
#
# * The CLIP loss is two cross-entropies over a similarity matrix: each row (an image) classifies the
#   batch's texts, each column (a text) classifies its images; the labels are the diagonal. Each row is
#   the lecture's InfoNCE, a log-sum-exp minus the positive's logit, stable once the row's maximum is
#   subtracted.
# * Its gradient with respect to the logits is (softmax − one-hot) / N per direction: matching pairs are
#   pulled together, and every negative is pushed apart in proportion to the probability the model gives it.
# * A model that has learned nothing scores ln N; a loss below that is knowledge. At a fixed margin the
#   loss rises with the batch size, so compare losses against their own ln N.
# * The logit scale 1/τ is learned in log space, starts at 1/0.07 and is clipped at 100; small τ makes
#   the softmax peaky and the hardest negatives count most.
# * The batch is the source of negatives: bigger batches, harder and more negatives per step.
# * False negatives are captions that also fit another image of the batch. Identical captions are
#   harmless; different words for the same content cost accuracy, and grouping them as positives
#   (when the content is known) wins it back.
# * CLIP did this at web scale: 400 M pairs, batches of 32 768, ViT and ResNet image towers, a 12-layer
#   text transformer; the course CLIP is the same recipe, small enough to train on a laptop.
# * The loss needs only a log-sum-exp per row and column, so it can be computed without storing the
#   N × N matrix, and gathered over processes so every image meets every negative.
#
# ## References
#
# * A. Radford et al. *Learning transferable visual models from natural language supervision (CLIP).* ICML 2021.
# * A. van den Oord, Y. Li, O. Vinyals. *Representation learning with contrastive predictive coding (InfoNCE).* 2018.
# * G. Ilharco et al. *OpenCLIP.* 2021 (`open_clip`'s `ClipLoss`, the loss our tests compare with, and its
#   model configurations, the source of the embedding widths quoted in section 9).
# * T. Chen et al. *A simple framework for contrastive learning of visual representations (SimCLR).* ICML 2020.
