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
# # 08 · Diffusion with classifier-free guidance
#
# **In this notebook you will**
#
# 1. destroy an image with the **forward process** and derive $q(\mathbf x_t \mid \mathbf x_0)$, the jump to
#    any step in one line, from the one-step kernel;
# 2. see why a network that predicts the **noise ε** is all a sampler needs, and train one live;
# 3. write the **DDPM** step from its posterior, sample with DDPM and **DDIM**, weigh steps against
#    quality and time, and make DDIM survive the clipping samplers do;
# 4. steer sampling towards a caption with **classifier guidance** (a separate classifier's gradient)
#    and with **classifier-free guidance** (the model's own conditional and unconditional predictions),
#    and compose guidance over several captions and **negative prompts**;
# 5. sweep the guidance weight as the lecture's Stable Diffusion 3.5 figure does (cfg 1, 2.5, 4.5,
#    7.5), measure what it buys in fidelity and costs in diversity, and see how Stable Diffusion runs
#    the same loop at scale (**latent diffusion**) and what SD3.5 changes (**rectified flow**).
#
# About 75 minutes. Everything runs on a laptop CPU in under a minute; the bundled model
# (`mmcourse train diffusion_shapes` rebuilds it, on two CPU cores in the time its card reports) draws
# 16 × 16 images: that is what minutes of a CPU buy.

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
from mmcourse import diffusion as D
from mmcourse import fidelity, pretrained
from mmcourse.course import measured
from mmcourse.data import make_shapes
from mmcourse.data.shapes import COLORS, stream_shapes
from mmcourse.models import DiffusionModel
from mmcourse.plots import image_grid, show_images

device = mmcourse.start(seed=0)


# %% [markdown] slideshow={"slide_type": "slide"}
# ## 1 · The forward process: noise, a little at a time
#
# A diffusion model learns to undo a process that is fixed and needs no learning. Starting from a
# clean image $\mathbf x_0$ (pixels scaled to $[-1, 1]$), each of $T = 1000$ steps shrinks the image a
# little and adds a little Gaussian noise:
#
# $$q(\mathbf x_t \mid \mathbf x_{t-1}) = \mathcal N\big(\sqrt{1-\beta_t}\,\mathbf x_{t-1},\ \beta_t \mathbf I\big)
# \quad\Longleftrightarrow\quad \mathbf x_t = \sqrt{1-\beta_t}\,\mathbf x_{t-1} + \sqrt{\beta_t}\,\boldsymbol\epsilon_t,\ \ \boldsymbol\epsilon_t \sim \mathcal N(0, \mathbf I).$$
#
# The shrinking keeps the variance from growing: a pixel of variance 1 keeps variance
# $(1-\beta_t) + \beta_t = 1$. The schedule $\beta_1, \dots, \beta_T$ decides how fast the image
# disappears. DDPM spaced the betas linearly; the cosine schedule of Nichol & Dhariwal adds less noise
# early and keeps more signal in the middle of the chain, which matters for small images: under the
# linear schedule a 32 × 32 picture is gone long before $t = T$, and those last steps teach nothing.
# Training needs $\mathbf x_t$ at a random $t$ for every image, thousands of times, so running the
# chain step by step is out of the question; luckily Gaussians compose.

# %%
linear, cosine = D.linear_schedule(), D.cosine_schedule()
image = make_shapes(1, seed=7, style="flat").images  # (1, 3, 32, 32) in [0, 1]
x0 = D.to_model_space(image)  # [-1, 1]
steps_shown = [0, 100, 250, 400, 550, 700, 850, 999]
noise = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))  # one noise draw for every t

fig = plt.figure(figsize=(12, 4.4))
grid = fig.add_gridspec(2, len(steps_shown) + 3)
ax = fig.add_subplot(grid[:, :3])
for sched in (linear, cosine):
    ax.plot(sched.betas.numpy(), label=sched.name)
ax.set_yscale("log")
ax.set_xlabel("step t")
ax.set_ylabel(r"$\beta_t$ (variance added at step t)")
ax.set_title("two schedules")
ax.legend()
for row, sched in enumerate((linear, cosine)):
    for col, t in enumerate(steps_shown):
        x_t = D.q_sample(x0, torch.tensor([t]), noise, sched)  # the package's jump to step t
        a = fig.add_subplot(grid[row, col + 3])
        a.imshow(image_grid(D.to_images(x_t)[0]), interpolation="nearest")
        a.set_xticks([])
        a.set_yticks([])
        if row == 0:
            a.set_title(f"t = {t}", fontsize=8)
        if col == 0:
            a.set_ylabel(sched.name, fontsize=8)
fig.suptitle(r"$x_t$ of one image: the same noise $\epsilon$, more of it as t grows", fontsize=10)
plt.tight_layout()
plt.show()

# %% [markdown]
# **Exercise 08.q_sample** (3 points). The strips above jump straight to step $t$. Derive that jump:
# apply the one-step kernel twice, collect the terms in $\mathbf x_0$ and in the two noises (a sum of
# independent Gaussians is a Gaussian whose variances add), and continue by induction. Then write
# `q_sample(x0, t, noise, betas)`: a batch of clean images `x0` `(N, ...)`, one integer step per image
# `t` `(N,)`, standard normal `noise` `(N, ...)` and the schedule's betas `(T,)`; return $\mathbf x_t$,
# the image after the steps $0, 1, \dots, t$ (code counts steps from 0, as diffusers does, where the papers count
# from 1: `t = 0` is the image after the first step). Each image has its own step, and whatever follows the batch
# dimension (images, vectors) must broadcast.

# %% exercise="08.q_sample"
def q_sample(x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor, betas: torch.Tensor) -> torch.Tensor:
    """x0, noise (N, ...), t (N,) integer steps, betas (T,) -> x_t (N, ...), the image after steps 0..t."""
    ### BEGIN SOLUTION
    abar = torch.cumprod(1 - betas, dim=0)[t]  # (N,): what survives of the image's variance
    abar = abar.view(-1, *[1] * (x0.ndim - 1))  # (N, 1, 1, 1) for images, (N, 1) for vectors
    return abar.sqrt() * x0 + (1 - abar).sqrt() * noise
    ### END SOLUTION


# %% tags=["check"]
check.exercise("08.q_sample", q_sample)

# %% [markdown] slideshow={"slide_type": "slide"}
# ### The jump, worked out
#
# Two steps: $\mathbf x_2 = \sqrt{\alpha_2}\,\mathbf x_1 + \sqrt{\beta_2}\,\boldsymbol\epsilon_2
# = \sqrt{\alpha_2\alpha_1}\,\mathbf x_0 + \sqrt{\alpha_2\beta_1}\,\boldsymbol\epsilon_1 + \sqrt{\beta_2}\,\boldsymbol\epsilon_2$
# with $\alpha_t = 1 - \beta_t$. The two noises are independent, so together they are one Gaussian of
# variance $\alpha_2\beta_1 + \beta_2 = \alpha_2(1-\alpha_1) + 1 - \alpha_2 = 1 - \alpha_2\alpha_1$. By
# induction, with $\bar\alpha_t = \prod_{s \le t} \alpha_s$ (the fraction of the signal's variance that
# survives),
#
# $$q(\mathbf x_t \mid \mathbf x_0) = \mathcal N\big(\sqrt{\bar\alpha_t}\,\mathbf x_0,\ (1-\bar\alpha_t)\mathbf I\big)
# \quad\Longleftrightarrow\quad \mathbf x_t = \sqrt{\bar\alpha_t}\,\mathbf x_0 + \sqrt{1-\bar\alpha_t}\,\boldsymbol\epsilon,\ \ \boldsymbol\epsilon \sim \mathcal N(0, \mathbf I).$$
#
# Square roots on both weights: $\bar\alpha_t$ and $1 - \bar\alpha_t$ are variances, and their sum is 1.
# The noise of an early step is not kept whole: every later step shrinks it with the image.
# `D.q_sample` is this line (its tests compare it with diffusers' `add_noise`); the cell below checks
# the product against the package's schedule and the closed form against the chain run step by step,
# 20 000 times.

# %%
abar_scratch = torch.cumprod(1 - cosine.betas, dim=0)  # (T,)
assert torch.allclose(abar_scratch, cosine.alphas_cumprod), "the product of the (1 - beta)s is the schedule's abar"
t_demo = torch.tensor([10, 500, 990])
x_scratch = abar_scratch[t_demo].view(-1, 1, 1, 1).sqrt() * x0 + (1 - abar_scratch[t_demo]).view(-1, 1, 1, 1).sqrt() * noise
assert torch.allclose(x_scratch, D.q_sample(x0.expand(3, -1, -1, -1), t_demo, noise.expand(3, -1, -1, -1), cosine), atol=1e-6)

# the chain step by step: 20 000 copies of one pixel of value 0.8, through the first 500 cosine steps
pixel, chains = 0.8, torch.full((20_000,), 0.8)
g = torch.Generator().manual_seed(0)
print(f"{'t':>4s}  {'mean: chain':>12s} {'closed form':>12s}   {'std: chain':>11s} {'closed form':>12s}")
for t in range(500):
    chains = (1 - cosine.betas[t]).sqrt() * chains + cosine.betas[t].sqrt() * torch.randn(chains.shape, generator=g)
    if t in (0, 99, 299, 499):
        mean, std = cosine.alpha_bar(t).sqrt() * pixel, (1 - cosine.alpha_bar(t)).sqrt()
        print(f"{t:4d}  {chains.mean():12.4f} {mean:12.4f}   {chains.std():11.4f} {std:12.4f}")
        assert abs(chains.mean() - mean) < 0.02 and abs(chains.std() - std) < 0.02

fig, ax = plt.subplots(figsize=(5, 3))
for sched in (linear, cosine):
    ax.plot(sched.alphas_cumprod.numpy(), label=sched.name)
ax.set_xlabel("step t")
ax.set_ylabel(r"$\bar\alpha_t$ (signal variance kept)")
ax.set_title("how fast the image disappears")
ax.legend()
plt.tight_layout()
plt.show()

# %% [markdown] slideshow={"slide_type": "slide"}
# ## 2 · Why predicting the noise is enough
#
# Generating means running the chain backwards: start from pure noise $\mathbf x_T$ and take
# $\mathbf x_t \to \mathbf x_{t-1}$ steps. The true reverse step $q(\mathbf x_{t-1} \mid \mathbf x_t)$
# needs the whole data distribution, but the reverse step *given the clean image*,
# $q(\mathbf x_{t-1} \mid \mathbf x_t, \mathbf x_0)$, is a Gaussian with a closed-form mean and variance.
# So a sampler needs one thing at each step: a guess of $\mathbf x_0$. And since
# $\mathbf x_t = \sqrt{\bar\alpha_t}\mathbf x_0 + \sqrt{1-\bar\alpha_t}\boldsymbol\epsilon$, guessing the
# noise is the same as guessing the image:
#
# $$\hat{\mathbf x}_0 = \frac{\mathbf x_t - \sqrt{1-\bar\alpha_t}\,\boldsymbol\epsilon_\theta(\mathbf x_t, t)}{\sqrt{\bar\alpha_t}}.$$
#
# DDPM therefore trains a network $\boldsymbol\epsilon_\theta$ with the plain regression
#
# $$\mathcal L = \mathbb E_{\mathbf x_0, t, \boldsymbol\epsilon}\,\big\|\boldsymbol\epsilon - \boldsymbol\epsilon_\theta(\mathbf x_t, t)\big\|^2,$$
#
# the variational lower bound of the lecture with its per-step weights dropped (Ho et al. found the
# unweighted version gives better samples). Three reasons the noise is the right target:
#
# * **it is well scaled at every step**: ε has unit variance whatever $t$ is, so one network handles
#   nearly clean and nearly pure-noise inputs alike; $\mathbf x_0$ as a target is nearly unpredictable
#   at large $t$ and nearly a copy of the input at small $t$;
# * **it is a denoiser**: the best possible ε-prediction gives $\hat{\mathbf x}_0 = \mathbb E[\mathbf x_0 \mid \mathbf x_t]$,
#   the average of all clean images that could have produced $\mathbf x_t$;
# * **it is a score**: $\boldsymbol\epsilon^*(\mathbf x_t, t) = -\sqrt{1-\bar\alpha_t}\,\nabla_{\mathbf x_t} \log p_t(\mathbf x_t)$.
#   The network points from $\mathbf x_t$ towards likelier images, and section 5 will add other
#   gradients to it.
#
# With the true noise the inversion is exact; with a wrong guess the error is magnified by
# $\sqrt{(1-\bar\alpha_t)/\bar\alpha_t}$, which is why early steps (large $t$) only sketch the image:

# %%
for t in (100, 500, 900):
    abar = cosine.alpha_bar(t)
    x_t = D.q_sample(x0, torch.tensor([t]), noise, cosine)
    exact = D.predict_x0(x_t, noise, abar)
    off = D.predict_x0(x_t, noise + 0.1 * torch.randn_like(noise), abar)  # a 10% error in the noise
    print(f"t = {t}: sqrt((1-abar)/abar) = {((1 - abar) / abar).sqrt():7.2f}   |x0_hat - x0| with the true noise "
          f"{(exact - x0).abs().max():.1e}, with 10% noise error {(off - x0).abs().mean():.3f}")

# %% [markdown] slideshow={"slide_type": "slide"}
# ## 3 · Train a denoiser, live
#
# A text-to-image model adds the caption: $\boldsymbol\epsilon_\theta(\mathbf x_t, t, \mathbf c)$ with
# $\mathbf c$ the caption's embedding from a **frozen text encoder**, as DALL-E 2 and Imagen use
# theirs; ours is the course CLIP's text tower from notebook 02. The network is a small U-Net
# (`mmcourse.models.unet`): convolutions that halve the resolution and double it back, with skips,
# and the step $t$ and the caption enter every block as a per-channel scale and shift (FiLM).
#
# One more ingredient, needed in section 5: for 10 % of the training images the caption is replaced
# by a learned "no caption" vector, so the same network also learns the unconditional
# $\boldsymbol\epsilon_\theta(\mathbf x_t, t)$. Here is the whole training step, written out:

# %%
torch.manual_seed(0)
tiny = DiffusionModel(pretrained.load("clip_shapes"), image_size=16, channels=(16, 32), emb_dim=64).to(device)
opt = torch.optim.AdamW(tiny.parameters(), lr=3e-3)
sched = tiny.schedule
stream = stream_shapes(32, seed=1, style="flat", size=16)  # fresh captioned images, never a held-out pair
live_losses, start = [], time.perf_counter()
tiny.train()
while time.perf_counter() - start < 6 and len(live_losses) < 300:  # about six seconds
    batch = next(stream)
    x0_b = D.to_model_space(batch.images).to(device)  # (B, 3, 16, 16) in [-1, 1]
    c = tiny.encode(batch.captions)  # (B, 64): frozen CLIP text embeddings
    drop = torch.rand(len(c), device=device) < 0.1  # caption dropout: learn eps(x_t, t) too
    c = torch.where(drop[:, None], tiny.null_cond.expand_as(c), c)
    t = torch.randint(0, sched.num_steps, (len(c),), device=device)  # a random step per image
    eps = torch.randn_like(x0_b)
    x_t = D.q_sample(x0_b, t, eps, sched)  # noise each image to its step
    loss = F.mse_loss(tiny(x_t, t, c), eps)  # predict the noise
    opt.zero_grad()
    loss.backward()
    opt.step()
    live_losses.append(loss.item())
tiny.eval()
print(f"{len(live_losses)} steps in {time.perf_counter() - start:.1f} s: loss {live_losses[0]:.3f} -> "
      f"{sum(live_losses[-10:]) / 10:.3f}")
fig, ax = plt.subplots(figsize=(5, 3))
ax.plot(live_losses)
ax.set_yscale("log")
ax.set_xlabel("step (batch of 32)")
ax.set_ylabel(r"$\|\epsilon - \epsilon_\theta\|^2$ per pixel")
ax.set_title("a denoiser learns fast at first")
plt.tight_layout()
plt.show()
show_images(D.sample(tiny, ["a red circle", "a blue square", "a yellow star", "a green heart"], guidance_scale=0.0,
                     steps=25, seed=0), ["red circle", "blue square", "yellow star", "green heart"],
            title="after a few seconds: blobs")

# %% [markdown] slideshow={"slide_type": "fragment"}
# The loss falls fast from 1 (predicting nothing; the curve and the printed numbers show how far):
# most of the noise is easy to spot, on the flat background. What remains, the noise on top of the
# object at high noise levels, decides colour and shape, and it takes thousands of steps more. The
# package's `D.training_loss` is the same step (the tests check it), with one refinement the
# bundled model uses: min-SNR weighting, which lowers the weight of the nearly clean steps so more
# of the gradient goes to those noisy ones.

# %% [markdown] slideshow={"slide_type": "slide"}
# ## 4 · The bundled model: DDPM and DDIM
#
# `mmcourse.pretrained.load("diffusion_shapes")` is the same design trained for minutes on two CPU
# cores (the card printed below says how long, and on what): 16 × 16 flat images of one object, captions in many wordings ("the crimson
# disc", "there is a turquoise box in the top"), the eight held-out colour–shape pairs never shown,
# a self-attention layer at the 4 × 4 bottleneck, and min-SNR loss weighting. At 32 × 32 the same
# budget taught a model colours but not shapes; the card says what 16 × 16 buys.

# %%
model = pretrained.load("diffusion_shapes", device=device)
info = pretrained.card("diffusion_shapes")
n_params = sum(p.numel() for p in model.parameters())
print(f"{n_params:,} parameters in the denoiser; {info['metrics']['steps']} steps of {info['metrics']['batch_size']} "
      f"images in {info['train']['seconds'] / 60:.1f} min on {info['train']['machine']}; text encoder: "
      f"clip_shapes (sha256 {info['requires']['clip_shapes'][:12]}..., frozen, not part of this checkpoint)")

# what the network believes x_0 is, from x_t alone (plus the caption)
S = model.image_size  # 16
real = make_shapes(1, seed=11, style="flat", size=S)
x0_real = D.to_model_space(real.images).to(device)
ts = [950, 800, 600, 400, 200]
eps_true = torch.randn(len(ts), *x0_real.shape[1:], generator=torch.Generator().manual_seed(1)).to(device)
x_ts = D.q_sample(x0_real.expand(len(ts), -1, -1, -1), torch.tensor(ts, device=device), eps_true, model.schedule)
with torch.no_grad():
    eps_hat = model(x_ts, torch.tensor(ts, device=device), model.encode(real.captions * len(ts)))
x0_hats = torch.cat([D.predict_x0(x_ts[i : i + 1], eps_hat[i : i + 1], model.schedule.alpha_bar(t).to(device))
                     for i, t in enumerate(ts)])
show_images(torch.cat([D.to_images(x_ts), real.images.to(device), D.to_images(x0_hats.clamp(-1, 1))]),
            [f"x_t, t={t}" for t in ts] + ["the real x_0"] + [f"x0_hat from t={t}" for t in ts], ncols=len(ts) + 1,
            title=f"'{real.captions[0]}': noisy inputs and the model's estimate of the clean image")

# %% [markdown] slideshow={"slide_type": "slide"}
# ### DDPM: a draw from the posterior
#
# Section 2 said the reverse step is easy *given the clean image*. Ho et al. (eq. 6–7) write it out:
# for one step $t \to t-1$, with $\alpha_t = 1 - \beta_t$,
#
# $$q(\mathbf x_{t-1} \mid \mathbf x_t, \mathbf x_0) = \mathcal N\big(\tilde{\boldsymbol\mu}_t,\ \tilde\beta_t \mathbf I\big),\qquad
# \tilde{\boldsymbol\mu}_t = \frac{\sqrt{\bar\alpha_{t-1}}\,\beta_t}{1-\bar\alpha_t}\,\mathbf x_0 + \frac{\sqrt{\alpha_t}\,(1-\bar\alpha_{t-1})}{1-\bar\alpha_t}\,\mathbf x_t,\qquad
# \tilde\beta_t = \frac{1-\bar\alpha_{t-1}}{1-\bar\alpha_t}\,\beta_t .$$
#
# The mean mixes the clean image and the noisy one; the variance $\tilde\beta_t$ is smaller than the
# $\beta_t$ the forward step added, because knowing $\mathbf x_0$ removes uncertainty. **DDPM**
# (ancestral sampling) puts the network's estimate $\hat{\mathbf x}_0$, clipped to $[-1, 1]$ where
# real images live, in place of $\mathbf x_0$ and draws $\mathbf x_{t-1}$, with fresh noise at every
# step. A sampler that takes 50 steps instead of 1 000 jumps from $t$ to a much earlier $t'$, and the
# posterior exists for any $t' < t$: the forward jump from $\mathbf x_{t'}$ to $\mathbf x_t$ is itself
# one Gaussian step.
#
# **Exercise 08.posterior_step** (3 points). Write `posterior_step(x_t, x0, alpha_bar_t, alpha_bar_prev, noise)`:
# a draw from $q(\mathbf x_{t'} \mid \mathbf x_t, \mathbf x_0)$ for a jump $t \to t'$ of any length, given
# only $\bar\alpha_t$ and $\bar\alpha_{t'}$ (Python floats or 0-d tensors) and standard normal `noise`
# shaped like `x_t`. Work out first what plays the part of $\alpha_t$ and $\beta_t$ for a jump. The last
# jump lands on the clean image: there $\bar\alpha_{t'} = 1$.

# %% exercise="08.posterior_step"
def posterior_step(x_t: torch.Tensor, x0: torch.Tensor, alpha_bar_t, alpha_bar_prev, noise: torch.Tensor) -> torch.Tensor:
    """x_t, x0, noise (N, ...), the alpha bars of steps t and t' < t -> a draw of x_{t'} (N, ...)."""
    ### BEGIN SOLUTION
    alpha = alpha_bar_t / alpha_bar_prev  # the forward jump t' -> t shrinks by sqrt(alpha) ...
    beta = 1 - alpha  # ... and adds variance beta
    mean = (alpha_bar_prev**0.5 * beta / (1 - alpha_bar_t)) * x0 + (alpha**0.5 * (1 - alpha_bar_prev) / (1 - alpha_bar_t)) * x_t
    var = (1 - alpha_bar_prev) / (1 - alpha_bar_t) * beta
    return mean + var**0.5 * noise
    ### END SOLUTION


# %% tags=["check"]
check.exercise("08.posterior_step", posterior_step)

# %% [markdown] slideshow={"slide_type": "slide"}
# ### The DDPM update, worked out
#
# The forward process from $\mathbf x_{t'}$ to $\mathbf x_t$ multiplies the $\alpha$s in between, whose
# product is $\bar\alpha_t / \bar\alpha_{t'}$: it is one step with
# $\alpha = \bar\alpha_t/\bar\alpha_{t'}$ and $\beta = 1 - \bar\alpha_t/\bar\alpha_{t'}$. Put those into
# eq. 7:
#
# $$\mathbf x_{t'} = \frac{\sqrt{\bar\alpha_{t'}}\,\beta}{1-\bar\alpha_t}\,\hat{\mathbf x}_0 + \frac{\sqrt{\alpha}\,(1-\bar\alpha_{t'})}{1-\bar\alpha_t}\,\mathbf x_t
# + \sqrt{\frac{1-\bar\alpha_{t'}}{1-\bar\alpha_t}\,\beta}\;\mathbf z,\qquad \mathbf z \sim \mathcal N(0, \mathbf I).$$
#
# At the last jump $\bar\alpha_{t'} = 1$: the variance is 0 and the mean is $\hat{\mathbf x}_0$, so the
# sampler ends on its estimate, with no noise added. (Ho et al. tried the larger variance $\beta$ too,
# "fixed_large" in diffusers, and found samples of similar quality; the posterior's $\tilde\beta$ is
# diffusers' default, "fixed_small".) `D.posterior_step` is this draw and `D.ddpm_step` the whole update:
# $\hat{\mathbf x}_0$ from ε, clipped, then the draw. Written from scratch, the update must equal both
# (their tests compare them with diffusers' `DDPMScheduler`, skipped steps included):

# %%
def ddpm_update(x_t, eps, t, t_prev, schedule, z):
    """DDPM from scratch: x0_hat from eps, clipped to [-1, 1], then a draw from q(x_t' | x_t, x0_hat)."""
    a, a_prev = schedule.alpha_bar(t), schedule.alpha_bar(t_prev)
    x0_hat = ((x_t - (1 - a).sqrt() * eps) / a.sqrt()).clamp(-1, 1)
    alpha = a / a_prev  # the forward jump t' -> t: shrink sqrt(alpha), added variance 1 - alpha
    mean = a_prev.sqrt() * (1 - alpha) / (1 - a) * x0_hat + alpha.sqrt() * (1 - a_prev) / (1 - a) * x_t
    var = (1 - a_prev) / (1 - a) * (1 - alpha)
    return mean + var.sqrt() * z


g = torch.Generator().manual_seed(3)
xs, es, zs = (torch.randn(2, 3, 8, 8, generator=g) for _ in range(3))
for t, t_prev in [(600, 599), (600, 580), (999, 979), (20, -1)]:
    ours = ddpm_update(xs, es, t, t_prev, cosine, zs)
    x0_hat = D.predict_x0(xs, es, cosine.alpha_bar(t)).clamp(-1, 1)
    assert torch.allclose(ours, D.ddpm_step(xs, es, t, t_prev, cosine, zs), atol=1e-5), (t, t_prev)
    assert torch.allclose(ours, D.posterior_step(xs, x0_hat, t, t_prev, cosine, zs), atol=1e-5), (t, t_prev)
    print(f"t = {t:3d} -> t' = {t_prev:3d}: from scratch = D.ddpm_step = D.posterior_step(x0_hat); "
          f"largest difference {(ours - D.ddpm_step(xs, es, t, t_prev, cosine, zs)).abs().max():.1e}")
assert torch.equal(ddpm_update(xs, es, 20, -1, cosine, zs), ddpm_update(xs, es, 20, -1, cosine, 0 * zs)), \
    "the last step adds no noise"

# %% [markdown] slideshow={"slide_type": "slide"}
# ### DDIM: the same model, no noise
#
# **DDIM** (Song et al.) keeps the same training but replaces the chain by a deterministic one: estimate
# $\hat{\mathbf x}_0$, then re-noise it to the earlier step with the *same* predicted noise,
#
# $$\mathbf x_{t'} = \sqrt{\bar\alpha_{t'}}\,\hat{\mathbf x}_0 + \sqrt{1-\bar\alpha_{t'}}\,\boldsymbol\epsilon_\theta(\mathbf x_t, t), \qquad t' < t$$
#
# (`D.ddim_step`, eq. 12 of the paper with η = 0). No noise is added, so one $\mathbf x_T$ always gives
# the same image, and $t'$ can be far below $t$: 50 steps instead of 1 000.
#
# The package's `D.sample` runs the loop with any step function; here both samplers draw the same
# eight captions at several step counts, with guidance w = 3 (section 5 explains it). Samplers clip
# $\hat{\mathbf x}_0$ to $[-1, 1]$. The row "x̂₀ clipped" does just that in the update above
# (`D.ddim_step_clipped_x0_only`, diffusers' default); the other DDIM rows use a repaired step, the
# subject of the next exercise. The time is per image on this machine; the score is how often an
# independent classifier, trained only on real images, reads both the requested colour and the
# requested shape (16 × 16 images are upsampled for it; its score on real images is printed with the
# table).

# %%
classifier = pretrained.load("attributes_shapes")
pairs = fidelity.eval_pairs()
sampler_captions = [f"a {c} {s}" for c, s in pairs]
runs = [("DDIM", 10, D.ddim_step_clipped), ("DDIM", 25, D.ddim_step_clipped), ("DDIM", 50, D.ddim_step_clipped),
        ("DDIM", 50, D.ddim_step_clipped_x0_only), ("DDPM", 10, D.ddpm_step), ("DDPM", 50, D.ddpm_step),
        ("DDPM", 200, D.ddpm_step)]
rows, table = [], []
for sampler, n_steps, step in runs:
    start = time.perf_counter()
    x = D.sample(model, sampler_captions * 2, guidance_scale=3.0, steps=n_steps, seed=1, step=step).cpu()
    seconds = (time.perf_counter() - start) / len(x)
    score = fidelity.score_images(x.view(2, len(pairs), *x.shape[1:]).transpose(0, 1), pairs, classifier)
    label = f"{sampler} {n_steps}" + (", x̂₀ clipped" if step is D.ddim_step_clipped_x0_only else "")
    table.append((label, seconds, score["both"]))
    rows.append(x[: len(pairs)])
fig, axes = plt.subplots(len(rows), 1, figsize=(8, 1.05 * len(rows)))
for ax, x, (label, seconds, acc) in zip(axes, rows, table):
    ax.imshow(image_grid(x), interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=8)
axes[0].xaxis.tick_top()
axes[0].set_xticks([S * (i + 0.5) for i in range(len(pairs))], [f"{c}\n{s}" for c, s in pairs], fontsize=7)
plt.tight_layout()
plt.show()
print(f"{'sampler':24s}{'ms / image':>11s}{'colour+shape':>14s}  (16 images each, w = 3)")
for label, seconds, acc in table:
    print(label.ljust(24 + label.count("\u0302")) + f"{1000 * seconds:11.1f}{acc:14.2f}")  # x̂: one column, two characters
print(f"{'real images (the card)':24s}{'':11s}{info['metrics']['real_images']['both']:14.2f}")

# the same table on more images, from the committed benchmark (shipped with the package)
bench = measured("diffusion_quality")
print(f"\nthe benchmark ({bench['date']}, more images per row):")
for r in bench["samplers_at_w3"]:
    label = f"{r['sampler'].split(',')[0].upper()} {r['steps']}" + (", x̂₀ clipped" if "as predicted" in r["sampler"] else "")
    print(label.ljust(24 + label.count("\u0302")) + f"{r['ms_per_image']:11.1f}{r['both']:14.2f}")

# %% [markdown] slideshow={"slide_type": "fragment"}
# What to read in the tables (sixteen images per row make a coarse score: read the trend, not the
# second decimal; the benchmark's rows rest on more images):
#
# * **time is proportional to steps**: every step is one pass of the U-Net per image, two with guidance;
# * **a few dozen steps are enough for either sampler**: past them the model, not the sampler, is the
#   limit (compare the 10-, 50- and 1 000-step rows of the benchmark);
# * **the two samplers differ in character, not in score**: DDIM is deterministic (one
#   $\mathbf x_T$ gives nearly the same image at any step count) and keeps a faint grain in flat
#   backgrounds, while DDPM's fresh noise gives a different image for every step count;
# * **"x̂₀ clipped" breaks under guidance.** The clip changes $\hat{\mathbf x}_0$ but not the
#   $\boldsymbol\epsilon$ of the direction term, and both came from the same $\mathbf x_t$: after the clip
#   they describe two different noisy images. Guidance pushes both. At high noise $\hat{\mathbf x}_0$ is
#   divided by a tiny $\sqrt{\bar\alpha_t}$, so its push is lost in the clip and survives in full only in
#   the direction term, where it enters with the opposite sign: each step moves the image *away* from
#   the caption.
#
# **Exercise 08.ddim_clipped** (2 points). Write `ddim_step_clipped(x_t, eps, alpha_bar_t, alpha_bar_prev)`:
# the DDIM step (η = 0) with $\hat{\mathbf x}_0$ clipped to $[-1, 1]$ in which both terms of the update
# describe the same $\mathbf x_t$ again. The alpha bars arrive as Python floats or 0-d tensors;
# `alpha_bar_prev = 1` is the last step.

# %% exercise="08.ddim_clipped"
def ddim_step_clipped(x_t: torch.Tensor, eps: torch.Tensor, alpha_bar_t, alpha_bar_prev) -> torch.Tensor:
    """x_t, eps (N, ...), the alpha bars of steps t and t' < t -> x_{t'} (N, ...), x0_hat clipped to [-1, 1]."""
    ### BEGIN SOLUTION
    x0_hat = ((x_t - (1 - alpha_bar_t) ** 0.5 * eps) / alpha_bar_t**0.5).clamp(-1, 1)
    eps = (x_t - alpha_bar_t**0.5 * x0_hat) / (1 - alpha_bar_t) ** 0.5  # the noise that goes with the clipped x0_hat
    return alpha_bar_prev**0.5 * x0_hat + (1 - alpha_bar_prev) ** 0.5 * eps
    ### END SOLUTION


# %% tags=["check"]
check.exercise("08.ddim_clipped", ddim_step_clipped)

# %% [markdown] slideshow={"slide_type": "fragment"}
# The cure is to recompute the noise the clipped image implies, solving
# $\mathbf x_t = \sqrt{\bar\alpha_t}\,\hat{\mathbf x}_0 + \sqrt{1-\bar\alpha_t}\,\boldsymbol\epsilon$ for it:
#
# $$\boldsymbol\epsilon' = \frac{\mathbf x_t - \sqrt{\bar\alpha_t}\,\mathrm{clip}(\hat{\mathbf x}_0)}{\sqrt{1-\bar\alpha_t}},\qquad
# \mathbf x_{t'} = \sqrt{\bar\alpha_{t'}}\,\mathrm{clip}(\hat{\mathbf x}_0) + \sqrt{1-\bar\alpha_{t'}}\,\boldsymbol\epsilon'.$$
#
# That is `D.ddim_step_clipped`, diffusers' `DDIMScheduler` with `use_clipped_model_output=True`, and
# what the DDIM rows above use. DDPM uses only the clipped $\hat{\mathbf x}_0$ (and fresh noise), so it
# never had the problem; `D.sample` defaults to DDPM with 50 steps, the sampler the model's card is
# measured with. Strong guidance makes the difference, as a single step shows:

# %%
a_t, a_prev = cosine.alpha_bar(979), cosine.alpha_bar(959)
x_t = torch.randn(2, 3, 8, 8, generator=g)
eps = x_t + 0.5 * torch.randn(2, 3, 8, 8, generator=g)  # a prediction pushed hard, as guidance at high noise does
x0_clip = D.predict_x0(x_t, eps, a_t).clamp(-1, 1)
eps_again = (x_t - a_t.sqrt() * x0_clip) / (1 - a_t).sqrt()
scratch = a_prev.sqrt() * x0_clip + (1 - a_prev).sqrt() * eps_again
assert torch.allclose(scratch, D.ddim_step_clipped(x_t, eps, 979, 959, cosine), atol=1e-5)
print(f"x0_hat before the clip spans {D.predict_x0(x_t, eps, a_t).min():.0f} .. {D.predict_x0(x_t, eps, a_t).max():.0f}; "
      f"|eps' - eps| = {(eps_again - eps).abs().mean():.2f} on average: the network's eps no longer fits the clipped image")

# %% [markdown] slideshow={"slide_type": "slide"}
# ## 5 · Guidance
#
# A conditional model samples from $p(\mathbf x \mid y)$, and at small scale that distribution is
# broad: a "red star" can come out orange or star-ish. **Guidance** sharpens it towards images that
# are unmistakably $y$. By Bayes, $\nabla \log p(\mathbf x_t \mid y) = \nabla \log p(\mathbf x_t) + \nabla \log p(y \mid \mathbf x_t)$:
# an unconditional score plus a classifier's gradient, and guidance scales up the second term.
#
# ### Classifier guidance
#
# Dhariwal & Nichol trained a separate classifier on *noisy* images, $f_\phi(y \mid \mathbf x_t, t)$,
# and used its gradient $\nabla_{\mathbf x}\log f_\phi(y \mid \mathbf x_t)$ to steer an unconditional
# model. In noise-prediction form (the score is $-\boldsymbol\epsilon/\sqrt{1-\bar\alpha_t}$):
#
# $$\hat{\boldsymbol\epsilon} = \boldsymbol\epsilon_\theta(\mathbf x_t, t) - s\,\sqrt{1-\bar\alpha_t}\;\nabla_{\mathbf x_t}\log f_\phi(y \mid \mathbf x_t, t).$$
#
# A small demo: a colour classifier on noisy images, trained here for a few seconds, steers the
# bundled model's *unconditional* prediction (its "no caption" vector) towards a colour. The
# classifier sees $\mathbf x_t$ and, as an extra input channel, the noise level.

# %%
class NoisyColourClassifier(torch.nn.Module):
    """f(colour | x_t, t): a small CNN on the noisy image plus a channel holding sqrt(1 - abar_t)."""

    def __init__(self):
        super().__init__()
        self.net = torch.nn.Sequential(
            torch.nn.Conv2d(4, 32, 3, padding=1), torch.nn.SiLU(), torch.nn.AvgPool2d(2),
            torch.nn.Conv2d(32, 32, 3, padding=1), torch.nn.SiLU(), torch.nn.AdaptiveMaxPool2d(1),
            torch.nn.Flatten(), torch.nn.Linear(32, len(COLORS)),
        )

    def forward(self, x_t, noise_level):
        level = noise_level.view(-1, 1, 1, 1).expand(-1, 1, *x_t.shape[2:])
        return self.net(torch.cat([x_t, level], dim=1))


torch.manual_seed(0)
noisy_clf = NoisyColourClassifier().to(device)
opt = torch.optim.Adam(noisy_clf.parameters(), lr=3e-3)
pool = make_shapes(4096, seed=21, style="flat", size=S)
pool_x0, pool_y = D.to_model_space(pool.images).to(device), pool.color_ids.to(device)
start, clf_losses = time.perf_counter(), []
for step in range(200):
    idx = torch.randint(0, len(pool_y), (64,))
    t = torch.randint(0, 1000, (64,), device=device)
    x_t = D.q_sample(pool_x0[idx], t, torch.randn_like(pool_x0[idx]), model.schedule)
    level = (1 - model.schedule.alphas_cumprod.to(device)[t]).sqrt()
    loss = F.cross_entropy(noisy_clf(x_t, level), pool_y[idx])
    opt.zero_grad()
    loss.backward()
    opt.step()
    clf_losses.append(loss.item())
noisy_clf.eval()
print(f"noisy-image colour classifier: 200 steps in {time.perf_counter() - start:.1f} s, "
      f"loss {clf_losses[0]:.2f} -> {sum(clf_losses[-20:]) / 20:.2f} (chance: ln 8 = 2.08)")


def classifier_guided_sample(target_colours, scale, steps=50, seed=0):
    """DDPM from the unconditional eps, pushed along the classifier's gradient of log f(y | x_t)."""
    n = len(target_colours)
    y = torch.tensor([COLORS.index(c) for c in target_colours], device=device)
    null = model.null_cond.detach().expand(n, -1)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, S, S, generator=g).to(device)
    timesteps = D.sampling_timesteps(steps)
    for i, t in enumerate(timesteps):
        t_prev = timesteps[i + 1] if i + 1 < len(timesteps) else -1
        abar = model.schedule.alpha_bar(t).to(device)
        x_in = x.detach().requires_grad_(True)
        log_f = F.log_softmax(noisy_clf(x_in, (1 - abar).sqrt().expand(n)), dim=1)[torch.arange(n), y]
        grad = torch.autograd.grad(log_f.sum(), x_in)[0]  # grad_x log f(y | x_t)
        with torch.no_grad():
            eps = model(x, torch.full((n,), t, device=device), null)
            eps = eps - scale * (1 - abar).sqrt() * grad
            x = D.ddpm_step(x, eps, t, t_prev, model.schedule, torch.randn(x.shape, generator=g).to(device))
    return D.to_images(x).detach()


targets = [c for c in COLORS for _ in range(2)]
unguided = classifier_guided_sample(targets, scale=0.0)
guided = classifier_guided_sample(targets, scale=5.0)
def judge(x):
    """How often the independent classifier (trained on real 32 x 32 images) reads the target colour."""
    with torch.no_grad():
        logits = classifier(F.interpolate(x.cpu(), size=32, mode="bilinear", align_corners=False))
    return (logits[:, : len(COLORS)].argmax(1) == torch.tensor([COLORS.index(c) for c in targets])).float().mean().item()


print(f"independent classifier reads the target colour: unconditional {judge(unguided):.2f}, "
      f"classifier-guided {judge(guided):.2f} (chance {1 / len(COLORS):.2f})")
show_images(torch.cat([unguided, guided]), [""] * len(targets) + targets, size=0.7, ncols=len(targets),
            title="top: unconditional samples (no caption); bottom: the same start, guided by the noisy classifier "
            "towards the colour named above each image (s = 5)")

# %% [markdown] slideshow={"slide_type": "slide"}
# It works, but it needs a second model that must be trained on noisy images at every noise level,
# a backward pass through it at every step, and its gradients can be adversarial: pixels changed
# just enough to convince the classifier, not a person.
#
# ### Classifier-free guidance
#
# Ho & Salimans noticed that a model trained with caption dropout already holds a classifier. By
# Bayes, $\log p(y \mid \mathbf x_t) = \log p(\mathbf x_t \mid y) - \log p(\mathbf x_t) + \text{const}$,
# and both scores are predictions the network makes:
# $\nabla \log p(y \mid \mathbf x_t) = -\big(\boldsymbol\epsilon_\theta(\mathbf x_t, t, y) - \boldsymbol\epsilon_\theta(\mathbf x_t, t)\big)/\sqrt{1-\bar\alpha_t}$.
# Putting this implicit classifier into the formula above, applied to the conditional model with
# weight $w$, gives the lecture's rule:
#
# $$\bar{\boldsymbol\epsilon}_\theta(\mathbf x_t, t, y) = \boldsymbol\epsilon_\theta(\mathbf x_t, t, y) + w\,\big(\boldsymbol\epsilon_\theta(\mathbf x_t, t, y) - \boldsymbol\epsilon_\theta(\mathbf x_t, t)\big).$$
#
# $w = 0$ is the plain conditional model; larger $w$ extrapolates away from "any image" towards
# "this caption". No second model, no gradients: one extra forward pass per step (the two predictions
# run as one batch; `D.guided_eps` is the rule and `D.sample` uses it). Libraries write the same rule as
# $\boldsymbol\epsilon_u + s(\boldsymbol\epsilon_c - \boldsymbol\epsilon_u)$ with `guidance_scale` $s = 1 + w$,
# so Stable Diffusion's "cfg 7.5" is $w = 6.5$ and "cfg 1" is no guidance at all:

# %%
print("Stable Diffusion's cfg 1, 2.5, 4.5, 7.5 as the lecture's w:", [D.cfg_scale_to_w(s) for s in (1, 2.5, 4.5, 7.5)])

# %% [markdown] slideshow={"slide_type": "slide"}
# ### Several captions, and captions to avoid
#
# The implicit classifier steers with more than one caption. Composable diffusion (Liu et al.) samples
# from
#
# $$\tilde p(\mathbf x_t \mid c_1, \dots, c_K) \;\propto\; p(\mathbf x_t)\,\prod_{k=1}^K p(c_k \mid \mathbf x_t)^{s_k}:$$
#
# each caption's implicit classifier raised to its own power $s_k$. A positive $s_k$ pulls towards
# caption $k$; a negative one pushes away from it, which is what a **negative prompt** is.
#
# **Exercise 08.compose** (3 points). Write `composed_eps(eps_uncond, eps_conds, scales)`: the noise
# prediction whose score is the score of $\tilde p$. `eps_uncond` `(N, ...)` is the unconditional
# prediction, `eps_conds` `(K, N, ...)` the predictions for $K$ captions, `scales` $K$ numbers (a list or
# a 1-D tensor). Derive it from the scores, as the rule above was derived; then check your formula
# against the lecture's rule for one caption. How does a library's `guidance_scale` relate to $s$?

# %% exercise="08.compose"
def composed_eps(eps_uncond: torch.Tensor, eps_conds: torch.Tensor, scales) -> torch.Tensor:
    """eps_uncond (N, ...), eps_conds (K, N, ...), K scales -> the composed noise prediction (N, ...)."""
    ### BEGIN SOLUTION
    s = torch.as_tensor(scales, dtype=eps_uncond.dtype).view(-1, *[1] * eps_uncond.ndim)  # (K, 1, 1, ...)
    return eps_uncond + (s * (eps_conds - eps_uncond)).sum(dim=0)
    ### END SOLUTION


# %% tags=["check"]
check.exercise("08.compose", composed_eps)

# %% [markdown] slideshow={"slide_type": "slide"}
# The score of $\tilde p$ is $\nabla \log p(\mathbf x_t) + \sum_k s_k \nabla \log p(c_k \mid \mathbf x_t)$;
# with $\nabla\log p(\mathbf x_t) = -\boldsymbol\epsilon_u/\sqrt{1-\bar\alpha_t}$ and each implicit classifier
# as above, multiplying by $-\sqrt{1-\bar\alpha_t}$ gives back a noise prediction:
#
# $$\tilde{\boldsymbol\epsilon} = \boldsymbol\epsilon_u + \sum_{k=1}^K s_k\,(\boldsymbol\epsilon_k - \boldsymbol\epsilon_u).$$
#
# With one caption this is $\boldsymbol\epsilon_u + s(\boldsymbol\epsilon_c - \boldsymbol\epsilon_u)$: the
# lecture's rule with $w = s - 1$, so $s$ *is* the library's `guidance_scale`. Stable Diffusion's negative
# prompt puts the negative caption's prediction where $\boldsymbol\epsilon_u$ was:
# $\boldsymbol\epsilon_{\text{neg}} + s(\boldsymbol\epsilon_c - \boldsymbol\epsilon_{\text{neg}})
# = \boldsymbol\epsilon_u + s(\boldsymbol\epsilon_c - \boldsymbol\epsilon_u) + (1 - s)(\boldsymbol\epsilon_{\text{neg}} - \boldsymbol\epsilon_u)$,
# a composition with scales $(s, 1 - s)$. Below, the bundled model draws "a red heart" at cfg 4 alone,
# then with the negative prompts "a small red heart" and "a large red heart" (scales $(4, -3)$): the same
# starting noise in every column, one network pass per caption plus one without. The size the caption
# leaves open moves away from the negative prompt.

# %%
@torch.no_grad()
def sample_composed(captions, scales, n, *, seed=0, steps=50):
    """DDPM with eps_u + sum_k s_k (eps_k - eps_u): n images, K captions with their scales."""
    conds = torch.cat([model.null_cond[None], model.encode(captions)])  # (1 + K, C): "no caption" first
    s = torch.tensor(scales, device=device).view(-1, 1, 1, 1, 1)  # (K, 1, 1, 1, 1)
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, S, S, generator=gen).to(device)
    timesteps = D.sampling_timesteps(steps)
    for i, t in enumerate(timesteps):
        t_prev = timesteps[i + 1] if i + 1 < len(timesteps) else -1
        eps_all = model(x.repeat(len(conds), 1, 1, 1), torch.full((len(conds) * n,), t, device=device),
                        conds.repeat_interleave(n, dim=0)).view(len(conds), n, *x.shape[1:])  # (1 + K, n, 3, S, S)
        eps = eps_all[0] + (s * (eps_all[1:] - eps_all[0])).sum(dim=0)
        x = D.ddpm_step(x, eps, t, t_prev, model.schedule, torch.randn(x.shape, generator=gen).to(device))
    return D.to_images(x).cpu()


negatives = {"a red heart, cfg 4": ([], []), "negative: a small red heart": (["a small red heart"], [-3.0]),
             "negative: a large red heart": (["a large red heart"], [-3.0])}
composed = {label: sample_composed(["a red heart", *extra], [4.0, *neg], 8, seed=3) for label, (extra, neg) in negatives.items()}
area = {label: ((x[:, 0] > 0.6) & (x[:, 1] < 0.4) & (x[:, 2] < 0.4)).float().mean().item()  # the heart's red pixels
        for label, x in composed.items()}
fig, axes = plt.subplots(len(composed), 1, figsize=(8, 1.1 * len(composed)))
for ax, (label, x) in zip(axes, composed.items()):
    ax.imshow(image_grid(x), interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_ylabel(f"{label}\n(heart: {area[label]:.0%} of the image)", rotation=0, ha="right", va="center", fontsize=8)
fig.suptitle("negative prompts steer what the caption leaves open: one starting noise per column", fontsize=10)
plt.tight_layout()
plt.show()
small, large = area["negative: a small red heart"], area["negative: a large red heart"]
assert small > large, "a negative 'small' should give larger hearts than a negative 'large'"

# %% [markdown] slideshow={"slide_type": "slide"}
# ## 6 · The guidance sweep
#
# The lecture shows Stable Diffusion 3.5 drawing "a woman with a cowboy hat riding a horse" at cfg
# 1, 2.5, 4.5 and 7.5. Here is the same sweep, $w = 0, 1.5, 3.5, 6.5$, for four captions, with the
# same starting noise $\mathbf x_T$ in every column, so each row shows one draw guided more and more.
# The samples are computed once and kept for the slider below.

# %%
from mmcourse.widgets.guidance import GuidanceExplorer

sweep_captions = ["a red star", "a blue crescent", "a yellow heart", "a green cross"]
sweep_pairs = [tuple(c.split()[1:]) for c in sweep_captions]
sweep_weights = [0.0, 0.5, 1.5, 2.5, 3.5, 5.0, 6.5]
start = time.perf_counter()


def fidelity_and_diversity(images, captions):
    scores = fidelity.score_images(images, sweep_pairs, classifier)
    return {"fidelity": scores["both"], "diversity": scores["diversity"]}


explorer = GuidanceExplorer.from_model(model, sweep_captions, sweep_weights, per_caption=4, steps=50, seed=5,
                                       metric_fn=fidelity_and_diversity)
print(f"{len(sweep_weights)} weights x {len(sweep_captions)} captions x 4 samples in {time.perf_counter() - start:.1f} s")

sd35 = [0.0, 1.5, 3.5, 6.5]
fig, axes = plt.subplots(1, len(sd35), figsize=(11, 3.4))
for ax, w in zip(axes, sd35):
    ax.imshow(explorer.grid(w), interpolation="nearest")
    ax.set_title(f"cfg {1 + w:g}  (w = {w:g})")
    ax.set_xticks([])
    ax.set_yticks([])
axes[0].set_yticks([S * (i + 0.5) for i in range(len(sweep_captions))], sweep_captions, fontsize=8)
fig.suptitle("the lecture's guidance sweep on the shapes world: one row per caption, 4 draws each", fontsize=10)
plt.tight_layout()
plt.show()

# %% [markdown] slideshow={"slide_type": "slide"}
# ### Fidelity against diversity
#
# Two numbers per $w$, from the model's card, measured when it was built on samples of the eight
# captions "a {colour} {shape}" (every colour and every shape once), DDPM with 50 steps (the cell
# prints how many samples):
#
# * **fidelity**: the share of samples in which the independent classifier reads both the colour and
#   the shape of the caption;
# * **diversity**: the per-pixel standard deviation across the samples of one caption. Real images of
#   one caption differ in size, position and background; a model that draws one prototype scores 0.
#
# The dotted lines are the same two numbers for real images of the training distribution. Fidelity
# climbs fast over the first units of $w$ and then levels off, below the real images' (the model's
# shapes are rougher than the renderer's); diversity falls the whole way. At $w = 0$ the samples are
# *more* varied than real images by this measure: some backgrounds come out black or white, and faint
# speckle remains, and a pixel statistic counts both as variety. It cannot tell variety from error;
# the fidelity next to it can. (The cell checks each of these sentences against the card, so a
# retrained model cannot make them wrong silently.)

# %%
card_w = sorted(info["metrics"]["guidance"], key=float)
ws = [float(w) for w in card_w]
fidelities = [info["metrics"]["guidance"][w]["both"] for w in card_w]
diversities = [info["metrics"]["guidance"][w]["diversity"] for w in card_w]
real_scores = info["metrics"]["real_images"]
evaluation = info["metrics"]["evaluation"]
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.4))
ax1.plot(ws, fidelities, "o-", label="samples")
ax1.axhline(real_scores["both"], ls=":", color="gray", label="real images")
ax1.set_xlabel("guidance weight w")
ax1.set_ylabel("colour and shape correct")
ax1.set_ylim(0, 1.05)
ax1.set_title("fidelity rises with w")
ax1.legend()
ax2.plot(diversities, fidelities, "o-")
for w, d, f in zip(ws, diversities, fidelities):
    ax2.annotate(f"w={w:g}", (d, f), textcoords="offset points", xytext=(4, -10), fontsize=7)
ax2.axvline(real_scores["diversity"], ls=":", color="gray", label="real images")
ax2.set_xlabel("diversity (pixel std within a caption)")
ax2.set_ylabel("fidelity")
ax2.set_title("and diversity pays for it")
ax2.legend()
plt.tight_layout()
plt.show()
print(f"{evaluation['per_caption']} samples of each of {len(evaluation['pairs'])} captions per w, {evaluation['sampler']}")
for w in card_w:
    row = info["metrics"]["guidance"][w]
    print(f"w = {float(w):3.1f} (cfg {1 + float(w):3.1f}): colour {row['color']:.2f}  shape {row['shape']:.2f}  "
          f"both {row['both']:.2f}  diversity {row['diversity']:.3f}")
print(f"real images:         colour {real_scores['color']:.2f}  shape {real_scores['shape']:.2f}  "
      f"both {real_scores['both']:.2f}  diversity {real_scores['diversity']:.3f}")
# the text above, checked against the card
assert min(f for w, f in zip(ws, fidelities) if w >= 1.5) > fidelities[0] + 0.2, "fidelity climbs fast with w"
assert max(fidelities) < real_scores["both"], "fidelity stays below the real images'"
assert all(a > b for a, b in zip(diversities, diversities[1:])), "diversity falls the whole way"
assert diversities[0] > real_scores["diversity"], "at w = 0 the samples vary more than real images"

# %% [markdown] slideshow={"slide_type": "slide"}
# ### Play: slide w
#
# The slider moves through the samples computed above (nothing is sampled when it moves). Watch a row:
# at $w = 0$ the draws differ in size, place and background and some miss the shape; as $w$ grows they
# agree with the caption and with each other; at the largest weights colours saturate and shapes
# turn into the same bold template. The curve on the right is the fidelity and diversity of these 16
# samples per weight (a small sample, so a noisy curve).

# %%
explorer.widget(w=0.0)

# %% [markdown] slideshow={"slide_type": "notes"}
# Instructor: start at w = 0 and point at a row whose draws disagree; slide to 1.5 and 3.5 (most
# rows become right); end at 6.5 (saturated, near-identical draws). Then connect to the SD3.5 figure:
# the same trade, at the scale of a real model. The numbers differ by model: diffusers' Stable
# Diffusion 1.x pipelines default to cfg 7.5, while Stability's model cards run SD3.5 Large at cfg 3.5
# (28 steps) and SD3.5 Medium at 4.5 (40 steps), the middle of the lecture's sweep.

# %% [markdown] slideshow={"slide_type": "slide"}
# ## 7 · At scale: latent diffusion, and what SD3.5 changes
#
# **Latent diffusion.** Stable Diffusion (Rombach et al.; the lecture's "latent diffusion model" slide)
# runs this same loop (the forward jump of section 1, ε-prediction, DDPM or DDIM steps, classifier-free
# guidance) not on pixels but on the latents of an autoencoder trained beforehand. Its encoder turns
# a 512 × 512 × 3 image into a 64 × 64 × 4 latent, 8× smaller per side and 48× fewer numbers, so the
# U-Net that removes the noise is affordable; adding and removing noise happen entirely in that latent
# space, and the decoder maps the final latent back to pixels once. Text enters through
# cross-attention to every token of a frozen text encoder (CLIP's, as in notebook 02), where our
# small U-Net takes one caption vector as a per-channel scale and shift.
#
# **Rectified flow.** The SD3.5 model of the lecture's sweep is not a DDPM ε-predictor. Stable
# Diffusion 3 (Esser et al.) is a rectified-flow model: the noisy input is a straight line between
# the image and the noise, $\mathbf x_t = (1 - t)\,\mathbf x_0 + t\,\boldsymbol\epsilon$ with $t \in [0, 1]$,
# a transformer (MMDiT) predicts the velocity $\mathbf v = \boldsymbol\epsilon - \mathbf x_0$ along it, and
# sampling integrates $d\mathbf x_t/dt = \mathbf v$ from pure noise with a few dozen Euler steps. What
# carries over unchanged is guidance: the same rule $\mathbf v_u + s(\mathbf v_c - \mathbf v_u)$ on the
# predicted velocity, so the lecture's cfg values are the $s$ of this notebook, and the trade of
# section 6 is the same trade.

# %% [markdown] slideshow={"slide_type": "slide"}
# ## What to remember
#
# * The forward process has a closed form, derived by composing Gaussians:
#   $\mathbf x_t = \sqrt{\bar\alpha_t}\mathbf x_0 + \sqrt{1-\bar\alpha_t}\boldsymbol\epsilon$ with
#   $\bar\alpha_t = \prod_{s \le t}(1 - \beta_s)$; the schedule decides how fast $\bar\alpha_t$ falls.
# * A network that predicts the noise predicts the clean image and the score at once; training is a
#   regression on ε with a random step per image.
# * DDPM draws each step from the posterior $q(\mathbf x_{t'} \mid \mathbf x_t, \hat{\mathbf x}_0)$, whose
#   mean mixes $\hat{\mathbf x}_0$ and $\mathbf x_t$; a jump $t \to t'$ is one step with
#   $\alpha = \bar\alpha_t / \bar\alpha_{t'}$. DDIM is deterministic and skips steps, so a few dozen steps do
#   what 1 000 did. Time is proportional to steps (twice that with guidance). If $\hat{\mathbf x}_0$ is
#   clipped, recompute ε from it, or guidance turns against itself.
# * Classifier guidance adds a noisy-image classifier's gradient; classifier-free guidance gets the
#   same effect from one network trained with caption dropout:
#   $\bar{\boldsymbol\epsilon} = \boldsymbol\epsilon_c + w(\boldsymbol\epsilon_c - \boldsymbol\epsilon_u)$,
#   $w = s - 1$ for a library's `guidance_scale` $s$. Several captions and negative prompts compose:
#   $\boldsymbol\epsilon_u + \sum_k s_k(\boldsymbol\epsilon_k - \boldsymbol\epsilon_u)$.
# * Guidance trades diversity for fidelity: a little fixes wrong samples, a lot makes every sample the
#   same caricature.
# * Stable Diffusion runs the loop on an autoencoder's latents; SD3.5 swaps ε-prediction for rectified
#   flow and keeps classifier-free guidance.
#
# ## References
#
# * J. Ho, A. Jain, P. Abbeel. *Denoising diffusion probabilistic models.* NeurIPS 2020.
# * J. Song, C. Meng, S. Ermon. *Denoising diffusion implicit models.* ICLR 2021.
# * A. Nichol, P. Dhariwal. *Improved denoising diffusion probabilistic models (the cosine schedule).* ICML 2021.
# * P. Dhariwal, A. Nichol. *Diffusion models beat GANs on image synthesis (classifier guidance).* NeurIPS 2021.
# * J. Ho, T. Salimans. *Classifier-free diffusion guidance.* NeurIPS 2021 workshop, 2022.
# * N. Liu, S. Li, Y. Du, A. Torralba, J. B. Tenenbaum. *Compositional visual generation with composable diffusion models.* ECCV 2022.
# * T. Hang et al. *Efficient diffusion training via min-SNR weighting strategy.* ICCV 2023.
# * R. Rombach, A. Blattmann, D. Lorenz, P. Esser, B. Ommer. *High-resolution image synthesis with latent diffusion models (Stable Diffusion).* CVPR 2022.
# * A. Ramesh et al. *Hierarchical text-conditional image generation with CLIP latents (DALL-E 2).* 2022.
# * C. Saharia et al. *Photorealistic text-to-image diffusion models with deep language understanding (Imagen).* NeurIPS 2022.
# * X. Liu, C. Gong, Q. Liu. *Flow straight and fast: learning to generate and transfer data with rectified flow.* ICLR 2023.
# * P. Esser et al. *Scaling rectified flow transformers for high-resolution image synthesis (Stable Diffusion 3).* ICML 2024.
# * diffusers: `DDPMScheduler`, `DDIMScheduler` (the oracles of the course's tests).
