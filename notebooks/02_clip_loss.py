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
# 1. write contrastive learning as an **N-way classification per row** of a similarity matrix, and
#    see why the code calls `F.cross_entropy`;
# 2. make it **symmetric** (images → texts and texts → images), as CLIP does;
# 3. see what the **temperature** τ and the learnable **logit scale** 1/τ do to the softmax;
# 4. measure how the **batch size**, the number of negatives, changes what a model learns;
# 5. meet **false negatives** (two images with the same caption in one batch) and fix them;
# 6. train a small CLIP live, then study the course's bundled CLIP: similarity heatmap, retrieval
#    both ways, Recall@K, and a bag-of-words text encoder against a transformer;
# 7. see how the loss scales to huge batches: without the N × N matrix, and over several processes.
#
# About 60 minutes. Everything runs on a laptop CPU in under a minute; the bundled model
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
# CLIP has two encoders, one for an image and one for a sentence describing it, and aligns their
# outputs with a contrastive loss: pull each image–text pair together, push the other pairs of the
# batch apart. The paper's pseudocode, in NumPy style:
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
# low everything else.

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
# Take row *i*: image *i* against all *N* texts. Exactly one of them, text *i*, is right. That is a
# classification problem with *N* classes whose correct class is *i*, and its loss is the
# cross-entropy of a softmax over the row (the **InfoNCE** loss):
#
# $$\mathcal L_i = -\log \frac{\exp(s_{ii}/\tau)}{\sum_{j=1}^{N} \exp(s_{ij}/\tau)},\qquad s_{ij} = \cos(\mathbf z^{I}_i, \mathbf z^{T}_j).$$
#
# Averaged over the rows, it is exactly `F.cross_entropy(logits, labels)` with `labels = arange(N)`:
# the "class" of row *i* is its own index. That is why CLIP's PyTorch code is so short. With a batch of
# 1 024 pairs each image has one positive and 1 023 negatives; CLIP trained with 32 768 pairs per batch,
# so 32 767 negatives.

# %%
# the same loss written out: log-softmax of each row, then the diagonal entry
log_probs = logits - torch.logsumexp(logits, dim=1, keepdim=True)
by_hand = -log_probs.diagonal().mean()
by_cross_entropy = F.cross_entropy(logits, torch.arange(n))
print(f"by hand: {by_hand:.6f}   F.cross_entropy: {by_cross_entropy:.6f}")

# %% [markdown]
# **Exercise 02.infonce** (2 points). Write `infonce(logits)`: the image → text loss of an `(N, N)`
# matrix of logits whose rows are images and columns texts, averaged over the rows. It must stay
# finite for logits as large as 100 (the logit scale is allowed to grow that far).

# %% exercise="02.infonce"
def infonce(logits: torch.Tensor) -> torch.Tensor:
    """(N, N) logits, rows = images, columns = texts -> scalar mean cross-entropy of the rows."""
    ### BEGIN SOLUTION
    labels = torch.arange(logits.shape[0], device=logits.device)
    return F.cross_entropy(logits, labels)
    ### END SOLUTION


# %% tags=["check"]
check.exercise("02.infonce", infonce)

# %% [markdown] slideshow={"slide_type": "slide"}
# ## 3 · The symmetric loss
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
# **Exercise 02.symmetric** (2 points). Write `symmetric_clip_loss(image_features, text_features,
# logit_scale)` for L2-normalised `(N, D)` features and the multiplier `logit_scale` (= 1/τ, already
# exponentiated). Reuse your `infonce`.

# %% exercise="02.symmetric"
def symmetric_clip_loss(image_features: torch.Tensor, text_features: torch.Tensor, logit_scale) -> torch.Tensor:
    """(N, D), (N, D) normalised features, a scalar multiplier -> scalar symmetric CLIP loss."""
    ### BEGIN SOLUTION
    logits = logit_scale * image_features @ text_features.T
    return 0.5 * (infonce(logits) + infonce(logits.T))
    ### END SOLUTION


# %% tags=["check"]
check.exercise("02.symmetric", symmetric_clip_loss)

# %% [markdown]
# The package's version, `mmcourse.losses.clip_loss`, is what the rest of the course uses. Its tests
# compare it, value and gradients, with `open_clip`'s `ClipLoss`; here we compare it with the six
# lines above, run on our toy batch.

# %%
from mmcourse.losses import clip_loss

tau = 0.07
six_lines_logits = (image_emb @ text_emb.t()) / tau
labels = torch.arange(len(image_emb))
six_lines = 0.5 * (F.cross_entropy(six_lines_logits, labels) + F.cross_entropy(six_lines_logits.t(), labels))
package = clip_loss(image_emb, text_emb, 1 / tau)
print(f"CLIP in 6 lines: {six_lines:.6f}   mmcourse.losses.clip_loss: {package:.6f}")
assert torch.allclose(six_lines, package, atol=1e-6), "the six lines and the package disagree"

# %% [markdown] slideshow={"slide_type": "slide"}
# ## 4 · Where training starts: ln N
#
# Before training, an encoder has no idea which text goes with which image; its similarities are
# nearly equal, and so is the softmax over each row. That fixes the loss a fresh model starts from,
# and a loss that does not go below it means nothing was learned.
#
# **Exercise 02.chance** (1 point). Write `chance_loss(n)`: the CLIP loss (a number) when all *N × N*
# logits are equal.

# %% exercise="02.chance"
def chance_loss(n: int) -> float:
    """The loss of a batch of n pairs whose logits are all equal."""
    ### BEGIN SOLUTION
    return math.log(n)
    ### END SOLUTION


# %% tags=["check"]
check.exercise("02.chance", chance_loss)

# %%
print(f"all-equal logits, N = 256: clip_loss = {clip_loss(torch.ones(256, 4) / 2, torch.ones(256, 4) / 2, 14.3):.4f}, "
      f"ln 256 = {math.log(256):.4f}")

# %% [markdown] slideshow={"slide_type": "slide"}
# ## 5 · Temperature and the learnable logit scale
#
# Cosines live in [−1, 1]. A softmax over numbers that close is nearly uniform, so the logits are the
# cosines divided by a **temperature** τ. A small τ sharpens the distribution (the hardest negatives
# dominate the gradient); a large τ smooths it (an easier, but vaguer, objective).
#
# CLIP learns τ. It stores $t = \log(1/\tau)$ and multiplies by $e^{t}$: the log keeps the scale
# positive and makes its steps relative. $t$ starts at $\log(1/0.07) \approx 2.66$ and the
# multiplier is clipped at 100 (τ ≥ 0.01), because beyond that training became unstable.
#
# **Exercise 02.temperature** (2 points). Write `softmax_with_temperature(similarities, tau)`: the
# softmax of `similarities / tau` over the last dimension, finite even for τ = 0.001.

# %% exercise="02.temperature"
def softmax_with_temperature(similarities: torch.Tensor, tau: float) -> torch.Tensor:
    """Softmax of similarities / tau over the last dimension."""
    ### BEGIN SOLUTION
    return torch.softmax(similarities / tau, dim=-1)
    ### END SOLUTION


# %% tags=["check"]
check.exercise("02.temperature", softmax_with_temperature)

# %% [markdown] slideshow={"slide_type": "slide"}
# ### Play: slide τ
#
# Eight images and their captions, embedded by the course CLIP (section 9 loads it). Left: the
# softmax of one image's row over the eight captions; right: the loss of the whole batch as a function
# of τ. Watch the row go from uniform (large τ, loss near ln 8) to one-hot (small τ). The loss is
# lowest at a small τ only when the diagonal really is the largest entry of every row and column;
# the learned τ is the model's own compromise.

# %%
from mmcourse import pretrained
from mmcourse.widgets.temperature import TemperatureExplorer

clip = pretrained.load("clip_shapes", device=device)
demo = make_shapes(8, seed=21, split="train", style=("photo", "sketch", "flat", "cartoon"))
with torch.no_grad():
    demo_img, demo_txt = clip.encode_image(demo.images.to(device)).cpu(), clip.encode_text(demo.captions).cpu()
explorer = TemperatureExplorer(demo_img, demo_txt, [c[:28] for c in demo.captions], row=0)
print(f"the bundled model learned tau = {1 / clip.scale().item():.4f} (logit scale {clip.scale().item():.1f})")
explorer.widget(tau=0.07)

# %% [markdown] slideshow={"slide_type": "notes"}
# Instructor: drag τ from 10 down to 0.003. At τ = 10 every caption gets 1/8; near 0.07 the right
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
# always true. In a small world it is not: our world has 56 colour–shape pairs for training, and a
# batch of 256 images is certain to hold several images that one caption describes equally well.
# Those captions are **false negatives**: the loss pushes them away from images they fit.

# %%
batch = make_shapes(256, seed=41, split="train")  # varied captions, as in training
counts = {}
for c in batch.captions:
    counts[c] = counts.get(c, 0) + 1
same_content = sum(a == b for a in batch.combos for b in batch.combos) - len(batch)
same_string = sum(k * (k - 1) for k in counts.values())
print(f"{len(counts)} distinct captions among 256; ordered pairs (i, j), i != j, that are false negatives:")
print(f"  same caption string:                  {same_string:5d}")
print(f"  same colour and shape, any wording:   {same_content:5d}   e.g. {batch.captions[0]!r} / "
      f"{next(batch.captions[j] for j in range(1, 256) if batch.combos[j] == batch.combos[0])!r}")

# %% [markdown]
# **Identical captions are harmless.** Two copies of "a red square" get the *same* text embedding, so
# their two columns of the logits are equal: row *i* cannot prefer its own copy, and the loss has a
# floor of $\frac1N\sum_i \ln k_i$ for captions that appear *k* times. But that floor is all they do.
# The fix one might reach for, **caption-level targets** (every copy counts as a positive, each row's
# target spread evenly over them: a soft label that `F.cross_entropy` accepts), gives exactly the same
# loss and the same gradients for the encoders. Check it on the bundled model:

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
# **Exercise 02.false_negatives** (3 points). Write `caption_targets(keys)`: for a list of *N*
# strings, the `(N, N)` float target matrix whose entry (i, j) is 1/k when strings i and j are equal
# and k strings of the batch are that string, and 0 otherwise. Pass it captions and you get
# caption-level targets; pass it the content ("red square") and you get content-level ones.

# %% exercise="02.false_negatives"
def caption_targets(keys: list[str]) -> torch.Tensor:
    """N strings -> (N, N) targets; equal strings share their row's probability evenly."""
    ### BEGIN SOLUTION
    same = torch.tensor([[float(a == b) for b in keys] for a in keys])
    return same / same.sum(dim=1, keepdim=True)
    ### END SOLUTION


# %% tags=["check"]
check.exercise("02.false_negatives", caption_targets)

# %%
from mmcourse.losses import grouped_targets

pool_content = caption_groups([f"{c} {s}" for c, s in pool.combos])  # what each training image shows
print(f"caption-level targets of ['a', 'b', 'a'] (the package's version of your function):\n"
      f"{grouped_targets(caption_groups(['a', 'b', 'a']))}")
print(f"{'batch':>6s}{'plain targets':>16s}{'content-level':>16s}   (error rate of 64-way zero-shot)")
for b in (16, 64, 256, 1024):
    plain_acc = train_projections(b)
    content_acc = train_projections(b, groups=pool_content)
    print(f"{b:6d}{1 - plain_acc:16.3f}{1 - content_acc:16.3f}")

# %% [markdown] slideshow={"slide_type": "fragment"}
# With plain targets the error stops falling as the batch grows: a bigger batch brings more negatives,
# and more of them are false. Content-level targets keep the benefit. Real image–text data has no
# labels to group by; remedies there estimate the grouping (drop or down-weight negatives whose caption
# is too similar to the positive's) or soften all targets. The course CLIP simply uses the plain loss.

# %% [markdown] slideshow={"slide_type": "slide"}
# ## 8 · Train a CLIP, live
#
# Now the whole model: a small CNN for images and a bag-of-words encoder for text, each with its
# projection, and the learnable logit scale; `mmcourse.models.CLIP` wires them as in the pseudocode.
# Twenty seconds of training on a CPU, on simple photos:

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
# ## 9 · The course CLIP
#
# The bundled model is the same recipe at a larger scale: a CNN image encoder, a two-layer text
# transformer (causal attention, features read at the end-of-text token, as in CLIP), 64-dimensional
# embeddings, trained on a stream of fresh images in mixed styles (photo, flat, cartoon, sketch) with
# varied captions, and never shown the eight held-out colour–shape pairs. Its card records how it was
# trained and what it scores:

# %%
info = pretrained.card("clip_shapes")
print(f"{sum(p.numel() for p in clip.parameters()):,} parameters; trained {info['metrics']['steps']} steps of "
      f"{info['metrics']['batch_size']} pairs in {info['train']['seconds']:.0f} s on {info['train']['machine']}")
for key, value in info["metrics"]["zero_shot"].items():
    print(f"  zero-shot 64-way, {key:16s} accuracy {value['accuracy']:.3f}")

# %% [markdown]
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
# CLIP's authors found that, at equal compute, a text encoder that only sees a **bag of words** learned
# zero-shot ImageNet classification faster than a transformer that has to predict the caption. Our
# toy version compares two *contrastive* text encoders: with the course CLIP's image side frozen, we
# train a fresh bag-of-words encoder and a fresh two-layer transformer for the same number of steps
# on the same batches, and ask both to classify 64 colour–shape pairs — including the eight pairs no
# caption ever mentioned together.

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
print(f"{'text encoder':14s}{'steps':>6s}{'params':>9s}{'seconds':>9s}{'loss':>7s}{'seen':>7s}{'held-out':>10s}")
for name, steps in runs:
    torch.manual_seed(0)
    enc = BagOfWordsEncoder(width=64) if name == "bag of words" else TextTransformer(width=64, layers=2)
    acc, sec, last = train_text_encoder(enc, steps=steps)
    print(f"{name:14s}{steps:6d}{sum(p.numel() for p in enc.parameters()):9,d}{sec:9.1f}{last:7.2f}"
          f"{acc['seen']:7.3f}{acc['held-out']:10.3f}")

# %% [markdown] slideshow={"slide_type": "fragment"}
# Read the table honestly (the seconds column is measured on your machine). Step for step, the
# transformer learns more: it can model which words go together, and the frozen image side gives it a
# strong target. But a bag-of-words step costs a fraction of a transformer step, and in a fraction of
# the transformer's time, 600 of them reach the same zero-shot accuracy on seen and held-out pairs:
# the seed's finding that, at equal compute, a bag of words is the more *efficient* learner. In this
# world a caption's meaning is nearly the sum of its words ("red" + "triangle"), which is exactly what
# a bag of words computes. Where order matters ("a red circle left of a blue square" against "a blue
# circle left of a red square"), a bag of words cannot even tell the two apart, and that is why the
# bundled model uses a transformer.

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
# processes computed the loss on its own *N / W* pairs, every image would meet only *N / W − 1*
# negatives. Instead each process gathers every process's features (`all_gather_with_grad`, which also
# sends the gradients back), then scores its own images against *all* texts and its own texts
# against *all* images: an (N / W) × N block of the logits. The mean of the *W* local losses is exactly
# the loss of the whole batch. Here the *W* "processes" are slices of one batch, so the arithmetic is
# visible; `mmcourse train clip_shapes --nproc 2` runs the real thing with `torch.distributed`.

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
#   batch's texts, each column (a text) classifies its images; the labels are the diagonal.
# * A model that has learned nothing scores ln N; a loss below that is knowledge.
# * The logit scale 1/τ is learned in log space, starts at 1/0.07 and is clipped at 100; small τ makes
#   the softmax peaky and the hardest negatives count most.
# * The batch is the source of negatives: bigger batches, harder and more negatives per step.
# * False negatives are captions that also fit another image of the batch. Identical captions are
#   harmless; different words for the same content cost accuracy, and grouping them as positives
#   (when the content is known) wins it back.
# * The loss needs only a log-sum-exp per row and column, so it can be computed without storing the
#   N × N matrix, and gathered over processes so every image meets every negative.
#
# ## References
#
# * A. Radford et al. *Learning transferable visual models from natural language supervision (CLIP).* ICML 2021.
# * A. van den Oord, Y. Li, O. Vinyals. *Representation learning with contrastive predictive coding (InfoNCE).* 2018.
# * G. Ilharco et al. *OpenCLIP.* 2021 (`open_clip`'s `ClipLoss`, the loss our tests compare with).
# * T. Chen et al. *A simple framework for contrastive learning of visual representations (SimCLR).* ICML 2020.
