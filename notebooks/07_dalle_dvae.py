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
# # 07 · DALL-E's discrete VAE
#
# **In this notebook you will**
#
# 1. follow the lecture's account of DALL-E: **stage 1** turns every image into a grid of discrete
#    image tokens, **stage 2** learns an **autoregressive prior** over text and image tokens, and both
#    stages maximise one **evidence lower bound (ELB)**, each updating a different part;
# 2. build the tokenizer of images from scratch: the Gumbel-max trick, the **Gumbel-softmax**
#    relaxation with its temperature, and a **dVAE** trained live, next to **VQ-VAE**'s nearest-code
#    lookup with its straight-through gradient;
# 3. measure **codebook usage** (perplexity over a whole evaluation set, codes never used);
# 4. train-by-reading the stage-2 transformer: the joint sequence, its separate embeddings, the loss
#    weighted 1/8 : 7/8, sampling with temperature, top-k and a key-value cache;
# 5. **sample, then re-rank with CLIP**, as DALL-E did, and judge what re-ranking buys with a
#    classifier that is not CLIP.
#
# About 55 minutes. Everything runs on a laptop CPU in under a minute. The two bundled models
# (`mmcourse train dvae_shapes`, then `mmcourse train dalle_shapes`) draw 32 × 32 images of the shapes
# world from 8 × 8 grids of tokens: the discrete image tokens of DALL-E and Parti, at the scale
# of minutes of a CPU.

# %% tags=["setup"]
import sys

if "google.colab" in sys.modules:  # on Colab: install the course package, pinned to this notebook's version
    import subprocess

    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "mmcourse @ git+https://github.com/mmcourse/mmcourse@v0.1.0"],
        check=True,
    )

import time

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F

import mmcourse
from mmcourse import check
from mmcourse import dalle as DL
from mmcourse import dvae as V
from mmcourse import fidelity, pretrained
from mmcourse.course import measured
from mmcourse.data import make_shapes
from mmcourse.data.shapes import stream_shapes
from mmcourse.models import DiscreteVAE
from mmcourse.plots import image_grid, show_images
from mmcourse.widgets.dalle import RerankExplorer

device = mmcourse.start(seed=0)


# %% [markdown] slideshow={"slide_type": "slide"}
# ## 1 · DALL-E in two stages, one bound
#
# The lecture describes DALL-E (Ramesh et al. 2021) as two models trained one after the other.
#
# * **Stage 1**: a discrete VAE compresses each 256 × 256 RGB image into a 32 × 32 grid of image
#   tokens, each one of 8 192 codes. (The slides say "8196" codes and "1028" tokens: both are typos,
#   for 8 192 = 2¹³ and 1 024 = 32 × 32.) The slides also say each token "finds the nearest vector"
#   in the codebook: that is how **VQ-VAE** (van den Oord et al.) picks a code. DALL-E's **dVAE**
#   does not: its encoder outputs a distribution over the 8 192 codes of every cell, and training
#   relaxes the choice with the **Gumbel-softmax**. This notebook builds both and measures the difference.
# * **Stage 2**: up to 256 text tokens (BPE) are concatenated with the 1 024 image tokens, and a
#   12-billion-parameter decoder-only transformer learns the joint distribution of the sequence, an
#   **autoregressive prior** over text and image tokens.
# * **At test time**: the transformer samples image tokens after a caption, the dVAE decoder turns
#   them into pixels, and DALL-E draws many samples (the lecture: K = 1, 8, 64, 512), re-ranks them
#   by CLIP and keeps the best: **sample then re-rank with CLIP**.
#
# Both stages maximise one **ELB** (evidence lower bound) on the joint likelihood of images $x$,
# captions $y$ and image tokens $z$:
#
# $$\ln p_{\theta,\psi}(x, y) \;\ge\; \mathbb E_{z \sim q_\phi(z \mid x)}\Big[\ln p_\theta(x \mid y, z)\Big] \;-\; \beta\, D_{\mathrm{KL}}\Big(q_\phi(y, z \mid x)\;\Big\|\; p_\psi(y, z)\Big)$$
#
# with $q_\phi$ the dVAE encoder (the image tokens given the image), $p_\theta$ the dVAE decoder (the
# image given the tokens) and $p_\psi$ the prior, the transformer. **Stage 1** maximises the bound over
# $\phi$ and $\theta$ (encoder and decoder) with the prior fixed to a uniform distribution over the
# codes; **stage 2** fixes $\phi$ and $\theta$ and maximises it over $\psi$ (the prior), which is
# exactly next-token cross-entropy on [text ; image tokens]. (The bound holds at β = 1; DALL-E used
# β = 6.6, which its authors found gives better codebook usage and reconstruction.)

# %% [markdown] slideshow={"slide_type": "slide"}
# ## 2 · The tokenizer of images, from scratch
#
# ### Sampling a code: the Gumbel-max trick
#
# The dVAE encoder gives, for every cell of the grid, logits $\ell_1, \dots, \ell_K$ over the $K$ codes.
# A sample from $\mathrm{softmax}(\ell)$ is, with $g_k = -\ln(-\ln u_k)$ and $u_k$ uniform on (0, 1),
#
# $$k^* = \arg\max_k\, (\ell_k + g_k).$$
#
# The $g_k$ are **Gumbel** noise. The cell below checks the trick by counting: the argmax of noisy
# logits lands on each code as often as the softmax says.

# %%
logits = torch.tensor([1.0, 0.0, -1.0, 0.5, 2.0])
g = torch.Generator().manual_seed(0)
u = torch.rand(100_000, 5, generator=g)
winners = (logits - torch.log(-torch.log(u))).argmax(dim=1)
counted = torch.bincount(winners, minlength=5) / len(winners)
print("softmax(logits):        ", [f"{p:.3f}" for p in logits.softmax(0).tolist()])
print("argmax(logits + Gumbel):", [f"{p:.3f}" for p in counted.tolist()], f"({len(winners):,} draws)")
assert torch.allclose(counted, logits.softmax(0), atol=0.005)

# %% [markdown]
# An argmax has no useful gradient: the encoder could not learn from the decoder's loss. The
# **Gumbel-softmax** (Jang et al.; Maddison et al., "Concrete") replaces the one-hot of the argmax by a
# softmax at a **temperature** τ: near one-hot for small τ, smooth for large τ, differentiable for
# every τ > 0. DALL-E anneals τ from 1 to 1/16 during training.
#
# **Exercise 07.gumbel** (3 points). Write `gumbel_sample(logits, uniform, tau)`: the relaxed sample
# for logits `(..., K)` (codes along the last dimension), uniform noise `uniform` of the same shape in
# (0, 1), and a temperature `tau > 0`. It must stay finite for logits of size 100 at small τ.

# %% exercise="07.gumbel"
def gumbel_sample(logits: torch.Tensor, uniform: torch.Tensor, tau: float) -> torch.Tensor:
    """logits, uniform (..., K), tau > 0 -> a relaxed one-hot sample (..., K): entries in [0, 1] summing to 1."""
    ### BEGIN SOLUTION
    gumbel = -torch.log(-torch.log(uniform))  # Gumbel noise from the uniform draws
    return torch.softmax((logits + gumbel) / tau, dim=-1)  # stable: softmax subtracts the row maximum
    ### END SOLUTION


# %% tags=["check"]
check.exercise("07.gumbel", gumbel_sample)

# %% [markdown] slideshow={"slide_type": "slide"}
# ### The relaxation, worked out
#
# $$\tilde z_k = \frac{\exp\big((\ell_k + g_k)/\tau\big)}{\sum_j \exp\big((\ell_j + g_j)/\tau\big)},\qquad g_k = -\ln(-\ln u_k).$$
#
# Both the logits and the noise are divided by τ; as τ → 0 the softmax becomes the argmax of
# $\ell + g$, the Gumbel-max sample above. `mmcourse.dvae.gumbel_softmax` draws its own noise (from a
# generator, clamped so that no $u$ is exactly 0 or 1) and refuses τ ≤ 0, where PyTorch's
# `F.gumbel_softmax` returns NaN; its tests compare it in distribution with `F.gumbel_softmax`, soft and
# hard. With the same noise, the package and the formula agree:

# %%
g = torch.Generator().manual_seed(1)
cell_logits = torch.randn(3, 8, generator=g)  # 3 cells, K = 8 codes
noise = V.gumbel_noise(cell_logits.shape, generator=torch.Generator().manual_seed(2))
ours = torch.softmax((cell_logits + noise) / 0.5, dim=-1)
package = V.gumbel_softmax(cell_logits, 0.5, generator=torch.Generator().manual_seed(2))
assert torch.allclose(ours, package, atol=1e-6)

fig, axes = plt.subplots(1, 4, figsize=(11, 2.4), sharey=True)
for ax, tau in zip(axes, (4.0, 1.0, 0.25, 1 / 16)):
    sample = V.gumbel_softmax(cell_logits[:1].expand(4, -1), tau, generator=torch.Generator().manual_seed(3))
    for row in sample:
        ax.plot(range(8), row.numpy(), "o-", alpha=0.7)
    ax.set_title(f"tau = {tau:g}")
    ax.set_xlabel("code k")
axes[0].set_ylabel("relaxed sample $\\tilde z_k$")
fig.suptitle("four Gumbel-softmax samples of one cell's distribution: smooth at high tau, one-hot at low tau", fontsize=10)
plt.tight_layout()
plt.show()

# %% [markdown] slideshow={"slide_type": "slide"}
# ### A dVAE, trained live
#
# `mmcourse.models.DiscreteVAE` is the whole stage-1 model: two strided convolutions take a 32 × 32
# image to an 8 × 8 grid of logits over $K = 128$ codes (each token covers a 4 × 4 patch, as each of
# DALL-E's covers 8 × 8 pixels of 256 × 256); the relaxed sample times the codebook gives an 8 × 8 grid
# of code vectors; the decoder upsamples them back to pixels. The loss is the negative ELB of stage 1:
#
# $$\mathcal L = \underbrace{\lVert x - \hat x\rVert^2}_{\text{reconstruction}} \;+\; \beta_t\, D_{\mathrm{KL}}\big(q_\phi(z \mid x)\,\big\|\,\mathcal U(K)\big),$$
#
# with τ annealed from 1 to 1/16 on DALL-E's cosine curve and β ramped up from 0. **Reconstruction
# term**: DALL-E modelled pixels with a *logit-Laplace* distribution, a Laplace on logit(pixel), which
# keeps the likelihood on (0, 1) and needs pixels squeezed away from 0 and 1. Ours is the mean squared
# error of a sigmoid output, a Gaussian likelihood with fixed variance: the shapes world's flat images
# are mostly exact 0s and 1s, where the logit-Laplace needs its squeeze most, and MSE is the simpler
# choice. Swapping one module, the same network becomes a **VQ-VAE** (section 4 explains its lookup).
# Both are trained below for the same number of steps, a few seconds each; the images are encoded to
# their 64 tokens and decoded, so what you see is what the tokens keep.

# %%
shown = make_shapes(8, seed=99, style="flat").images.to(device)
live_runs, start_all = {}, time.perf_counter()
for quantizer in ("gumbel", "vq"):
    torch.manual_seed(0)
    live = DiscreteVAE(128, quantizer=quantizer).to(device)
    opt = torch.optim.AdamW(live.parameters(), lr=2e-3)
    stream = stream_shapes(32, seed=1, style="flat", size=32)
    g = torch.Generator().manual_seed(0)
    snapshots, losses, start = {}, [], time.perf_counter()
    def keep_going():  # the dVAE: up to 100 steps or 4 seconds (at least 20); the VQ-VAE: as many steps
        if quantizer == "vq":
            return len(losses) < len(live_runs["gumbel"][1])
        return len(losses) < 100 and (time.perf_counter() - start < 4.0 or len(losses) < 20)

    while keep_going():
        step = len(losses)
        if step in (0, 10):
            live.eval()
            snapshots[step] = live.decode(live.encode(shown)).cpu()
            live.train()
        if quantizer == "gumbel":
            live.quantizer.tau = V.temperature_at(step, 40)  # 1 -> 1/16 over the first 40 steps
        x = next(stream).images.to(device)
        recon, codes, extra = live(x, generator=g)
        weight = V.beta_at(step, 10, 0.01) if quantizer == "gumbel" else 1.0  # VQ: codebook + commitment losses
        loss = F.mse_loss(recon, x) + weight * extra
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(F.mse_loss(recon, x).item())
    live.eval()
    snapshots[len(losses)] = live.decode(live.encode(shown)).cpu()
    live_runs[quantizer] = (snapshots, losses)
    print(f"{quantizer:6s}: {len(losses)} steps, training MSE {losses[0]:.3f} -> {sum(losses[-5:]) / 5:.4f}; through the "
          f"argmax / nearest codes {F.mse_loss(snapshots[len(losses)], shown.cpu()):.4f}")
print(f"both in {time.perf_counter() - start_all:.1f} s")
rows = [("originals", shown.cpu())] + [(f"{'dVAE' if q == 'gumbel' else 'VQ-VAE'}, {s} steps", snaps[s])
                                       for q, (snaps, _) in live_runs.items() for s in sorted(snaps)]
fig, axes = plt.subplots(len(rows), 1, figsize=(8, 1.05 * len(rows)))
for ax, (label, x) in zip(axes, rows):
    ax.imshow(image_grid(x), interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=8)
fig.suptitle("encode to 8 x 8 tokens, decode: the reconstructions sharpen as the tokenizers train", fontsize=10)
plt.tight_layout()
plt.show()

# %% [markdown]
# In a few seconds both go from grey to coloured blobs on roughly the right background (how far they
# get depends on how many steps this machine managed, printed above). Compare, for each, the training
# MSE with the MSE through its codes: the dVAE trains on relaxed samples but is used through the argmax
# of its logits, and early on the two disagree. DALL-E trained its dVAE for millions of updates; we
# cannot. The benchmark of section 4 measures both for longer.

# %% [markdown] slideshow={"slide_type": "slide"}
# ## 3 · The bundled tokenizer
#
# `pretrained.load("dvae_shapes")` is the same network trained for minutes (the card below says how
# long, on what, and how well), with one difference from DALL-E: its quantiser is the **VQ-VAE**
# lookup, not the Gumbel-softmax. At the same budget the dVAE kept too little of the shapes for stage 2
# (the benchmark's table in section 4 shows both), so the course bundles the tokenizer that works at
# this scale. `encode` gives every image an 8 × 8 grid of code ids (long), the image's "words";
# `decode` turns any such grid back into pixels, whichever quantiser chose them.

# %%
dvae = pretrained.load("dvae_shapes", device=device)
dvae_card = pretrained.card("dvae_shapes")
ev = dvae_card["metrics"]["evaluation"]
print(f"dvae_shapes: K = {dvae.num_codes} codes, {dvae_card['metrics']['steps']} steps of "
      f"{dvae_card['metrics']['batch_size']} images in {dvae_card['train']['seconds'] / 60:.1f} min on {dvae_card['train']['machine']}")
for split in ("seen", "heldout"):
    print(f"  {split:8s} pairs: reconstruction MSE {ev[split]['mse']:.4f}, perplexity {ev[split]['perplexity']:.1f} "
          f"({ev[split]['perplexity_over_K']:.2f} K), codes never used {ev[split]['dead']} ({ev[split]['images']} images)")
real = make_shapes(10, seed=5, style="flat")
codes = dvae.encode(real.images.to(device))  # (10, 8, 8) long
print("the first image as tokens:\n", codes[0].cpu())
recon = dvae.decode(codes).cpu()
show_images(torch.cat([real.images, recon]), [c[:14] for c in real.captions] + ["decoded"] * 10, ncols=10,
            title="fresh images (top) and their 64 tokens decoded (bottom)")

# %% [markdown] slideshow={"slide_type": "slide"}
# ## 4 · Codebook usage
#
# A codebook of $K$ entries is only worth $K$ if the encoder uses them. Two numbers, measured over a
# whole evaluation set (one batch undercounts: a code used once in two thousand images looks dead in a
# batch of 32):
#
# * **perplexity** $= \exp(H)$ of the histogram of codes over all cells of all images: $K$ if every code
#   is used equally often, 1 if one code takes everything;
# * **dead codes**: codes never used.
#
# A flat image is mostly background, so a few background codes are very frequent and perplexity is far
# below $K$ even for a healthy codebook; what matters is the comparison (the same images, another
# tokenizer) and the number of dead codes.

# %%
eval_images = make_shapes(1024, seed=2024, style="flat").images
all_codes = torch.cat([dvae.encode(eval_images[i : i + 256].to(device)).cpu() for i in range(0, 1024, 256)])
whole = V.codebook_usage(all_codes, dvae.num_codes)
batch = V.codebook_usage(all_codes[:32], dvae.num_codes)
print(f"over {len(eval_images)} images: perplexity {whole['perplexity']:.1f}, {whole['used']} codes used, {whole['dead']} never")
print(f"over one batch of 32:   perplexity {batch['perplexity']:.1f}, {batch['used']} codes used, {batch['dead']} 'dead'")
counts = torch.bincount(all_codes.flatten(), minlength=dvae.num_codes).sort(descending=True).values
fig, ax = plt.subplots(figsize=(7, 2.6))
ax.bar(range(dvae.num_codes), counts.numpy(), width=1.0)
ax.set_yscale("log")
ax.set_xlabel("code, most used first")
ax.set_ylabel("cells (log scale)")
ax.set_title(f"how the dVAE's {dvae.num_codes} codes are used over {len(eval_images)} images")
plt.tight_layout()
plt.show()

# %% [markdown] slideshow={"slide_type": "slide"}
# ### VQ-VAE: the nearest code, and a gradient that skips it
#
# VQ-VAE's encoder outputs a vector $z_e$ per cell; its token is the **nearest code**
# $k^* = \arg\min_k \lVert z_e - e_k\rVert$ and the decoder receives $z_q = e_{k^*}$. Nothing in an argmin
# has a gradient, so VQ-VAE uses the **straight-through estimator**: in the backward pass it treats
# $z_q$ as if it were $z_e$ and hands the decoder's gradient to the encoder unchanged. The codebook
# learns from its own loss, and a **commitment** loss keeps the encoder close to its codes:
#
# $$\mathcal L = \lVert x - \hat x\rVert^2 + \lVert \mathrm{sg}[z_e] - e_{k^*}\rVert^2 + 0.25\,\lVert z_e - \mathrm{sg}[e_{k^*}]\rVert^2,$$
#
# sg being stop-gradient (`.detach()`). Codes no encoder output is near never move and stay dead; the
# remedies are **k-means initialisation** of the codebook on the first batch and **restarts** (a code
# unused for a while jumps onto an encoder output). `mmcourse.dvae.VectorQuantizer` does both.
#
# **Exercise 07.straight_through** (3 points). Write `encoder_gradient(z, codebook, grad_zq, commitment)`:
# for encoder outputs `z` `(..., D)`, a codebook `(K, D)`, the gradient `grad_zq` that the decoder's loss
# sends to $z_q$ (same shape as `z`) and the commitment weight, return the gradient that reaches `z`:
# that of the decoder's loss through the straight-through lookup plus that of
# `commitment * ||z - sg[e]||^2` (summed over entries). Derive it by hand; no autograd.

# %% exercise="07.straight_through"
def encoder_gradient(z: torch.Tensor, codebook: torch.Tensor, grad_zq: torch.Tensor, commitment: float) -> torch.Tensor:
    """z (..., D), codebook (K, D), grad_zq (..., D), commitment weight -> the gradient at z (..., D)."""
    ### BEGIN SOLUTION
    dist = (z**2).sum(-1, keepdim=True) - 2 * z @ codebook.T + (codebook**2).sum(-1)  # (..., K) squared distances
    e = codebook[dist.argmin(dim=-1)]  # (..., D) the nearest codes
    return grad_zq + 2 * commitment * (z - e)  # straight through, plus the commitment pull towards e
    ### END SOLUTION


# %% tags=["check"]
check.exercise("07.straight_through", encoder_gradient)

# %% [markdown] slideshow={"slide_type": "fragment"}
# Worked out: the straight-through lookup is `z_q = z + (e - z).detach()`, whose value is $e$ and whose
# gradient with respect to $z$ is the identity, so the decoder's gradient arrives whole; the commitment
# term $0.25\lVert z - \mathrm{sg}[e]\rVert^2$ adds $2 \cdot 0.25\,(z - e)$, pulling $z$ towards its code.
# The codebook loss $\lVert \mathrm{sg}[z] - e\rVert^2$ moves only $e$. Autograd on the package's quantiser
# agrees (it averages the two squared errors over entries, hence the division by their number):

# %%
torch.manual_seed(0)
vq = V.VectorQuantizer(16, 4)
z = torch.randn(2, 4, 3, 3, requires_grad=True)  # (N, D, H, W): 18 vectors
z_q, vq_codes, vq_loss = vq(z)
grad_zq = torch.randn_like(z_q)
((z_q * grad_zq).sum() + vq_loss).backward()
e = vq.codebook[vq_codes].detach().permute(0, 3, 1, 2)  # (N, D, H, W)
by_hand = grad_zq + 2 * 0.25 * (z.detach() - e) / z.numel()
assert torch.allclose(z.grad, by_hand, atol=1e-6)
print(f"autograd = grad_zq + 2 * 0.25 * (z - e) / {z.numel()}: largest difference {(z.grad - by_hand).abs().max():.1e}")

# %% [markdown] slideshow={"slide_type": "slide"}
# ### dVAE against VQ-VAE, one module swapped
#
# The lecture puts the two side by side ("dVAE or VQ-VAE"); they are not the same method. The committed
# benchmark (`benchmarks/dalle.py`) trains both with everything else equal (encoder, decoder, K = 128,
# steps, data) and measures reconstruction and usage over a whole evaluation set, plus the effect of
# the dVAE's temperature schedule and β:

# %%
bench = measured("dalle")  # the committed results of benchmarks/dalle.py, shipped with the package
print(f"benchmark of {bench['date']} ({bench['machine']}); {bench['tokenizers_note']}")
print(f"{'tokenizer':44s}{'MSE':>8s}{'perplexity':>12s}{'dead':>6s}")
for row in bench["tokenizers"]:
    print(f"{row['name']:44s}{row['mse']:8.4f}{row['perplexity']:12.1f}{row['dead']:6d}")

# %% [markdown]
# Read the table for the one that matters here (the printed rows are the evidence, the benchmark's
# markdown file discusses them): whether the relaxation or the lookup reconstructs better and uses more of
# its codebook at equal cost, and what annealing τ and weighting β change in the dVAE.

# %% [markdown] slideshow={"slide_type": "slide"}
# ## 5 · Stage 2: one sequence, two vocabularies
#
# DALL-E's transformer reads one sequence: the caption's text tokens, padded to a fixed budget, then
# the image's tokens in raster order. Ours: 12 text tokens (every shapes-world caption fits) and the
# 64 tokens of the 8 × 8 grid, 76 in all.
#
# Text and image tokens are different vocabularies (here 233 words and 128 codes), so each modality
# gets **its own token embedding, its own position embedding and its own output head**; the
# transformer blocks in between are shared (`mmcourse.models.transformer.Block`, causal). Position
# $p$ predicts token $p + 1$: the text head the next word, the image head the next code, the first
# code from the caption's last position. The loss is the cross-entropy of every next token, the text
# term weighted 1/8 and the image term 7/8, as in DALL-E:
#
# $$\mathcal L = \tfrac18\,\mathrm{CE}_{\text{text}} + \tfrac78\,\mathrm{CE}_{\text{image}}.$$
#
# (The lecture draws the image tokens after "up to 256" text tokens; DALL-E pads shorter captions
# with a padding token learned per position and predicts it too. We predict `<pad>`.)

# %%
model = pretrained.load("dalle_shapes", device=device)
dalle_card = pretrained.card("dalle_shapes")
n_params = sum(p.numel() for p in model.parameters())
print(f"dalle_shapes: {n_params:,} parameters, {len(model.blocks)} blocks of width {model.config['width']}, "
      f"{dalle_card['metrics']['steps']} steps in {dalle_card['train']['seconds'] / 60:.1f} min; its dVAE: dvae_shapes "
      f"(sha256 {dalle_card['requires']['dvae_shapes'][:12]}..., frozen, not part of this checkpoint)")

example = make_shapes(2, seed=8, style="flat")
text_ids = model.tokenize(example.captions)  # (2, 12)
image_codes = model.dvae.encode(example.images)  # (2, 8, 8)
print("text tokens: ", [model.tokenizer.itos[i] for i in text_ids[0].tolist()])
print("image tokens:", image_codes[0].flatten()[:16].tolist(), "... (64)")

# the loss by hand: shift by one, two heads, two cross-entropies, weights 1/8 and 7/8
with torch.no_grad():
    text_logits, image_logits = model(text_ids.to(device), image_codes.to(device))
    text_ce = F.cross_entropy(text_logits.flatten(0, 1), text_ids[:, 1:].flatten().to(device))
    image_ce = F.cross_entropy(image_logits.flatten(0, 1), image_codes.flatten().to(device))
    loss, *_ = DL.joint_loss(model, text_ids.to(device), image_codes.to(device))
assert torch.isclose(loss, text_ce / 8 + 7 * image_ce / 8)
print(f"text CE {text_ce:.3f}, image CE {image_ce:.3f} nats per token -> loss {loss:.3f} (= DL.joint_loss)")
card_ev = dalle_card["metrics"]["evaluation"]
print(f"on fresh images (card): image CE {card_ev['seen']['image_ce']:.3f} (perplexity {card_ev['seen']['image_perplexity']:.1f} "
      f"of {dvae.num_codes} codes) on seen pairs, {card_ev['heldout']['image_ce']:.3f} on held-out pairs")

# %% [markdown] slideshow={"slide_type": "slide"}
# ## 6 · Sampling the image tokens
#
# Generation feeds the caption, then draws the 64 image tokens one at a time from
# $\mathrm{softmax}(\ell / T)$ at temperature $T$, optionally keeping only the **top-k** most likely codes,
# and hands the grid to the dVAE decoder. `DL.sample_codes` is that loop. A **key-value cache** keeps the
# keys and values of all earlier tokens, so each step runs the transformer on one new token; without it,
# each step reruns the whole sequence so far. Both draw the same tokens:

# %%
captions = [f"a {c} {s}" for c, s in fidelity.eval_pairs()]
timing = {}
DL.sample_codes(model, captions[:2], seed=0)  # warm-up: the first call pays one-off costs
for use_cache in (True, False):
    start = time.perf_counter()
    drawn = DL.sample_codes(model, captions, seed=0, use_cache=use_cache)
    timing[use_cache] = time.perf_counter() - start
    if use_cache:
        cached_codes = drawn
assert torch.equal(cached_codes, drawn), "the cache changes the cost, not the tokens"
print(f"8 images: {1000 * timing[True] / 8:.0f} ms each with the cache, {1000 * timing[False] / 8:.0f} ms without: "
      f"{timing[False] / timing[True]:.1f}x faster with it")

rows = {}
for label, kwargs in {"T = 1": {}, "T = 0.7": {"temperature": 0.7}, "T = 1, top-16": {"top_k": 16}}.items():
    rows[label] = DL.generate(model, captions * 2, seed=1, **kwargs).cpu()
fig, axes = plt.subplots(len(rows), 1, figsize=(9, 1.9 * len(rows)))
for ax, (label, x) in zip(axes, rows.items()):
    ax.imshow(image_grid(x, nrow=len(captions)), interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=9)
axes[0].set_title(" | ".join(c[2:] for c in captions), fontsize=7)
fig.suptitle("two samples per caption at three settings of the sampler (the same seed in every row)", fontsize=10)
plt.tight_layout()
plt.show()

# %% [markdown] slideshow={"slide_type": "slide"}
# ## 7 · Sample, then re-rank with CLIP
#
# Not every sample matches its caption. DALL-E drew many and let CLIP choose. Our re-ranker is the
# course CLIP of notebook 02 (`clip_shapes`); the judge is notebook 01's `attributes_shapes`, a
# classifier trained on real images only, which never saw a sample and is not CLIP, so re-ranking
# cannot win by fooling the judge that chose it.
#
# **Exercise 07.rerank** (2 points). Write `rerank(image_features, text_features)`: CLIP image features
# `(C, K, D)` of K samples for each of C captions and the captions' text features `(C, D)`, both
# unnormalised as `encode_image` and `encode_text` return them; return `(C, K)` indices ordering each
# caption's samples from best to worst by CLIP's score.

# %% exercise="07.rerank"
def rerank(image_features: torch.Tensor, text_features: torch.Tensor) -> torch.Tensor:
    """image features (C, K, D), text features (C, D) -> (C, K) long, each caption's samples best first."""
    ### BEGIN SOLUTION
    image_features = F.normalize(image_features, dim=-1)  # CLIP's score is a cosine
    text_features = F.normalize(text_features, dim=-1)
    scores = torch.einsum("ckd,cd->ck", image_features, text_features)  # each sample against its own caption
    return scores.argsort(dim=1, descending=True)
    ### END SOLUTION


# %% tags=["check"]
check.exercise("07.rerank", rerank)

# %% [markdown] slideshow={"slide_type": "fragment"}
# The score is the cosine between a sample and *its own* caption, as CLIP scores pairs: a longer feature
# vector is not a better match. `DL.rerank` is this function; `DL.sample_and_rerank` draws K samples of
# one caption and returns them best first. Now the measurement: for each of the eight captions
# "a {colour} {shape}", four independent draws of 16 samples; for K = 1, 2, 4, 8, 16 the re-ranker keeps
# the best of the first K samples of each draw (K = 1: no re-ranking), and the judge reads colour and
# shape of the kept image. The same on the eight colour–shape pairs held out of training:

# %%
clip = pretrained.load("clip_shapes", device=device)
classifier = pretrained.load("attributes_shapes")
ks = (1, 2, 4, 8, 16)
start = time.perf_counter()
curve = DL.rerank_curve(model, clip, classifier, fidelity.eval_pairs(), ks, groups=4, seed=0)
curve_held = DL.rerank_curve(model, clip, classifier, fidelity.eval_pairs(heldout=True), ks, groups=4, seed=0)
print(f"{2 * 8 * 4 * max(ks)} samples drawn and scored in {time.perf_counter() - start:.1f} s")
print(f"{'K':>3s}  {'seen pairs: colour':>19s} {'colour+shape':>13s}  {'held-out: colour':>17s} {'colour+shape':>13s}  {'CLIP score of the kept':>23s}")
for k in ks:
    print(f"{k:3d}  {curve[k]['color']:19.2f} {curve[k]['both']:13.2f}  {curve_held[k]['color']:17.2f} "
          f"{curve_held[k]['both']:13.2f}  {curve[k]['clip']:23.3f}")
fig, ax = plt.subplots(figsize=(5, 3))
ax.plot(ks, [curve[k]["both"] for k in ks], "o-", label="seen pairs")
ax.plot(ks, [curve_held[k]["both"] for k in ks], "s--", label="held-out pairs")
ax.set_xscale("log", base=2)
ax.set_xlabel("K samples per caption, best kept by CLIP")
ax.set_ylabel("judge: colour and shape right")
ax.set_ylim(0, 1.05)
ax.set_title("what re-ranking buys (32 kept images per point)")
ax.legend()
plt.tight_layout()
plt.show()

# %% [markdown]
# 32 kept images per point make a coarse curve (read the trend, not the second decimal). Read the
# colour and the shape apart: the small bundled prior (minutes of training) usually gets the colour and
# rarely the shape, so CLIP has many right colours to choose from and few right shapes. Re-ranking can
# only pick among the samples it is given: it raises whatever the model sometimes gets right. The
# committed benchmark measures K up to 32:

# %%
print(f"benchmark ({bench['rerank']['draws_per_pair']} draws per pair), colour / colour and shape:")
print(f"{'K':>3s}  {'seen':>12s}  {'held-out':>12s}")
for k in bench["rerank"]["ks"]:
    a, b = bench["rerank"]["seen"][str(k)], bench["rerank"]["heldout"][str(k)]
    print(f"{k:3d}  {a['color']:5.2f} / {a['both']:4.2f}  {b['color']:5.2f} / {b['both']:4.2f}")
d = bench["versus_diffusion"]
print(f"\nsame captions, same judge, one image per caption: DALL-E K = 1 {d['dalle_k1']['both']:.2f} at "
      f"{d['dalle_k1']['cpu_seconds_per_image'] * 1000:.0f} ms/image; DALL-E K = 16 re-ranked {d['dalle_k16']['both']:.2f} at "
      f"{d['dalle_k16']['cpu_seconds_per_image'] * 1000:.0f} ms/image; notebook 08's diffusion (DDPM 50, w = 3) "
      f"{d['diffusion']['both']:.2f} at {d['diffusion']['cpu_seconds_per_image'] * 1000:.0f} ms/image")

# %% [markdown] slideshow={"slide_type": "slide"}
# ### Play: type a caption
#
# The widget draws 8 samples of your caption (a fixed seed, so the same caption gives the same
# samples), orders them by the course CLIP's score and prints the scores. Try a colour–shape pair held out of
# training ("a red triangle", "a yellow circle"), a synonym ("a crimson disc"), a size or a position
# ("a small blue star in the top left"), and a word the vocabulary lacks.

# %%
explorer = RerankExplorer(model, clip, k=8, seed=0)
explorer.widget("a red triangle")

# %% [markdown] slideshow={"slide_type": "notes"}
# Instructor: start with a seen pair ("a blue square"), then a held-out one ("a red triangle"). The small
# bundled model gets the colour right far more often than the shape (the table above says how often):
# point at the scores, whose spread between first and last is what re-ranking exploits, and at the
# samples CLIP ranks first that the judge would still reject. Then a long caption with a position.

# %% [markdown] slideshow={"slide_type": "slide"}
# ## What to remember
#
# * DALL-E is two models and one bound: stage 1 (dVAE: encoder and decoder, uniform prior) turns images
#   into tokens, stage 2 (a transformer: the prior) models [text ; image tokens]; each stage maximises the
#   ELB over its own parameters with the other fixed.
# * The dVAE relaxes the choice of a code with the Gumbel-softmax, $\mathrm{softmax}((\ell + g)/\tau)$
#   with $g = -\ln(-\ln u)$, annealing τ towards one-hot and weighting the KL to a uniform prior by β;
#   VQ-VAE takes the nearest code and passes gradients straight through, with a commitment loss and
#   remedies for dead codes. The lecture's "nearest vector" is VQ-VAE's rule, not the dVAE's.
# * Measure codebook usage over a whole evaluation set: perplexity and codes never used.
# * Stage 2 is next-token prediction with separate embeddings, positions and heads per modality and a
#   1/8 : 7/8 weighting; a key-value cache makes each sampling step one token's work, with the same tokens.
# * Sample, then re-rank: drawing K samples and keeping CLIP's favourite buys fidelity for K times the
#   sampling cost; judge it with a model that is not the re-ranker.
#
# ## References
#
# * A. Ramesh et al. *Zero-shot text-to-image generation (DALL-E).* ICML 2021.
# * A. van den Oord, O. Vinyals, K. Kavukcuoglu. *Neural discrete representation learning (VQ-VAE).* NeurIPS 2017.
# * E. Jang, S. Gu, B. Poole. *Categorical reparameterization with Gumbel-softmax.* ICLR 2017.
# * C. J. Maddison, A. Mnih, Y. W. Teh. *The Concrete distribution.* ICLR 2017.
# * Y. Bengio, N. Léonard, A. Courville. *Estimating or propagating gradients through stochastic neurons (straight-through).* 2013.
# * J. Yu et al. *Scaling autoregressive models for content-rich text-to-image generation (Parti).* TMLR 2022.
# * A. Radford et al. *Learning transferable visual models from natural language supervision (CLIP).* ICML 2021.
# * karpathy/deep-vector-quantization (VQ and Gumbel quantisers as swappable modules, k-means initialisation).
