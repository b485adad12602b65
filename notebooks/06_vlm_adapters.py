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
# # 06 · Vision-language model adapters
#
# **In this notebook you will**
#
# 1. take apart a vision-language model into the lecture's three parts, **perception → adapter →
#    language**, with a frozen vision encoder (the course CLIP's image tower) and a frozen small language
#    model (the course LM), and see what each part is given and what it must learn;
# 2. read an image as a grid of **patch tokens** and turn them into "words" of the LM with **LLaVA's projector**;
# 3. train in **LLaVA's two stages**: the projector alone on captioning, then projector + LoRA on
#    instructions in a chat format, with the **loss on the answers only**;
# 4. build **Flamingo's** Perceiver resampler (learned latents that also attend to themselves) and its
#    **tanh-gated cross-attention** (a frozen LM that is exactly itself at the start), and **BLIP-2's**
#    Q-Former queries;
# 5. compare the connectors, the number of visual tokens, a text-only baseline and stage 1 alone, and look
#    at what such models get wrong: counting, left and right;
# 6. set the toy beside the state of the art, and chat with the model.
#
# About 60 minutes. Everything runs on a laptop CPU in under a minute: the bundled models
# (`mmcourse train lm_shapes`, `mmcourse train vlm_shapes`) took minutes to train.

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
from mmcourse.course import measured
from mmcourse.data import make_shapes

device = mmcourse.start(seed=0)

# %% [markdown] slideshow={"slide_type": "slide"}
# ## 1 · Perception → adapter → language
#
# The lectures draw every multimodal LLM (MLLM) the same way, the **MLLM framework**: a *perception*
# module turns the image into features, an **adapter** turns those features into something the language
# model can read, and the *language* model does the rest. Both ends are pretrained on far more data than
# any image–text set holds (a vision encoder on images or image–text pairs, an LLM on text), so they are
# **frozen**, and only the adapter, one or two percent of the parameters, learns: the lecture calls it
# **freeze and focus** (our shares are printed below; our stage 2 adds LoRA matrices to every linear layer
# of the small LM, a larger share than a big model would need). Stage 1 trains the adapter alone on captions; stage 2 (optional) also adapts the LM
# to follow instructions.
#
# Where the image meets the text is the design choice. **Early fusion** puts image tokens into the LM's
# input sequence, next to the words (LLaVA, Idefics2: "fully autoregressive"); **late fusion** keeps the
# text sequence as it was and lets the LM's layers look at the image from inside, through cross-attention
# (Flamingo). This notebook builds both, at toy scale, on the shapes world.
#
# The course's parts: the course CLIP's image tower (a CNN, notebook 02), the course language model
# `lm_shapes` (a four-layer word-level transformer pretrained on the shapes world's captions and
# question–answer text, never on an image) and, bundled, the model built on them, `vlm_shapes`.

# %%
from mmcourse import pretrained
from mmcourse.connectors import count_parameters

vlm = pretrained.load("vlm_shapes", device=device)
card = pretrained.card("vlm_shapes")
parts = {"perception: CLIP image tower (frozen)": vlm.vision.clip.visual,
         "language: lm_shapes (frozen)": vlm.lm,
         "adapter: MLP projector (trained)": vlm.connector}
lora = sum(p.numel() for p in vlm.lora_parameters())
total = sum(p.numel() for p in vlm.parameters()) - sum(p.numel() for p in vlm.vision.clip.text.parameters())
for name, module in parts.items():
    n = count_parameters(module) - (lora if "language" in name else 0)
    print(f"{name:40s}{n:>9,d} parameters  {100 * n / total:5.1f} %")
print(f"{'LoRA on the LM (trained in stage 2)':40s}{lora:>9,d} parameters  {100 * lora / total:5.1f} %")

# %% [markdown] slideshow={"slide_type": "slide"}
# ## 2 · Perception: an image as a grid of patch tokens
#
# CLIP's image embedding is one vector per image, pooled over everything: it says *what* is in the image,
# and, by design, hardly *where*. A language model asked "is the red circle to the left of the blue
# square?" needs more. So LLaVA passes the vision encoder's **patch tokens**, all of them, not the single
# summary vector: for a ViT-L/14 at 224 pixels that is 256 tokens of 1 024 numbers (the lecture's example
# counts 197, the CLS token included), each describing its own patch of the image.
#
# The course CLIP's image tower is a CNN, not a ViT, and its last feature map plays the same part: three
# strided convolutions turn a 32 × 32 image into a 4 × 4 grid of 64-channel features, each cell seeing its
# own region of the image (and, through its receptive field, some of the neighbours). We read that grid
# before the global pool: 16 patch tokens. We chose the CNN because it is the tower the course CLIP was
# trained with; a ViT's patch tokens would serve equally. A CNN's features say what is in a cell but not
# which cell it is, so the vision tower adds fixed 2-D sine–cosine position features, as a ViT adds its
# position embeddings.

# %%

scene = make_shapes(4, seed=606, objects=(1, 3), split="all")
with torch.no_grad():
    fmap = vlm.vision.clip.visual.feature_map(scene.images.to(device)).cpu()  # (4, 64, 4, 4)
    patches = vlm.vision(scene.images.to(device)).cpu()  # (4, 16, 64), with position features
print(f"images {tuple(scene.images.shape)} -> feature map {tuple(fmap.shape)} -> patch tokens {tuple(patches.shape)}")
fig, axes = plt.subplots(2, 4, figsize=(8, 4.2))
for i in range(4):
    axes[0, i].imshow(scene.images[i].permute(1, 2, 0), interpolation="nearest")
    axes[0, i].set_title(f"{scene.counts[i].item()} object(s)", fontsize=8)
    axes[1, i].imshow(fmap[i].norm(dim=0), cmap="magma")
    axes[1, i].set_title("|feature| per cell", fontsize=8)
    for ax in axes[:, i]:
        ax.set_xticks([]), ax.set_yticks([])
plt.suptitle("32 x 32 pixels -> 4 x 4 patch features (the CNN's last feature map)", fontsize=9)
plt.tight_layout()
plt.show()

# %% [markdown] slideshow={"slide_type": "slide"}
# ## 3 · Language: a small frozen language model
#
# `lm_shapes` is a decoder-only transformer (nanoGPT's shape: embeddings, four pre-norm blocks, a head),
# word-level on the course tokenizer, with four tokens appended to its vocabulary: the chat roles
# `<system>`, `<user>`, `<assistant>` and a **stop token** `<stop>` (appended, so every id the course CLIP
# reads keeps its meaning). It was pretrained on text alone, in the chat format instruction-tuned models
# use: a system prompt, a user turn, an assistant turn that ends with `<stop>`. In the user turn, where a
# vision-language model will put the image, pretraining put a *description* of the scene in words:

# %%
from mmcourse.data.chat import chat_text, describe, questions
from mmcourse.vlm import lm_answers

lm = pretrained.load("lm_shapes", device=device)
one = scene.objects[2]
qa = questions(scene.subset([2]))[0]
print(chat_text(qa[0].question, qa[0].answer, context=describe(one)))
print()
qs = [q.question for q in qa]
print(f"{'question':52s}{'truth':>8s}{'LM reading the description':>28s}{'LM, no description':>20s}")
for q, reading, guess in zip(qa, lm_answers(lm, qs, [describe(one)] * len(qs)), lm_answers(lm, qs)):
    print(f"{q.question:52s}{q.answer:>8s}{reading[:18]:>28s}{guess[:18]:>20s}")
lm_card = pretrained.card("lm_shapes")["metrics"]
print(f"\non {lm_card['questions']} fresh questions (its card): reading the description "
      f"{lm_card['accuracy_reading_description']['all']:.2f}, from the question alone {lm_card['accuracy_text_only']['all']:.2f}")

# %% [markdown]
# The language model can answer from a text about the scene; without one it can only guess the likeliest
# answer. A vision-language model has to make the image say, in the LM's own input space, what the
# description said: that is the adapter's job.
#
# Generation is one token at a time, each step attending to everything before it. Recomputing the whole
# sequence at every step repeats the work of all earlier steps; a **KV cache** keeps every layer's keys and
# values, so a step only computes the new token. Same tokens, measured here:

# %%
from mmcourse.data.chat import chat_prefix, chat_tokenizer

tok = chat_tokenizer()
prompt = torch.tensor([chat_prefix(tok)] * 4, device=device)
speed, outs = {}, {}
for use_cache in (True, False):
    start = time.perf_counter()
    outs[use_cache] = lm.generate(prompt, 32, use_cache=use_cache)
    speed[use_cache] = outs[use_cache][:, prompt.shape[1]:].numel() / (time.perf_counter() - start)
print(f"32 new tokens, batch 4: {speed[True]:.0f} tokens/s with the cache, {speed[False]:.0f} without "
      f"({speed[True] / speed[False]:.1f}x); the same tokens: {torch.equal(outs[True], outs[False])}")

# %% [markdown] slideshow={"slide_type": "slide"}
# ## 4 · LLaVA: project every patch token into the LM
#
# LLaVA's adapter is the simplest one: a map from the vision encoder's width to the LM's, applied to each
# patch token, a single matrix W in LLaVA and a two-layer MLP (linear → GELU → linear) in LLaVA-1.5. The
# projected tokens are placed in the text like words; the lecture calls it treating images as a "foreign
# language". The **LLaVA projector on all patch tokens** of our model, written out and checked against the
# package's (`mmcourse.connectors.MLPProjector`, whose tests compare it with transformers'
# `LlavaMultiModalProjector`), with the bundled weights:

# %%
p = vlm.connector  # the bundled projector: linear_1 (64 -> 96), GELU, linear_2 (96 -> 96)
W1, b1, W2, b2 = p.linear_1.weight, p.linear_1.bias, p.linear_2.weight, p.linear_2.bias
with torch.no_grad():
    by_hand = F.gelu(patches.to(device) @ W1.T + b1) @ W2.T + b2  # (B, 16, 96): one LM "word" per patch
    package = vlm.encode_images(scene.images.to(device))
print(f"visual tokens {tuple(by_hand.shape)}; largest difference from the package: {(by_hand - package).abs().max():.1e}")
assert torch.allclose(by_hand, package, atol=1e-5)

# %% [markdown]
# A foreign language indeed: the visual tokens are not near any word. The cosine of each visual token of
# the first image with its nearest word embedding, against the typical cosine between two word embeddings:

# %%
words = F.normalize(lm.token_embedding.weight[7:233].detach(), dim=1)  # the course words (no special tokens)
vis = F.normalize(package[0].detach(), dim=1)
nearest = (vis @ words.T).max(dim=1)
word_word = (words @ words.T).fill_diagonal_(-1).max(dim=1).values
print(f"visual token -> nearest word: cosine {nearest.values.mean():.2f} on average "
      f"(e.g. {', '.join(tok.itos[7 + i] for i in nearest.indices[:6].tolist())}); "
      f"word -> nearest other word: {word_word.mean():.2f}")

# %% [markdown] slideshow={"slide_type": "slide"}
# ## 5 · Training in two stages, with the loss on the answers
#
# LLaVA trains in two stages (the lecture's **LLaVA two-stage training**):
#
# 1. *feature alignment*: vision encoder and LM frozen, only the projector learns, on image–caption pairs
#    turned into a one-turn chat ("describe the image" → the caption);
# 2. *instruction tuning*: the projector and the LM learn on conversations about images (LLaVA fine-tunes
#    the whole LM; we add LoRA matrices to its query and value projections, `mmcourse.peft`, notebook 05).
#
# In both, a training example is a whole chat, but the model is trained to produce only what the
# assistant says: the system prompt, the question and the image are given, not predicted. So the
# cross-entropy is taken only at the positions of the answer, and of the `<stop>` token that ends it (a
# model never trained to say `<stop>` never stops).
#
# **Exercise 06.answer_mask** (2 points). Write `answer_mask(ids, assistant_id, stop_id)`: for a batch of
# chats as token ids `(B, L)` (right-padded with 0, possibly several user/assistant turns each), return a
# bool `(B, L)` that is True exactly at the tokens the assistant says: every token after an `<assistant>`
# token up to and including the `<stop>` that ends that turn. An answer cut off before its `<stop>` runs to
# the end of the row.

# %% exercise="06.answer_mask"
def answer_mask(ids: torch.Tensor, assistant_id: int, stop_id: int) -> torch.Tensor:
    """(B, L) token ids -> (B, L) bool, True at the assistant's tokens (answers and their <stop>)."""
    ### BEGIN SOLUTION
    inside = torch.zeros(ids.shape[0], dtype=torch.bool)
    mask = torch.zeros(ids.shape, dtype=torch.bool)
    for t in range(ids.shape[1]):
        mask[:, t] = inside  # decided by what came before: <assistant> opens, <stop> (still marked) closes
        inside = (inside | (ids[:, t] == assistant_id)) & (ids[:, t] != stop_id)
    return mask
    ### END SOLUTION


# %% tags=["check"]
check.exercise("06.answer_mask", answer_mask)

# %% [markdown]
# **The worked version.** Whether a position is trained on depends only on what came *before* it: it is an
# answer token when the last `<assistant>` before it has not yet been closed by a `<stop>`. Walk along
# the rows with one flag per row: mark the position with the flag, then let its token update the flag
# (`<assistant>` sets it, `<stop>` clears it). So the `<assistant>` token itself is not marked (the flag was
# still off when it was read), the `<stop>` is (the flag was on). The package's `mmcourse.vlm.answer_mask`
# does the same; `mmcourse.vlm.chat_loss` then sets every other label to −100, the index `F.cross_entropy`
# ignores. A stage-2 example, and what the loss sees:

# %%
from mmcourse.vlm import answer_mask as package_mask, batch_chats

ids, mask = batch_chats([(q.question, q.answer) for q in qa[:3]])
full = torch.cat([torch.tensor([chat_prefix(tok)] * 3), torch.full((3, 1), tok.image_id), ids], dim=1)
for row in range(3):
    shown = [f"[{tok.itos[i]}]" if m else tok.itos[i] for i, m in
             zip(full[row].tolist(), package_mask(full, tok.assistant_id, tok.stop_id)[row].tolist()) if i]
    print(" ".join(shown))
print("([...] = trained on; <image> = where the 16 visual tokens go)")

# %% [markdown] slideshow={"slide_type": "slide"}
# ### Stage 1, live
#
# A fresh MLP projector between the frozen tower and the frozen LM, trained for a few seconds on
# captioning: "describe the image ." answered with the scene's description. The tower is frozen, so its
# patch tokens are computed once per image.

# %%
from mmcourse.models import VLM
from mmcourse.data.chat import DESCRIBE
from mmcourse.training import fit
from mmcourse.vlm import set_stage

torch.manual_seed(0)
fresh = VLM(pretrained.load("clip_shapes", device=device), lm, connector="mlp").to(device)
set_stage(fresh, 1)
live = make_shapes(512, seed=6060, objects=(1, 3), split="train", style=("photo", "flat"))
with torch.no_grad():
    live_patches = fresh.vision(live.images.to(device))
live_ids, _ = batch_chats([(DESCRIBE, describe(o)) for o in live.objects])
g = torch.Generator().manual_seed(0)


def live_batches(batch_size=16):
    while True:
        idx = torch.randint(len(live_ids), (batch_size,), generator=g)
        yield live_patches[idx], live_ids[idx].to(device)


start = time.perf_counter()
live_losses = fit(fresh, lambda m, b: m.loss(None, b[1], patches=b[0]), live_batches(), steps=40, lr=3e-3,
                  progress=False)
print(f"40 steps in {time.perf_counter() - start:.1f} s: loss {live_losses[0]:.2f} -> {sum(live_losses[-5:]) / 5:.2f}; "
      f"trainable: {sum(p.numel() for p in fresh.parameters() if p.requires_grad):,} parameters (the projector)")
fig, ax = plt.subplots(figsize=(5, 2.8))
ax.plot(live_losses)
ax.set_xlabel("step")
ax.set_ylabel("loss on the caption tokens")
ax.set_title("stage 1: the projector alone learns to describe")
plt.tight_layout()
plt.show()
print("after 40 steps:", fresh.caption(scene.images[:1].to(device))[0], "| truth:", describe(scene.objects[0]))

# %% [markdown]
# Forty steps teach the projector the shape of a description; the bundled model had hundreds of steps in
# each stage. Its card measured, on fresh images, what each stage bought (and what the same LM answers
# with no image at all):

# %%
ev = card["metrics"]["evaluation"]
kinds = ["all", "count", "color", "shape", "size", "yes/no", "position"]
print(f"{'':22s}" + "".join(f"{k:>10s}" for k in kinds) + f"{'caption':>10s}")
for label, key in (("text only (no image)", "text_only"), ("stage 1 only", "stage1_only"), ("stages 1 + 2", "stages_1_and_2")):
    row = ev[key] if key == "text_only" else ev[key]["vqa"]
    cap = "" if key == "text_only" else f"{ev[key]['caption']['recall']:10.2f}"
    print(f"{label:22s}" + "".join(f"{row[k]:10.2f}" for k in kinds) + cap)
print(f"({ev['images']} fresh images; caption = recall of colours, shapes, sizes and sides; training: "
      f"{card['metrics']['recipe']['stage1_steps']} + {card['metrics']['recipe']['stage2_steps']} steps)")

# %% [markdown] slideshow={"slide_type": "fragment"}
# Read the three rows from the output above. The text-only row is what the language model knows without
# looking: the likeliest answer to each kind of question (it saw questions without a description in its
# pretraining, so it knows the answers' form). Stage 1 trained only captioning: its caption recall says
# how much of the scene the visual tokens carry, but asked a question, the frozen LM, which never saw
# visual tokens next to a question, mostly goes on describing, and a description is never an exact
# answer. Stage 2 trains on the questions themselves, and the LoRA matrices let the LM learn to read its
# new input; the gap between the first and last rows is what the image adds.

# %% [markdown] slideshow={"slide_type": "slide"}
# ## 6 · Flamingo: a Perceiver resampler
#
# LLaVA's token count grows with the image: 576 tokens for a 336-pixel ViT-L/14, more for video, far more
# for several images. Flamingo fixes the number instead. Its **Perceiver resampler** keeps R learned
# vectors, the *latents*, that attend to the visual features; whatever the number of patches or frames,
# R tokens come out. The lecture's pseudocode:
#
# ```python
# x_f = flatten(x_f + time_embeddings)           # [T * S, d] visual features
# for i in range(num_layers):
#     x = x + attention_i(q=x, kv=concat([x_f, x]))  # R latents x: queries; keys and values: features AND latents
#     x = x + ffw_i(x)
# return x
# ```
#
# The keys and values are the visual features **and the latents themselves**, so each latent can also
# read what the other latents hold (Flamingo's authors found it helps slightly).
#
# **Exercise 06.resampler_attention** (3 points). Write one head of that attention:
# `resampler_attention(latents, patches, w_q, w_k, w_v)` with latents `(B, R, d)`, patches `(B, N, d)`
# (N may be 0) and three `(d, d)` projection matrices (a token x projects to `x @ w`); return the latents'
# attention output `(B, R, d)`, scaled dot-product attention as in the transformer.

# %% exercise="06.resampler_attention"
def resampler_attention(latents: torch.Tensor, patches: torch.Tensor, w_q: torch.Tensor, w_k: torch.Tensor,
                        w_v: torch.Tensor) -> torch.Tensor:
    """(B, R, d) latents, (B, N, d) patches, (d, d) weights -> (B, R, d) attention output of the latents."""
    ### BEGIN SOLUTION
    context = torch.cat([patches, latents], dim=1)  # (B, N + R, d): features and latents
    q, k, v = latents @ w_q, context @ w_k, context @ w_v
    weights = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]), dim=-1)  # (B, R, N + R)
    return weights @ v
    ### END SOLUTION


# %% tags=["check"]
check.exercise("06.resampler_attention", resampler_attention)

# %% [markdown]
# **The worked version.** Queries come from the R latents only, so R rows of attention come out; keys and
# values come from the N patches and the R latents side by side, so each row is a softmax over N + R
# entries (over the keys, the last axis, scaled by 1/√d). Nothing in the output's shape depends on N: that
# is the whole trick. With no patches at all, the latents attend to one another and nothing breaks. The
# package's `PerceiverResampler` wraps this in layer norms, several heads, a feed-forward layer and residuals,
# and projects its latents into the LM's width; its output size ignores the number of patches:

# %%
from mmcourse.connectors import PerceiverResampler

torch.manual_seed(0)
resampler = PerceiverResampler(vision_dim=64, lm_dim=96, num_latents=8, dim=32, depth=1)
for n in (1, 16, 64, 400):
    print(f"{n:4d} patch tokens -> {tuple(resampler(torch.randn(2, n, 64)).shape)}")
print(f"{count_parameters(resampler):,} parameters, whatever the image size")

# %% [markdown] slideshow={"slide_type": "slide"}
# ## 7 · Flamingo: a frozen LM that looks through gated cross-attention
#
# Flamingo does not put the visual tokens into the text. It inserts new layers between the frozen LM's
# blocks (**Flamingo's frozen LM and gated cross-attention**): in each, the text tokens attend to the
# visual tokens (cross-attention: queries from the text, keys and values from the image), and the result
# is added through a gate, then a feed-forward layer through a second gate:
#
# $$x \leftarrow x + \tanh(\alpha_{\text{attn}})\cdot \text{attn}(\text{norm}(x), v), \qquad
# x \leftarrow x + \tanh(\alpha_{\text{ff}})\cdot \text{ffw}(x).$$
#
# The gates α start at 0 and tanh(0) = 0: at initialisation the new layers add nothing, and the LM computes
# exactly what it computed alone. Training opens the gates gradually, so the frozen LM's knowledge is never
# disturbed by random new layers, the reason Flamingo could start from a frozen 70-billion-parameter LM.
#
# **Exercise 06.gated_xattn** (2 points). Write `gated_xattn(x, visual, block)`, the forward pass of
# Flamingo's block from its parts: `block.norm` (a layer norm), `block.attn(queries, context)` (the
# cross-attention), `block.ff` (the feed-forward layer, which normalises its own input), and the gates
# `block.attn_gate`, `block.ff_gate` (0-d tensors). `x` is `(B, L, D)` text, `visual` `(B, R, D_v)`.
# At gates 0 the output must be `x` itself.

# %% exercise="06.gated_xattn"
def gated_xattn(x: torch.Tensor, visual: torch.Tensor, block) -> torch.Tensor:
    """(B, L, D) text states, (B, R, D_v) visual tokens, a GatedCrossAttention -> (B, L, D)."""
    ### BEGIN SOLUTION
    x = x + torch.tanh(block.attn_gate) * block.attn(block.norm(x), visual)
    return x + torch.tanh(block.ff_gate) * block.ff(x)
    ### END SOLUTION


# %% tags=["check"]
check.exercise("06.gated_xattn", gated_xattn)

# %% [markdown]
# **The worked version.** Two residual updates, each scaled by the tanh of its own gate: the residual keeps
# the LM's own computation flowing through, and the gate multiplies only what is new. A sigmoid would start
# at one half; a gate on the residual branch *and* the input would erase the LM. The derivative of tanh at
# 0 is 1, so the gates still receive gradient at the start and can open.
#
# The package's `FlamingoLM` puts such a block before the frozen `lm_shapes`'s blocks. At initialisation,
# its logits are the LM's, bit for bit, whatever the image:

# %%
from mmcourse.connectors import FlamingoLM

torch.manual_seed(0)
base_lm = pretrained.load("lm_shapes", device=device)
flamingo = FlamingoLM(base_lm, visual_dim=96).to(device)
chat_ids = full[:2].to(device)
with torch.no_grad():
    same = torch.equal(flamingo(chat_ids, torch.randn(2, 8, 96, device=device)), base_lm(chat_ids))
    for block in flamingo.xattn:
        block.attn_gate.fill_(0.1)
    moved = (flamingo(chat_ids, torch.randn(2, 8, 96, device=device)) - base_lm(chat_ids)).abs().max()
print(f"gates at 0: logits identical to the frozen LM's: {same}")
print(f"attention gates at 0.1: largest change of a logit {moved:.3f}")
print(f"new parameters: {count_parameters(flamingo.xattn):,} in {len(flamingo.xattn)} gated blocks "
      f"(the LM's own: {count_parameters(base_lm):,}, frozen)")

# %% [markdown] slideshow={"slide_type": "slide"}
# ## 8 · BLIP-2: the Q-Former's queries
#
# BLIP-2's adapter, the **Q-Former**, is a small transformer over a set of learned query vectors: 32 of
# them in the paper. In each layer the queries attend to each other (self-attention), then to the image's
# patch features (cross-attention), then pass a feed-forward layer; their outputs, projected into the LM,
# are the visual tokens. The Perceiver resampler and the Q-Former are close cousins (the lecture:
# "similar to Q-Former"): a fixed number of learned vectors pulling what they need from the patches.
# BLIP-2 pretrains the Q-Former with three objectives on image–text pairs (contrastive matching, a
# matching classifier, captioning) before connecting it to the LM; the course trains it with captioning only.
#
# So there are two families of **visual connectors and image tokens**: projectors that keep one token per
# patch (LLaVA; pool the grid to keep fewer), and learned queries that produce a fixed number (Flamingo,
# BLIP-2, Idefics2's Perceiver pooling to 64 tokens).

# %%
from mmcourse.connectors import QFormer

qformer = QFormer(vision_dim=64, lm_dim=96, num_queries=16, dim=32, depth=1)
print(f"Q-Former: {tuple(qformer(patches).shape)} visual tokens from {tuple(patches.shape)} patches, "
      f"{count_parameters(qformer):,} parameters")

# %% [markdown] slideshow={"slide_type": "slide"}
# ## 9 · Which adapter, how many tokens?
#
# `benchmarks/vlm.py` trains every connector with the same short two-stage budget, at roughly equal
# trainable parameters, on the same frozen parts and the same training pool, and scores them on fresh
# images, after stage 1 and after both stages, next to the text-only baseline and the bundled model (its
# table: `benchmarks/results/vlm.md`). The same script pools LLaVA's 16 patch tokens to 4 and 1 and gives
# the resampler 4 latents, to ask Idefics2's question: how many visual tokens are enough?

# %%
bench = measured("vlm")  # the committed results of benchmarks/vlm.py, shipped with the package
print(f"{'connector':40s}{'tokens':>7s}{'trainable':>11s}{'stage 1':>9s}{'both':>7s}{'count':>7s}{'position':>9s}{'ms/answer':>10s}")
print(f"{'text only (no image)':40s}{0:7d}{0:11d}{'':9s}{bench['text_only']['all']:7.2f}"
      f"{bench['text_only']['count']:7.2f}{bench['text_only']['position']:9.2f}")
for row in bench["runs"] + bench["token_runs"]:
    print(f"{row['name']:40s}{row['tokens']:7d}{row['trainable']['connector']:11,d}{row['stage1_only']['vqa']['all']:9.2f}"
          f"{row['both']['vqa']['all']:7.2f}{row['both']['vqa']['count']:7.2f}{row['both']['vqa']['position']:9.2f}"
          f"{1000 * row['seconds_per_answer']:10.1f}")
best = max(bench["runs"], key=lambda r: r["both"]["vqa"]["all"])
print(f"best connector: {best['name']}, {100 * (best['both']['vqa']['all'] - bench['text_only']['all']):+.0f} points "
      f"over the text-only baseline")
print(f"(short runs: {bench['stage1_steps']} + {bench['stage2_steps']} steps each; {bench['questions']} questions on "
      f"{bench['images']} fresh images; the bundled vlm_shapes, trained longer: {bench['bundled']['eval']['vqa']['all']:.2f})")

# %% [markdown] slideshow={"slide_type": "fragment"}
# How to read it (the rows are printed above, or in the benchmark's table): compare each connector with
# the text-only row first (the points above it are what the image adds), then with the others. The
# budget is short and the world small, so differences of a few points between connectors are within
# what another seed would change; the table is a measurement of these toy runs, not a ranking of the
# designs. Idefics2's finding that 64 resampled tokens beat 729 raw ones, and 128 added nothing,
# concerned images far richer than ours; with 16 patches our question is only whether pooling to 4 or 1
# token loses the positions and the count (the last columns).

# %% [markdown] slideshow={"slide_type": "slide"}
# ## 10 · Where it fails
#
# The lectures list what vision-language models still get wrong: counting, left and right, compositions,
# small text. Our toy has the first three. The bundled model on fresh images, by question type, and the
# questions it got wrong:

# %%
from mmcourse.vlm import vqa_accuracy

test = make_shapes(60, seed=60_606, objects=(1, 3), split="train", style="photo")
test_qa = questions(test, seed=1)
flat = [(i, q) for i, per in enumerate(test_qa) for q in per]
answers = vlm.answer(test.images[[i for i, _ in flat]].to(device), [q.question for _, q in flat], max_new_tokens=4)
acc = vqa_accuracy(answers, [q for _, q in flat])
print("accuracy by type: " + ", ".join(f"{k} {v:.2f}" for k, v in acc.items()))
wrong = [(i, q, a) for (i, q), a in zip(flat, answers) if a != q.answer and q.kind in ("count", "position")][:6]
if wrong:
    fig, axes = plt.subplots(1, len(wrong), figsize=(2.1 * len(wrong), 2.6))
    for ax, (i, q, a) in zip(list(axes) if len(wrong) > 1 else [axes], wrong):
        ax.imshow(test.images[i].permute(1, 2, 0), interpolation="nearest")
        ax.set_title(f"{q.question[:26]}\n{q.question[26:]}\ntruth {q.answer}, model {a}", fontsize=6.5)
        ax.axis("off")
    plt.tight_layout()
    plt.show()
else:
    print("no counting or position mistakes on these 60 images")

# %% [markdown]
# Look at the mistakes above, and at the yes/no accuracy printed with them: "is there a green heart?"
# asks for a composition, a colour bound to a shape, and the answer "no" whenever either is missing;
# compare it with the 50 % a coin gets. Counting asks the model to integrate over the whole grid (two objects in one
# 8 × 8 cell, or one object spread over two cells, blur the count); left and right depend on where an
# object's centre falls, which the 4 × 4 grid only knows to a quarter of the image, and objects near the
# border between two thirds are ambiguous even to a person. Real models fail for related reasons: patch
# grids, pooled tokens, and training captions that rarely state counts or sides.

# %% [markdown] slideshow={"slide_type": "slide"}
# ## 11 · The state of the art, in the lectures' numbers
#
# The course model is a few hundred thousand parameters answering questions about coloured shapes. The
# lectures' tables show the same recipes at scale (quoted as the lectures give them, from the LLaVA-NeXT
# and Idefics2 papers, Flamingo's Table 1):
#
# | model | data (pre-training / instructions) | MMMU (val) | MathVista | MMBench-EN | MM-Vet | SEED-IMG |
# | --- | --- | --- | --- | --- | --- | --- |
# | GPT-4V | not public | 56.8 | 49.9 | 75.8 | 67.6 | 71.6 |
# | Qwen-VL-Plus | 1.4 B / 50 M | 45.2 | 43.3 | — | 55.7 | 65.7 |
# | LLaVA-1.5-13B | 558 K / 665 K | 36.4 | 27.6 | 67.8 | 36.3 | 68.2 |
# | LLaVA-NeXT-34B | 558 K / 760 K | 51.1 | 46.5 | 79.3 | 57.4 | 75.9 |
#
# LLaVA's point is the data column: a two-stage recipe on well under two million examples reaches models
# trained on a billion pairs. InternVL aligns a 6-billion-parameter vision encoder with an LLM; Qwen-VL
# feeds a ViT's features to the LLM through a single cross-attention resampler. Flamingo (80 B), with a
# frozen LM and gated cross-attention, reached 56.3 on VQAv2 zero-shot and 63.1 with four examples in
# the prompt. Idefics2's ablations: with frozen backbones, cross-attention (66.7) beat a fully
# autoregressive model (60.3), but with LoRA the fully autoregressive one won (69.5 vs 67.3), and a
# Perceiver pooling to 64 visual tokens (71.7) matched 128 (71.2). The lecture's table labels the first
# column "Data (PT)": the pre-training (stage 1) set, 558 K LLaVA image–caption pairs.

# %% [markdown] slideshow={"slide_type": "slide"}
# ## 12 · Chat with the model
#
# A generated image (move the slider for another), a question you type (phrase it as the shapes world
# does: "how many shapes are there?", "what color is the star?", "what shape is the red object?", "what
# size is the blue heart?", "is there a green circle?", "where is the pink cross?", "is the red circle to
# the left of the blue square?"), and the answer, greedy, with the time it took.

# %%
from mmcourse.widgets.vlm_chat import VLMChat

chat = VLMChat(vlm)
times = sorted(chat.reply(s, "what color is the star?")[1] for s in range(9))
print(f"answer latency, median of 9: {times[4]:.0f} ms (the budget for a widget: 200 ms)")
chat.widget(seed=3, question="how many shapes are there?")

# %% [markdown] slideshow={"slide_type": "slide"}
# ## What to remember
#
# * A vision-language model is perception → adapter → language; the vision encoder and the LM come
#   pretrained and stay frozen ("freeze and focus"); the adapter is a few percent of the parameters.
# * LLaVA projects every patch token (not the pooled embedding) into the LM's input space with a linear
#   map or an MLP and puts them in the text: early fusion, images as a foreign language.
# * LLaVA trains in two stages: the projector alone on captions, then projector and LM on instructions,
#   with the loss on the assistant's answers and their stop token only.
# * Flamingo compresses any number of patches into R latents with a Perceiver resampler (latents attend to
#   the features and to themselves) and lets a frozen LM read them through tanh-gated cross-attention,
#   which is the identity at initialisation: late fusion.
# * BLIP-2's Q-Former does the compressing with learned queries that self-attend and cross-attend.
# * A text-only baseline tells whether a model looks at the image; counting and left/right are where small
#   and large models fail.
#
# ## References
#
# * H. Liu, C. Li, Q. Wu, Y. J. Lee. *Visual instruction tuning (LLaVA).* NeurIPS 2023; H. Liu et al.
#   *Improved baselines with visual instruction tuning (LLaVA-1.5).* CVPR 2024.
# * J.-B. Alayrac et al. *Flamingo: a visual language model for few-shot learning.* NeurIPS 2022.
# * J. Li, D. Li, S. Savarese, S. Hoi. *BLIP-2: bootstrapping language-image pre-training with frozen image
#   encoders and large language models.* ICML 2023.
# * H. Laurençon, L. Tronchon, M. Cord, V. Sanh. *What matters when building vision-language models?
#   (Idefics2).* 2024.
# * Z. Chen et al. *InternVL.* CVPR 2024; J. Bai et al. *Qwen-VL.* 2023.
# * E. J. Hu et al. *LoRA: low-rank adaptation of large language models.* ICLR 2022.
