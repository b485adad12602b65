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
# # 03 · Zero-shot classification
#
# **In this notebook you will**
#
# 1. turn the course CLIP into a classifier **without training anything**, in the lecture's five steps:
#    encode the image, write a prompt per class, encode the prompts, take cosines, pick the largest;
# 2. measure how much the **wording of the prompt** matters, win accuracy back by **ensembling** templates,
#    and choose templates with a few labelled images by **forward selection**;
# 3. weigh zero-shot against **k-shot linear probes** on the same frozen features, as a curve over *k*;
# 4. recognise colour–shape pairs that **no training caption ever mentioned**, and compare class-name
#    prompts with attribute prompts (notebook 01's idea, now in words);
# 5. put zero-shot CLIP next to a **supervised** classifier under a distribution shift (photos → sketches),
#    as the CLIP paper's robustness table does, and compute **effective robustness**;
# 6. filter a noisy "web crawl" with CLIP scores, as LAION built its data sets;
# 7. play with prompts in a widget, see what happens to words the model has never read, and where CLIP is
#    reused and where it falls short.
#
# About 60 minutes. Everything runs on a laptop CPU in under a minute; the two models it uses ship with
# the course (`mmcourse train clip_shapes` and `mmcourse train supervised_shapes` rebuild them).

# %% tags=["setup"]
import sys

if "google.colab" in sys.modules:  # on Colab: install the course package, pinned to this notebook's version
    import subprocess

    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "mmcourse @ git+https://github.com/mmcourse/mmcourse@v0.1.0"],
        check=True,
    )

import time
import warnings

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F

import mmcourse
from mmcourse import check, zeroshot
from mmcourse.data import COLORS, HELDOUT_COMBOS, SHAPES, make_shapes

device = mmcourse.start(seed=0)

# %% [markdown] slideshow={"slide_type": "slide"}
# ## 1 · A classifier written in words
#
# Notebook 02 trained CLIP to tell which caption belongs to which image. The lecture's second and third
# panels reuse that skill for ordinary classification:
#
# 1. **contrastive pre-training** (done, notebook 02);
# 2. **create a dataset classifier from label text**: put every class name into a sentence, "a photo of a
#    {class}", and embed the sentences with the text encoder. The *C* normalised text embeddings are the
#    rows of a linear classifier, exactly like the weight matrix of a trained last layer;
# 3. **use it for zero-shot prediction**: embed the image and pick the class whose sentence is closest.
#
# No image of the task, no label, no gradient step: "pre-training is so powerful, no training needed".
# A new task is a new list of words. In the lecture's step-by-step version, for an image and *N* classes:
#
# $$\mathbf z_{\text{img}} = \text{ImageEncoder}(\text{image}),\qquad
# \mathbf z^{(c)}_{\text{txt}} = \text{TextEncoder}(\text{prompt}_c),\qquad
# s_c = \frac{\mathbf z_{\text{img}}^\top \mathbf z^{(c)}_{\text{txt}}}{\lVert \mathbf z_{\text{img}}\rVert\,\lVert \mathbf z^{(c)}_{\text{txt}}\rVert},\qquad
# \hat y = \arg\max_c s_c .$$
#
# Our classes are the 64 colour–shape pairs of the shapes world, eight of which (the held-out pairs) the
# course CLIP never saw in a caption.

# %%
from mmcourse import pretrained

clip = pretrained.load("clip_shapes", device=device)
classes = zeroshot.color_shape_classes()  # 64 (colour, shape) pairs
classnames = [f"{c} {s}" for c, s in classes]
print(f"{len(classnames)} classes, e.g. {classnames[:3]}; held out of CLIP's training: "
      + ", ".join(f"{c} {s}" for c, s in HELDOUT_COMBOS))

# %% [markdown] slideshow={"slide_type": "slide"}
# ## 2 · Zero-shot in five steps
#
# Six fresh images in four styles, classified from scratch. The probabilities are a softmax over the 64
# classes of the cosines times the model's learned logit scale 1/τ, as in training.

# %%
from mmcourse.plots import image_grid, show_images

examples = make_shapes(6, seed=3031, split="all", style=("photo", "sketch", "flat", "cartoon"))
with torch.no_grad():
    z_img = clip.encode_image(examples.images.to(device)).cpu()  # ① encode the images: (6, 64)
    prompts = [f"a photo of a {name}" for name in classnames]  # ② one prompt per class: 64 sentences
    z_txt = clip.encode_text(prompts).cpu()  # ③ encode the prompts: (64, 64)
    scale = clip.scale().cpu()  # 1/τ, learned in notebook 02's training
s = F.normalize(z_img, dim=1) @ F.normalize(z_txt, dim=1).T  # ④ cosine similarities: (6, 64)
pred = s.argmax(dim=1)  # ⑤ the most similar class
probs = (scale * s).softmax(dim=1)
print("predicted:", ", ".join(classnames[j] for j in pred.tolist()))

fig, axes = plt.subplots(2, 6, figsize=(13, 4.2), gridspec_kw={"height_ratios": [1, 1.1]})
for i in range(6):
    axes[0, i].imshow(image_grid(examples.images[i]), interpolation="nearest")
    axes[0, i].set_title(f"{examples.styles[i]}: {examples.colors[i]} {examples.shapes[i]}", fontsize=8)
    axes[0, i].axis("off")
    top = probs[i].topk(5)
    right = f"{examples.colors[i]} {examples.shapes[i]}"
    colors = ["tab:green" if classnames[j] == right else "tab:gray" for j in top.indices.tolist()]
    axes[1, i].barh(range(5), top.values.numpy(), color=colors)
    axes[1, i].set_yticks(range(5), [classnames[j] for j in top.indices.tolist()], fontsize=7)
    axes[1, i].invert_yaxis()
    axes[1, i].set_xlim(0, 1)
    axes[1, i].set_xlabel("probability", fontsize=7)
fig.suptitle("zero-shot: top 5 of 64 classes per image (green: the right one)", fontsize=10)
plt.tight_layout()
plt.show()

# %% [markdown]
# The package does the same in two calls: `zeroshot.build_classifier(model, classnames, templates)` (steps
# ②–③, the `(C, D)` classifier; its tests compare it with `open_clip`'s `build_zero_shot_classifier` on this
# very model) and `zeroshot.probabilities(model, images, classifier)` (steps ①, ④, ⑤). It agrees with the
# five steps above:

# %%
classifier = zeroshot.build_classifier(clip, classnames, ["a photo of a {}"])  # (64, 64), rows normalised
package_probs = zeroshot.probabilities(clip, examples.images, classifier)
print(f"largest difference to the five steps: {(package_probs - probs).abs().max():.2e}")
assert torch.allclose(package_probs, probs, atol=1e-5), "the package and the five steps disagree"

# %% [markdown] slideshow={"slide_type": "slide"}
# ## 3 · The wording of the prompt
#
# CLIP's authors noticed that the bare class name is a poor prompt: captions on the web are sentences,
# and a word alone is ambiguous. "A photo of a {}" did better, and task-specific context better still. The
# lecture's table (from the CoOp paper) shows how much a few words move the accuracy:
#
# | data set | prompt | accuracy |
# | --- | --- | --- |
# | Caltech101 | a [CLASS]. | 82.68 |
# | | a photo of [CLASS]. | 80.81 |
# | | a photo of a [CLASS]. | 86.29 |
# | Flowers102 | a photo of a [CLASS]. | 60.86 |
# | | a flower photo of a [CLASS]. | 65.81 |
# | | a photo of a [CLASS], a type of flower. | 66.14 |
# | EuroSAT | a photo of a [CLASS]. | 24.17 |
# | | a satellite photo of [CLASS]. | 37.46 |
# | | a centered satellite photo of [CLASS]. | 37.56 |
#
# Our version: the course's 16 templates (`zeroshot.TEMPLATES`), each as the only template of a 64-way
# classifier, on four evaluation sets of 1 000 fresh images. Clean photos and sketches are what the model
# trained on. The other two are shifts it never saw: **grainy photos** (Gaussian pixel noise, σ = 0.05, a
# cheap camera) and **small sketches** (drawn at 16 × 16 pixels and scaled up, a low-resolution scan).
# The last four templates come from CLIP's own ImageNet list; their words ("blurry", "itap", "video game",
# "tattoo") are in our vocabulary but never occurred in a training caption, so their embeddings were never
# trained.

# %%
def grainy_version(images, generator):
    """Gaussian pixel noise, sigma = 0.05: a cheap camera."""
    return (images + 0.05 * torch.randn(images.shape, generator=generator)).clamp(0, 1)


def small_version(images):
    """Drawn at 16 x 16 pixels and scaled back up: a low-resolution scan."""
    return F.interpolate(F.interpolate(images, size=16, mode="area"), size=32, mode="bilinear", align_corners=False)


def labels_of(data):
    return torch.tensor([classes.index(p) for p in data.combos])


g = torch.Generator().manual_seed(3032)
photos = make_shapes(1000, seed=3033, split="all", style="photo")
sketches = make_shapes(1000, seed=3034, split="all", style="sketch")
eval_sets = {  # name -> (images, labels)
    "photos": (photos.images, labels_of(photos)),
    "sketches": (sketches.images, labels_of(sketches)),
    "grainy photos": (grainy_version(photos.images, g), labels_of(photos)),
    "small sketches": (small_version(sketches.images), labels_of(sketches)),
}
start = time.perf_counter()
features = {name: zeroshot.encode_images(clip, images) for name, (images, _) in eval_sets.items()}
table = {name: zeroshot.template_accuracies(clip, features[name], labels, classnames, zeroshot.TEMPLATES)
         for name, (_, labels) in eval_sets.items()}
print(f"{len(zeroshot.TEMPLATES)} templates x {len(eval_sets)} sets in {time.perf_counter() - start:.1f} s\n")
print(f"{'template':30s}" + "".join(f"{name:>16s}" for name in eval_sets))
for t in zeroshot.TEMPLATES:
    print(f"{t:30s}" + "".join(f"{100 * table[name][t]:16.1f}" for name in eval_sets))
single = {name: sum(table[name][t] for t in zeroshot.TEMPLATES) / len(zeroshot.TEMPLATES) for name in eval_sets}
print("-" * 94)
print(f"{'average single template':30s}" + "".join(f"{100 * single[name]:16.1f}" for name in eval_sets))
print(f"{'ensemble of all 16':30s}" + "".join(f"{100 * table[name]['ensemble']:16.1f}" for name in eval_sets))
print(f"{'ensemble - average (points)':30s}"
      + "".join(f"{100 * (table[name]['ensemble'] - single[name]):+16.1f}" for name in eval_sets))
spread = {name: [table[name][t] for t in zeroshot.TEMPLATES] for name in eval_sets}
print(f"{'best - worst template (points)':30s}" + "".join(f"{100 * (max(v) - min(v)):16.1f}" for v in spread.values()))
for name, values in spread.items():
    ranked = sorted(zip(values, zeroshot.TEMPLATES))
    print(f"{name}: worst '{ranked[0][1]}' {100 * ranked[0][0]:.1f}, best '{ranked[-1][1]}' {100 * ranked[-1][0]:.1f}")

# %% [markdown] slideshow={"slide_type": "fragment"}
# Read the table column by column, then the summary rows under it. On clean photos and sketches every
# template is close to perfect: the model learned this world well, and the prompt hardly matters. Under the
# two shifts the image embeddings are less certain, and then the wording counts: see how far apart the best
# and the worst template lie. A template that names another kind of picture than the one shown ("an icon",
# flat clip-art, is neither a grainy photo nor a pencil line) is a candidate for the bottom of the list, and
# the four templates with untrained words cost very different amounts: untrained tokens add noise, sometimes
# little, sometimes a lot. Prompt engineering is a search over such choices, done on labelled data you may
# not have; the next section is the cheaper alternative, and the one after it what labelled data buys.

# %% [markdown] slideshow={"slide_type": "slide"}
# ## 4 · Prompt ensembling
#
# Instead of picking one template, use them all: embed every class under every template, L2-normalise each
# embedding, **average over the templates**, and normalise again. The classifier is still one `(C, D)`
# matrix, so prediction costs exactly as much as with one template. Each template's embedding carries the
# class plus the template's own quirks; averaging keeps what the templates agree on, the class. (CLIP
# ensembled 80 templates on ImageNet and gained about 3.5 points over the single default prompt.)
#
# Normalising *before* averaging matters: text embeddings have different lengths, and a plain mean would
# let the longest few templates decide.

# %%
with torch.no_grad():
    raw = clip.encode_text(zeroshot.prompts(classnames, zeroshot.TEMPLATES)).cpu()
raw = raw.view(len(classnames), len(zeroshot.TEMPLATES), -1)  # (C, T, D): class-major, as prompts() lists them
lengths = raw.norm(dim=-1)  # (64 classes, 16 templates)
print("mean length of each template's embeddings:", " ".join(f"{v:.1f}" for v in lengths.mean(0).tolist()))

# %% [markdown]
# `zeroshot.build_classifier(clip, classnames, TEMPLATES)` is this ensemble (`zeroshot.ensemble` does the
# normalise–average–normalise on a `(C, T, D)` tensor). Below, the same thing by hand from the raw
# embeddings, and the gain over the average single template on each evaluation set.

# %%
by_hand = F.normalize(F.normalize(raw, dim=-1).mean(dim=1), dim=-1)
ensembled = zeroshot.build_classifier(clip, classnames, zeroshot.TEMPLATES)
assert torch.allclose(by_hand, ensembled, atol=1e-6), "by hand and the package disagree"

fig, ax = plt.subplots(figsize=(7.5, 3.4))
for k, name in enumerate(eval_sets):
    singles = [100 * table[name][t] for t in zeroshot.TEMPLATES]
    ax.scatter([k] * len(singles), singles, color="tab:gray", s=14, label="one template" if k == 0 else None)
    ax.scatter([k], [100 * single[name]], marker="_", s=600, color="black",
               label="average of single templates" if k == 0 else None)
    ax.scatter([k], [100 * table[name]["ensemble"]], marker="*", s=160, color="tab:red", zorder=3,
               label="ensemble of all 16" if k == 0 else None)
ax.set_xticks(range(len(eval_sets)), list(eval_sets))
ax.set_ylabel("64-way accuracy (%)")
ax.set_title("one template at a time vs the ensemble")
ax.legend(fontsize=8, loc="lower left")
plt.tight_layout()
plt.show()
for name in eval_sets:
    print(f"{name:15s} ensemble {100 * table[name]['ensemble']:5.1f} %: {100 * (table[name]['ensemble'] - single[name]):+.1f} "
          f"points over the average template, {100 * (table[name]['ensemble'] - max(spread[name])):+.1f} over the best one")

# %% [markdown] slideshow={"slide_type": "fragment"}
# The lines under the figure give the honest summary of prompt ensembling. Where the model is unsure (the
# shifted sets), the ensemble beats the *average* template and comes close to the best single one, without
# knowing in advance which one that is (the best template differs from set to set). It need not beat the
# best template, and on the clean sets there is nothing to win. Cheap insurance against a bad choice of
# words, most useful exactly where the model is unsure.

# %% [markdown] slideshow={"slide_type": "slide"}
# ### Choosing templates with labelled images
#
# Ensembling needs no labels. With some labelled images you can choose *which* templates to ensemble.
# After the 80 ImageNet templates were fixed for the CLIP paper, its authors ran **sequential forward
# selection** over them (their prompt-engineering notebook, which the lecture links): start with no
# template; add the one that makes the ensemble most accurate on labelled images; then the one that helps
# most together with the first; and so on, until no template helps. The search stopped after 7 templates,
# which did a bit better than all 80.
#
# Our labelled images: 2 048 fresh photos and 2 048 fresh sketches, labelled, and their grainy and small
# versions (the same shifts as section 3, new images). This section and the next spend them in two ways.

# %%
labelled_photos = make_shapes(2048, seed=3091, split="all", style="photo")
labelled_sketches = make_shapes(2048, seed=3092, split="all", style="sketch")
g_labelled = torch.Generator().manual_seed(3093)
labelled = {  # name -> (features (N, 64), labels (N,)), the kinds of images of section 3's evaluation sets
    "photos": (zeroshot.encode_images(clip, labelled_photos.images), labels_of(labelled_photos)),
    "grainy photos": (zeroshot.encode_images(clip, grainy_version(labelled_photos.images, g_labelled)), labels_of(labelled_photos)),
    "small sketches": (zeroshot.encode_images(clip, small_version(labelled_sketches.images)), labels_of(labelled_sketches)),
}
fewest = min(int(torch.bincount(y, minlength=len(classes)).min()) for _, y in labelled.values())
print(f"labelled sets: {', '.join(labelled)}; {len(labelled_photos)} images each, at least {fewest} of every class")

# %% [markdown]
# **Exercise 03.select_templates** (3 points). Write `forward_select(template_features, image_features,
# labels)`. `template_features` `(C, T, D)` holds the text embeddings of *C* classes under *T* templates (like
# `raw` above); `image_features` `(N, D)` and `labels` `(N,)` are labelled images. Start with no template. At
# each step, add the template not chosen yet whose addition gives the ensemble of the chosen templates
# (section 4's normalise–average–normalise) the most correct predictions on the labelled images; on a tie,
# the lowest template index wins. Stop as soon as the best addition does not raise the number of correct
# predictions. Return the chosen template indices in the order they were chosen. `zeroshot.ensemble` and
# `zeroshot.logits_from_features` are there to use.

# %% exercise="03.select_templates"
def forward_select(template_features: torch.Tensor, image_features: torch.Tensor, labels: torch.Tensor) -> list[int]:
    """(C, T, D) text embeddings, (N, D) labelled image features, (N,) labels -> chosen template indices, in order."""
    ### BEGIN SOLUTION
    chosen, best = [], -1
    while len(chosen) < template_features.shape[1]:
        correct = {}
        for t in range(template_features.shape[1]):
            if t not in chosen:
                classifier = zeroshot.ensemble(template_features[:, chosen + [t]])
                predicted = zeroshot.logits_from_features(image_features, classifier).argmax(dim=1)
                correct[t] = int((predicted == labels).sum())
        pick = max(correct, key=lambda t: (correct[t], -t))  # most correct, then the lowest index
        if correct[pick] <= best:
            break
        chosen.append(pick)
        best = correct[pick]
    return chosen
    ### END SOLUTION


# %% tags=["check"]
check.exercise("03.select_templates", forward_select)

# %% [markdown]
# **The worked version.** Two loops: one over the steps, and at each step one over the candidates, each
# scored by the number of correct predictions of the ensemble it would make; a candidate must strictly
# improve on the best count so far, or the search stops. `zeroshot.select_templates` is exactly that. Chosen
# on the labelled grainy photos and small sketches together, judged on section 3's evaluation sets (which it
# never saw):

# %%
val_x = torch.cat([labelled[name][0] for name in ("grainy photos", "small sketches")])
val_y = torch.cat([labelled[name][1] for name in ("grainy photos", "small sketches")])
start = time.perf_counter()
chosen = zeroshot.select_templates(raw, val_x, val_y)
print(f"forward selection over {len(zeroshot.TEMPLATES)} templates in {time.perf_counter() - start:.2f} s; chosen, in order:",
      ", ".join(f"'{zeroshot.TEMPLATES[t]}'" for t in chosen))
selected = zeroshot.ensemble(raw[:, chosen])
print(f"\n{'64-way accuracy (%)':16s}{'average template':>18s}{'all 16':>10s}{f'the {len(chosen)} chosen':>14s}")
for name, (_, labels) in eval_sets.items():
    acc_chosen = zeroshot.accuracy(zeroshot.logits_from_features(features[name], selected), labels)
    print(f"{name:16s}{100 * single[name]:18.1f}{100 * table[name]['ensemble']:10.1f}{100 * acc_chosen:14.1f}")

# %% [markdown] slideshow={"slide_type": "fragment"}
# Compare the last two columns: a few templates chosen on labelled images of the same kinds can do as well
# as all sixteen or better, as CLIP's authors found with 7 of their 80. The selection is only as good as the
# labelled set: it was made on grainy photos and small sketches, and the rows of clean photos and sketches
# show whether it carries over. (CLIP's 7, in the order chosen: "itap of a {}.", "a bad photo of the {}.",
# "a origami {}.", "a photo of the large {}.", "a {} in a video game.", "art of the {}.", "a photo of the
# small {}.": two scales, a hard view and "abstract" renditions, from the list of 80 the lecture shows in part.)

# %% [markdown] slideshow={"slide_type": "slide"}
# ## 5 · Zero-shot against a few labelled images
#
# Labelled images can also train a classifier directly. The CLIP paper's yardstick is the **linear probe**:
# freeze the image encoder and fit a logistic regression on its features. With *k* labelled images per class
# (*k*-shot), how large must *k* be before the probe beats the zero-shot classifier, which saw no labelled
# image at all? The lecture quotes the paper's answers: zero-shot CLIP **matches the average of a 4-shot
# linear probe trained on the same features** (the paper's Figure 6, over 20 data sets), and it **beats a
# fully supervised linear probe on ResNet-50 features on 16 of 27 data sets** (Figure 5); a few labelled
# images improve few-shot CLIP further.
#
# A linear probe is a weight matrix $W$ `(C, D)` and a bias $\mathbf b$ `(C,)` that minimise
#
# $$J(W, \mathbf b) = \frac1N \sum_{i=1}^{N} \operatorname{CE}\big(W\mathbf x_i + \mathbf b,\ y_i\big) + \lambda\,\lVert W\rVert^2 ,$$
#
# the mean cross-entropy over the *N* labelled features plus an L2 penalty on the weights (not on the bias),
# which keeps a 1-shot probe from growing without bound. *J* is convex, so every good optimiser ends at the
# same minimum.
#
# **Exercise 03.probe** (4 points). Write `train_linear_probe(features, labels, num_classes, weight_decay)`:
# `features` `(N, D)`, `labels` `(N,)` in `[0, num_classes)` with every class present, `weight_decay` the λ
# above. Return `(weight, bias)` of shapes `(C, D)` and `(C,)` at the minimum of *J*. The check evaluates *J*
# at your answer and compares it with the minimum (it must be within 10⁻⁴ of it), so any optimiser that gets
# there passes; a few seconds of training at most.

# %% exercise="03.probe"
def train_linear_probe(features: torch.Tensor, labels: torch.Tensor, num_classes: int,
                       weight_decay: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, D) features, (N,) labels -> (C, D) weight and (C,) bias minimising mean CE + weight_decay * ||W||^2."""
    ### BEGIN SOLUTION
    x = features.double()
    weight = torch.zeros(num_classes, x.shape[1], dtype=torch.float64, requires_grad=True)
    bias = torch.zeros(num_classes, dtype=torch.float64, requires_grad=True)
    optimiser = torch.optim.LBFGS([weight, bias], max_iter=500, line_search_fn="strong_wolfe")

    def closure():
        optimiser.zero_grad()
        loss = F.cross_entropy(x @ weight.T + bias, labels) + weight_decay * weight.pow(2).sum()
        loss.backward()
        return loss

    optimiser.step(closure)
    return weight.detach(), bias.detach()
    ### END SOLUTION


# %% tags=["check"]
check.exercise("03.probe", train_linear_probe)

# %% [markdown]
# **The worked version.** Start from zeros and let L-BFGS, a quasi-Newton method made for smooth problems
# like this one, minimise *J* in double precision (the CLIP paper fitted its probes with scikit-learn's
# L-BFGS logistic regression): `zeroshot.linear_probe(features, labels, C, weight_decay=λ)`, tested against
# scikit-learn; `zeroshot.probe_objective` is *J*.
#
# The curve: for each *k*, draw *k* labelled images of every class (two draws, averaged), fit a probe, and
# test it on section 3's evaluation set of the same kind. The zero-shot classifier (all 16 templates) is a
# flat line: it needs no *k*. A third line is the **class-mean** classifier: each class's row is the
# normalised mean of its *k* image features. It has the zero-shot classifier's form, one unit vector per
# class, with image features where the text embeddings were.

# %%
def k_shot(labels, k, seed):
    """Indices of k labelled examples of each class, drawn at random."""
    g_shot = torch.Generator().manual_seed(seed)
    picks = [(labels == c).nonzero().flatten() for c in range(len(classes))]
    return torch.cat([idx[torch.randperm(len(idx), generator=g_shot)[:k]] for idx in picks])


shots = (1, 2, 4, 8, 16)
probe_acc = {name: [] for name in labelled}
mean_acc = {name: [] for name in labelled}
start = time.perf_counter()
for k in shots:
    draws = {(name, draw): k_shot(y, k, draw) for name, (_, y) in labelled.items() for draw in (0, 1)}
    # the six probes of one k have the same size, so zeroshot.linear_probe fits them in one run
    w, b = zeroshot.linear_probe(torch.stack([labelled[name][0][idx] for (name, _), idx in draws.items()]),
                                 torch.stack([labelled[name][1][idx] for (name, _), idx in draws.items()]),
                                 len(classes), weight_decay=1e-3)
    for name, (x, y) in labelled.items():
        test_x, test_y = features[name], eval_sets[name][1]
        accs, means = [], []
        for i, ((of, _), idx) in enumerate(draws.items()):
            if of == name:
                accs.append(zeroshot.accuracy(test_x.double() @ w[i].T + b[i], test_y))
                class_means = torch.zeros(len(classes), x.shape[1]).index_add_(0, y[idx], x[idx])
                means.append(zeroshot.accuracy(zeroshot.logits_from_features(test_x, class_means), test_y))
        probe_acc[name].append(sum(accs) / len(accs))
        mean_acc[name].append(sum(means) / len(means))
print(f"{len(shots) * len(draws)} probes fitted in {time.perf_counter() - start:.1f} s\n")

print(f"{'64-way accuracy (%)':30s}{'zero-shot':>10s}" + "".join(f"{f'{k}-shot':>9s}" for k in shots))
for name in labelled:
    zs = table[name]["ensemble"]
    print(f"{name + ', linear probe':30s}{100 * zs:10.1f}" + "".join(f"{100 * a:9.1f}" for a in probe_acc[name]))
    print(f"{name + ', class means':30s}{'':10s}" + "".join(f"{100 * a:9.1f}" for a in mean_acc[name]))
for name in labelled:
    zs = table[name]["ensemble"]
    k_match = next((k for k, a in zip(shots, probe_acc[name]) if a >= zs), None)
    print(f"on {name}, zero-shot is worth " + (f"about {k_match} labelled images per class (the first k whose probe "
          "matches it)" if k_match else f"more than {shots[-1]} labelled images per class (no probe up to k = {shots[-1]} matches it)"))

fig, axes = plt.subplots(1, len(labelled), figsize=(12, 3.3), sharey=False)
for ax, name in zip(axes, labelled):
    ax.plot(shots, [100 * a for a in probe_acc[name]], "o-", color="tab:blue", label="linear probe (k-shot)")
    ax.plot(shots, [100 * a for a in mean_acc[name]], "s--", color="tab:green", label="class means (k-shot)")
    ax.axhline(100 * table[name]["ensemble"], color="tab:red", label="zero-shot (no labels)")
    ax.set_xscale("log", base=2)
    ax.set_xticks(shots, [str(k) for k in shots])
    ax.set_xlabel("labelled images per class (k)")
    ax.set_ylabel("64-way accuracy (%)")
    ax.set_title(name, fontsize=10)
axes[0].legend(fontsize=7)
fig.suptitle("zero-shot vs k-shot classifiers on the same frozen CLIP features", fontsize=10)
plt.tight_layout()
plt.show()

# %% [markdown] slideshow={"slide_type": "fragment"}
# Read the lines under the table beside the paper's "4 shots on average". Where zero-shot is unsure (the
# shifted sets), a few labelled images per class are what it is worth; where it is near perfect (clean
# photos), the probe needs many more. The paper's average hides the same spread: over its data sets,
# zero-shot CLIP was worth from less than one to 184 labelled examples per class, with a median of 5.4
# (its Figure 7). The class means have no training to overfit and do well at small *k*; whether the probe
# overtakes them by *k* = 16 depends on the set (compare the rows). And only the zero-shot classifier works
# for a class that has no labelled image at all: a new class is a new line of text.

# %% [markdown] slideshow={"slide_type": "slide"}
# ## 6 · Compositional zero-shot: pairs never seen together
#
# Eight colour–shape pairs never occurred in the course CLIP's training captions ("red triangle", "orange
# star", ...). Each colour and each shape did, in other pairs. The text encoder composes "red" and
# "triangle" into an embedding for a combination it never read, and the image encoder maps red triangles
# near it. A supervised classifier of the 56 seen pairs (section 8) has no output for them at all.

# %%
sets = {}  # (pairs, style) -> images, each embedded once and reused below
for split, pairs in (("train", "seen"), ("heldout", "held-out")):
    for style in ("photo", "sketch"):
        sets[pairs, style] = make_shapes(800, seed=3041 if split == "train" else 3042, split=split, style=style)
set_features = {key: zeroshot.encode_images(clip, d.images) for key, d in sets.items()}
set_truth = {key: torch.tensor([classes.index(p) for p in d.combos]) for key, d in sets.items()}
print(f"{'64-way zero-shot, ensemble of 16 templates':44s}{'photo':>8s}{'sketch':>8s}")
for pairs, label in (("seen", "seen pairs"), ("held-out", "held-out pairs (never in a caption)")):
    accs = [zeroshot.accuracy(zeroshot.logits_from_features(set_features[pairs, st], ensembled), set_truth[pairs, st])
            for st in ("photo", "sketch")]
    print(f"{label:44s}" + "".join(f"{a:8.3f}" for a in accs))

held = sets["held-out", "photo"]
one_each = [held.combos.index(pair) for pair in HELDOUT_COMBOS]
held_probs = zeroshot.probabilities(clip, held.images[one_each], ensembled)
show_images(held.images[one_each], [f"{classnames[p.argmax()]}\np = {p.max():.2f}" for p in held_probs], size=1.5,
            title="held-out pairs: the zero-shot prediction and its probability", fontsize=8)

# %% [markdown] slideshow={"slide_type": "slide"}
# ## 7 · Attribute prompts vs class-name prompts
#
# Notebook 01 recognised unseen pairs the classical way: predict each attribute separately, then pick the
# class whose attribute signature fits. CLIP can do the same in words: classify the colour with eight
# prompts "a {colour} shape", the shape with eight prompts "a {shape}", and combine. Or it can read the
# class name whole, "a red triangle". Which is better, and how do both compare with notebook 01's
# supervised attribute model? A third option is to *describe* a class instead of naming it ("a shape with
# three corners"), as people do for classes without a short name.

# %%
from mmcourse.attributes import class_signatures, predict_by_signature

attr_model = pretrained.load("attributes_shapes", device=device)
signatures = class_signatures(classes)
color_cls = zeroshot.build_classifier(clip, list(COLORS), ["a {} shape"])
shape_cls = zeroshot.build_classifier(clip, list(SHAPES), ["a {}"])
name_cls = zeroshot.build_classifier(clip, classnames, ["a {}"])
descriptions = {"circle": "a round shape", "square": "a shape with four corners", "triangle": "a shape with three corners",
                "diamond": "a pointed shape with four sides", "star": "a shape with five points",
                "cross": "a symmetric shape with straight edges", "heart": "a curved shape with a pointed bottom",
                "crescent": "a curved shape with two points"}  # every word is in the vocabulary
described_cls = zeroshot.build_classifier(clip, [descriptions[s] for s in SHAPES], ["{}"])
color_of = torch.tensor([COLORS.index(c) for c, _ in classes])
shape_of = torch.tensor([SHAPES.index(s) for _, s in classes])

names_row, attr_row = "CLIP, class names 'a {colour} {shape}'", "CLIP, attribute prompts (colour x shape)"
nb01_row, described_row = "notebook 01's attribute model (supervised)", "CLIP, shape from descriptions (8-way)"
rows = {names_row: [], attr_row: [], nb01_row: [], described_row: []}
for key, d in sets.items():
    feats, truth = set_features[key], set_truth[key]
    rows[names_row].append(zeroshot.accuracy(zeroshot.logits_from_features(feats, name_cls), truth))
    c_pred = zeroshot.logits_from_features(feats, color_cls).argmax(1)  # the best colour prompt
    s_pred = zeroshot.logits_from_features(feats, shape_cls).argmax(1)  # the best shape prompt
    rows[attr_row].append(((c_pred == color_of[truth]) & (s_pred == shape_of[truth])).float().mean().item())
    with torch.no_grad():
        attr_probs = attr_model.attribute_probs(attr_model(d.images.to(device))).cpu()
    rows[nb01_row].append(zeroshot.accuracy(predict_by_signature(attr_probs, signatures), truth))
    rows[described_row].append(zeroshot.accuracy(zeroshot.logits_from_features(feats, described_cls), shape_of[truth]))
print(f"{'':44s}{'seen photo':>12s}{'seen sketch':>12s}{'held photo':>12s}{'held sketch':>12s}")
for name, accs in rows.items():
    print(f"{name:44s}" + "".join(f"{a:12.3f}" for a in accs))

# %% [markdown] slideshow={"slide_type": "fragment"}
# Within CLIP, the whole class name beats the attribute prompts everywhere, most clearly on held-out
# sketches. The text encoder composes "red" and "triangle" well enough that splitting the decision gains
# nothing, and it loses something: the shape-only prompts ("a triangle") are sentences the model never
# read, since every training caption names a colour (and no caption ever said "shape"). Notebook 01's
# supervised attribute model is the best of all on sketches and the worst on photos; it needed a colour
# and a shape label for every training image, CLIP only captions. Descriptions fail, at or below the
# 8-way chance of 0.125, although every word is in the vocabulary: "corners" or "points" never occurred
# in a training caption, so their embeddings were never trained. A web-scale CLIP has read such phrases
# millions of times, which is why describing a class helps there; a model only knows the language of its
# training data.

# %% [markdown] slideshow={"slide_type": "slide"}
# ## 8 · Robustness under distribution shift
#
# The lecture's table compares a ResNet-101 trained on ImageNet with zero-shot CLIP. Both score 76.2 % on
# ImageNet itself; on shifted versions of the same classes the supervised model collapses and CLIP much
# less:
#
# | data set | ImageNet ResNet-101 | zero-shot CLIP | Δ score |
# | --- | --- | --- | --- |
# | ImageNet | 76.2 | 76.2 | 0 |
# | ImageNetV2 | 64.3 | 70.1 | +5.8 |
# | ImageNet-R | 37.7 | 88.9 | +51.2 |
# | ObjectNet | 32.6 | 72.3 | +39.7 |
# | ImageNet Sketch | 25.2 | 60.2 | +35.0 |
# | ImageNet-A | 2.7 | 77.1 | +74.4 |
#
# Our version of the ImageNet → ImageNet-Sketch row. The supervised model, `supervised_shapes`, is a small
# CNN trained with labels on **photos only** of the 56 seen pairs, on fresh images at every step (its card,
# printed below, records how long). We compare it, on the *same scenes* drawn as photos and as sketches, with
# zero-shot CLIP over the same 56 classes, and with a **linear probe** (section 5's, `zeroshot.linear_probe`)
# on frozen CLIP image features, trained on 2 000 labelled photos. Grainy photos are a third test set.

# %%
supervised = pretrained.load("supervised_shapes", device=device)
sup_card = pretrained.card("supervised_shapes")
print(f"supervised_shapes: {sup_card['metrics']['steps']} steps of {sup_card['metrics']['batch_size']} fresh photos, "
      f"{sup_card['train']['seconds']:.0f} s on {sup_card['train']['machine']}")
seen_classes = supervised.classes  # the 56 seen pairs, in the supervised model's output order
scene_photo = make_shapes(1000, seed=3051, split="train", style="photo")
scene_sketch = make_shapes(1000, seed=3051, split="train", style="sketch")  # same objects, same places
assert scene_photo.combos == scene_sketch.combos
shift_sets = {"photo": scene_photo.images, "sketch": scene_sketch.images, "grainy photo": grainy_version(scene_photo.images, g)}
truth = supervised.labels(scene_photo.combos)

# linear probe: multinomial logistic regression on normalised CLIP features of 2 000 training photos
probe_data = make_shapes(2000, seed=3052, split="train", style="photo")
probe_x, probe_y = zeroshot.encode_images(clip, probe_data.images), supervised.labels(probe_data.combos)
probe_w, probe_b = zeroshot.linear_probe(probe_x, probe_y, len(seen_classes), weight_decay=1e-4)

seen_cls = zeroshot.build_classifier(clip, [f"{c} {s}" for c, s in seen_classes], zeroshot.TEMPLATES)
results = {"supervised CNN (photos)": {}, "zero-shot CLIP": {}, "linear probe on CLIP (photos)": {}}
for name, images in shift_sets.items():
    clip_features = zeroshot.encode_images(clip, images)
    results["supervised CNN (photos)"][name] = supervised.accuracy(images.to(device), scene_photo.combos)
    results["zero-shot CLIP"][name] = zeroshot.accuracy(zeroshot.logits_from_features(clip_features, seen_cls), truth)
    results["linear probe on CLIP (photos)"][name] = zeroshot.accuracy(clip_features.double() @ probe_w.T + probe_b, truth)

print(f"{'56-way accuracy (%)':32s}{'photo':>8s}{'sketch':>8s}{'drop':>8s}{'kept':>8s}{'grainy':>8s}{'drop':>8s}")
for name, r in results.items():
    print(f"{name:32s}{100 * r['photo']:8.1f}{100 * r['sketch']:8.1f}{100 * (r['sketch'] - r['photo']):+8.1f}"
          f"{100 * r['sketch'] / r['photo']:7.0f}%{100 * r['grainy photo']:8.1f}{100 * (r['grainy photo'] - r['photo']):+8.1f}")
print("Δ score, zero-shot CLIP - supervised CNN (points): " + ", ".join(
    f"{k} {100 * (results['zero-shot CLIP'][k] - results['supervised CNN (photos)'][k]):+.1f}" for k in shift_sets))
kept = results["zero-shot CLIP"]["sketch"] / results["zero-shot CLIP"]["photo"]
assert kept >= 0.8, f"zero-shot CLIP keeps only {kept:.0%} of its photo accuracy on sketches"

# %% [markdown] slideshow={"slide_type": "fragment"}
# The pattern of the lecture's table, at toy scale: on photos the supervised CNN and zero-shot CLIP are
# about equally good; the "kept" column says how much of that each keeps on sketches of the very same
# scenes: the supervised model little, zero-shot CLIP nearly all. The linear probe, trained on photos only,
# keeps it too: it inherits features that already ignore the style.
#
# Why is CLIP robust here? Not because zero-shot is magic: the course CLIP saw sketches (with captions)
# during pre-training, the supervised CNN never did. Fang et al. (2022) traced the real CLIP's robustness
# to the diversity of its training data in the same way. The grainy columns show the limit: neither model
# saw noise in training, and both lose accuracy on it (the "drop" after "grainy"): the supervised CNN nearly
# everything, CLIP much less, but still a clear loss to noise a person barely notices.

# %% [markdown] slideshow={"slide_type": "slide"}
# ### Effective robustness
#
# A model that is better in distribution is usually better under shift too, so "it dropped less" is only
# meaningful at equal in-distribution accuracy. Taori et al. (2020) made this precise. Take a family of
# baseline models, plot their shifted accuracy against their original accuracy on **logit axes**
# (logit(*p*) = log(*p* / (1 − *p*))), where such points lie close to a line, and fit that line:
#
# $$\operatorname{logit}(\text{acc}_{\text{shift}}) \approx a \cdot \operatorname{logit}(\text{acc}_{\text{orig}}) + b .$$
#
# A model's **effective robustness** is its shifted accuracy minus what the line predicts at its own
# original accuracy, $\text{acc}_{\text{shift}} - \sigma\big(a \cdot \operatorname{logit}(\text{acc}_{\text{orig}}) + b\big)$.
# Our baselines are the eight snapshots `supervised_shapes` kept during training, from barely trained to
# finished.

# %%
baselines = [(supervised.accuracy(scene_photo.images.to(device), scene_photo.combos, k),
              supervised.accuracy(scene_sketch.images.to(device), scene_photo.combos, k))
             for k in range(len(supervised.snapshot_steps))]
base_id = torch.tensor([b[0] for b in baselines])
base_ood = torch.tensor([b[1] for b in baselines])
for step, (a_id, a_ood) in zip(supervised.snapshot_steps, baselines):
    print(f"supervised snapshot after {step:4d} steps: photo {a_id:.3f}  sketch {a_ood:.3f}")

# %% [markdown]
# **Exercise 03.effective_robustness** (3 points). Write `effective_robustness(baseline_id, baseline_ood,
# model_id, model_ood)`: fit the line above by least squares through the baselines' `(K,)` accuracies (in
# logit units), and return the model's effective robustness as a fraction (a number, not percent).

# %% exercise="03.effective_robustness"
def effective_robustness(baseline_id: torch.Tensor, baseline_ood: torch.Tensor, model_id: float, model_ood: float) -> float:
    """Baselines' (K,) accuracies in and out of distribution, a model's two accuracies -> model_ood minus the trend."""
    ### BEGIN SOLUTION
    x = torch.logit(torch.as_tensor(baseline_id, dtype=torch.float64))
    y = torch.logit(torch.as_tensor(baseline_ood, dtype=torch.float64))
    slope = ((x - x.mean()) * (y - y.mean())).sum() / ((x - x.mean()) ** 2).sum()
    intercept = y.mean() - slope * x.mean()
    predicted = torch.sigmoid(slope * torch.logit(torch.tensor(model_id, dtype=torch.float64)) + intercept)
    return model_ood - predicted.item()
    ### END SOLUTION


# %% tags=["check"]
check.exercise("03.effective_robustness", effective_robustness)

# %% [markdown]
# The package's `mmcourse.robustness.effective_robustness` (used below) computes the same, and clips
# accuracies to [10⁻⁴, 1 − 10⁻⁴] so that a perfect score does not become an infinite logit.

# %%
from mmcourse import robustness

slope, intercept = robustness.robustness_fit(base_id, base_ood)
print(f"baseline trend: logit(sketch) = {slope:.2f} * logit(photo) {intercept:+.2f}")
for name, r in results.items():
    er = robustness.effective_robustness(base_id, base_ood, r["photo"], r["sketch"])
    print(f"{name:32s} photo {r['photo']:.3f}  sketch {r['sketch']:.3f}  "
          f"trend predicts {robustness.predicted_ood(base_id, base_ood, r['photo']):.3f}  effective robustness {er:+.3f}")

def shown(p):  # logit axis position; accuracies above 0.998 are drawn at the edge (the logit of 1 is infinite)
    return robustness.logit(torch.as_tensor(p).clamp(0.03, 0.998))


grid = torch.linspace(0.03, 0.998, 200)
fig, ax = plt.subplots(figsize=(5.2, 4.2))
ax.plot(shown(grid), shown(grid), ls=":", color="gray", label="y = x: no drop at all")
ax.plot(shown(grid), slope * shown(grid) + intercept, color="tab:blue", label="baseline trend (fit)")
ax.scatter(shown(base_id), shown(base_ood), color="tab:blue", s=20, label="supervised snapshots")
for (name, r), marker in zip(results.items(), ("s", "*", "D")):
    ax.scatter([shown(r["photo"])], [shown(r["sketch"])], marker=marker, s=90, zorder=3, alpha=0.8, label=name)
ticks = torch.tensor([0.1, 0.3, 0.5, 0.7, 0.9, 0.97, 0.99, 0.998])
ax.set_xticks(shown(ticks), [f"{t:g}" for t in ticks.tolist()], fontsize=7)
ax.set_yticks(shown(ticks), [f"{t:g}" for t in ticks.tolist()], fontsize=7)
ax.set_xlabel("accuracy on photos (logit scale)")
ax.set_ylabel("accuracy on sketches (logit scale)")
ax.set_title("effective robustness: distance above the trend", fontsize=10)
ax.legend(fontsize=7)
plt.tight_layout()
plt.show()

# %% [markdown] slideshow={"slide_type": "notes"}
# Instructor: the snapshots all lie near one line far below y = x: training longer on photos buys photo
# accuracy and almost no sketch accuracy. The CLIP points sit near y = x. Ask the room what the supervised
# model would need to move up (sketches in its training data), and what that says about where CLIP's
# robustness comes from. `mmcourse train supervised_shapes` rebuilds the baseline in about two minutes.

# %% [markdown] slideshow={"slide_type": "slide"}
# ## 9 · CLIP filtering, as LAION did it
#
# LAION-400M and LAION-5B were built from Common Crawl: billions of images with their HTML alt-text. Much
# alt-text has nothing to do with its image ("IMG_2041.jpg", "click here", a caption of another picture),
# so LAION scored every pair with a CLIP model and **kept only pairs whose image–text cosine similarity was
# above a threshold** (0.28 with OpenAI's ViT-B/32 for LAION-5B's English part; 0.3 for LAION-400M). The
# lecture calls it "CLIP filtering: use a CLIP model to filter out poor quality examples".
#
# A small crawl of our own: 2 000 captioned images, of which 30 % get a corrupted caption, in three kinds
# (`mmcourse.filtering.corrupt_captions`): **swapped** (another image's caption), **wrong word** (one colour
# or shape word changed: a near miss) and **boilerplate** (alt-text that describes nothing). Because we made
# the corruption, we know the truth and can measure the filter.

# %%
from mmcourse import filtering

crawl = make_shapes(2000, seed=3061, split="all", style=("photo", "sketch", "flat", "cartoon"))
captions, kind = filtering.corrupt_captions(crawl.captions, crawl.combos, share=0.3, seed=3062)
clean = torch.tensor([k == "clean" for k in kind])
for k in ("swapped", "wrong word", "boilerplate"):
    i = kind.index(k)
    print(f"{k:12s} '{crawl.captions[i]}' -> '{captions[i]}'")
scores = filtering.clip_scores(clip, crawl.images, captions)  # (2000,) cosine of each image with its caption

# the threshold: chosen on 200 pairs someone checked by hand, then applied to the other 1 800
checked, rest = torch.arange(200), torch.arange(200, 2000)
threshold = filtering.best_threshold(scores[checked], clean[checked])
ours = filtering.precision_recall(scores[rest] >= threshold, clean[rest])
laion = filtering.precision_recall(scores[rest] >= 0.28, clean[rest])
print(f"\nmedian CLIP score of the clean pairs: {scores[clean].median():.2f}; threshold chosen on the checked sample: {threshold:.3f}")
for name, r, t in (("our threshold", ours, threshold), ("LAION's 0.28", laion, 0.28)):
    removed = {k: (scores[rest][[kind[i] == k for i in rest.tolist()]] < t).float().mean().item()
               for k in ("swapped", "wrong word", "boilerplate")}
    print(f"{name:14s} keeps {r['kept']:.1%} of the crawl: precision {r['precision']:.3f} (kept pairs that are clean), "
          f"recall {r['recall']:.3f} (clean pairs kept); removes " + ", ".join(f"{v:.0%} of {k}" for k, v in removed.items()))

fig, ax = plt.subplots(figsize=(7.5, 3.2))
bins = torch.linspace(-0.8, 1.0, 61)
for k, color in (("clean", "tab:green"), ("swapped", "tab:red"), ("wrong word", "tab:orange"), ("boilerplate", "tab:purple")):
    ax.hist(scores[[x == k for x in kind]].numpy(), bins=bins.numpy(), alpha=0.6, color=color, label=k)
ax.axvline(threshold, color="black", ls="--", label=f"our threshold {threshold:.2f}")
ax.axvline(0.28, color="gray", ls=":", label="LAION's 0.28")
ax.set_xlabel("cosine similarity of image and caption (CLIP score)")
ax.set_yscale("log")
ax.set_ylabel("pairs (log scale)")
ax.set_title("a crawl of 2 000 pairs, 30 % corrupted")
ax.legend(fontsize=7)
plt.tight_layout()
plt.show()

# %% [markdown] slideshow={"slide_type": "fragment"}
# Why is our threshold so much higher than LAION's 0.28? A cosine threshold only means something for the
# model that produced the cosines. Ours lives in a tiny world: 64-dimensional embeddings, a few hundred
# words, and captions that describe *everything* in the image, so a matching pair sits at a high cosine
# (see the median printed above). A web-scale model spreads millions of concepts over its space, and a real alt-text mentions only
# part of what an image shows, so even good pairs land around 0.3 for ViT-B/32. LAION picked its number by
# looking at pairs above and below candidate thresholds, which is what choosing on a checked sample does
# here. At 0.28 our model would keep too much; the near misses are the hardest kind for any threshold,
# because a wrong colour word still leaves most of the caption right.

# %% [markdown] slideshow={"slide_type": "slide"}
# ## 10 · Words the model has never read
#
# The course tokenizer knows a fixed vocabulary. A word outside it is not an error: it becomes the token
# `<unk>`, and `tokenizer.unknown_words(text)` says which words were lost (see `mmcourse.data.tokenizer`). So
# "a vermilion square" is encoded as "a <unk> square": the model sees a square of no particular colour.
# `zeroshot.build_classifier` warns when a prompt loses words.

# %%
tokenizer = clip.text.tokenizer
for text in ("a photo of a red square", "a photo of a vermilion square"):
    ids = tokenizer(text)[0]
    tokens = tokenizer.decode(ids, skip_special=False).replace(" <pad>", "")
    print(f"{text!r:36s} -> {tokens}   unknown: {tokenizer.unknown_words(text)}")

with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    odd = zeroshot.build_classifier(clip, ["vermilion square", "red circle", "blue square"], ["a photo of a {}"])
print("warning:", caught[0].message if caught else "none")
square = make_shapes(200, seed=3071, split="all", style="photo", combos=[("red", "square")])
share = zeroshot.probabilities(clip, square.images, odd).mean(0)
print("red squares among 'vermilion square', 'red circle', 'blue square':  mean probabilities "
      + ", ".join(f"{p:.2f}" for p in share.tolist()))
known = zeroshot.build_classifier(clip, ["crimson square", "red circle", "blue square"], ["a photo of a {}"])
print("red squares among 'crimson square', 'red circle', 'blue square':    mean probabilities "
      + ", ".join(f"{p:.2f}" for p in zeroshot.probabilities(clip, square.images, known).mean(0).tolist()))

# %% [markdown]
# Without its colour word, "vermilion square" is just "a photo of a <unk> square", and the red squares go
# to "red circle" instead: for this model the colour outweighs the shape. "Crimson", a synonym it read in
# training captions, is understood and wins. Nothing fails loudly on the way, which is why the package
# warns. The playground below shows the unknown words of whatever you type under its chart.

# %% [markdown] slideshow={"slide_type": "slide"}
# ## 11 · Play: a prompt playground
#
# Type a template (with `{}` where the class goes) and a list of classes or descriptions, separated by
# commas; the bars show the zero-shot probabilities for the chosen image. Things to try: the template
# "a {}" vs "a sketch of a {}" on the sketch; the colour in the template ("a blue {}") on an image of
# another colour; class names the model knows ("wedge", "disc") and descriptions it does not ("a shape
# with three corners"); a word outside the vocabulary.

# %%
import io

from mmcourse.widgets.prompts import PromptPlayground

play = make_shapes(6, seed=3081, split="all", style=("photo", "sketch", "flat", "cartoon"))
playground = PromptPlayground(clip, play.images, list(SHAPES), template="a {}",
                              titles=[f"{st}: {c} {s}" for st, c, s in zip(play.styles, play.colors, play.shapes)])
playground.render()  # the first call draws the figure; later ones only update it
start = time.perf_counter()
playground.render("a sketch of a {}", "circle, square, triangle, diamond, star, cross, heart, crescent", 1).savefig(io.BytesIO())
print(f"one interaction: {1000 * (time.perf_counter() - start):.0f} ms (encode 8 prompts, update, draw to PNG)")
playground.widget()

# %% [markdown] slideshow={"slide_type": "notes"}
# Instructor: start with the sketch (image 1) and the template "a {}", then switch to "a photo of a {}"
# and "a sketch of a {}". Replace "triangle" by "wedge" (a synonym it learned) and by "a shape with three
# corners" (words it never read in a caption). Type "vermilion" somewhere to show the unknown-word note.

# %% [markdown] slideshow={"slide_type": "slide"}
# ## 12 · Where CLIP is reused, and where it falls short
#
# The lecture closes its CLIP part with two lists. **Reuse**: CLIP's joint embedding space (or its recipe)
# became a part of many later models, often used zero-shot:
#
# * **DALL-E 2** (Ramesh et al., 2022): a text-to-image model built on CLIP latents. A prior turns a
#   caption's CLIP text embedding into a CLIP image embedding, and a diffusion decoder draws an image from it
#   (notebook 08 conditions a small diffusion model on the course CLIP's text tower).
# * **CLIP4Clip** (Luo et al., 2022): video–text retrieval. CLIP's image encoder embeds the frames, the frame
#   embeddings are pooled (or passed through a small temporal model) into one video embedding, compared with
#   the text embedding by cosine.
# * **GroupViT** (Xu et al., 2022): semantic segmentation that emerges from image–text contrastive training
#   alone, with no pixel labels. The image transformer groups patches into regions, and each region is named
#   zero-shot by its most similar class prompt, exactly as in section 2.
#
# **Limitations**, as the lecture lists them:
#
# * CLIP only scores how well a text matches an image: it cannot generate language, which makes it less
#   suitable for open-ended tasks such as captioning or answering questions (notebook 06 connects a vision
#   encoder to a language model for that);
# * standard classification needs a fixed prompt mechanism: class names in a template, whose wording matters
#   (section 3);
# * it reads short contexts (77 tokens for CLIP's text encoder) and ignores hierarchies among concepts;
# * fine-tuning can actually decrease performance: fine-tuned on one data set, CLIP tends to lose part of its
#   robustness to distribution shift (Wortsman et al., 2022).
#
# The course's toy shows two of them at work: the template sensitivity of section 3 and, in section 10, a
# text encoder that silently drops what it cannot read.

# %% [markdown] slideshow={"slide_type": "slide"}
# ## What to remember
#
# * A zero-shot classifier is a matrix of normalised text embeddings, one row per class, built from label
#   text in a template; classification is a cosine, a scale and an argmax. No training.
# * The wording of the prompt matters most where the model is unsure. Ensembling templates (normalise,
#   average, normalise) costs nothing at test time and beats the average single template; with labelled
#   images, forward selection picks a few templates that do as well or better.
# * Zero-shot is worth some labelled images per class: a linear probe on the same frozen features needs a
#   few shots to catch up (4 on average in the CLIP paper), more where zero-shot is already good; only
#   zero-shot handles a class with no labelled image at all.
# * Text composes: pairs never seen together are recognised from their words, and the whole class name
#   works better than splitting it into attributes, as long as the words were in the training captions.
# * Robustness is relative: compare shifted accuracy at equal original accuracy (effective robustness).
#   Zero-shot CLIP beats the supervised model on sketches because its training data had sketches; on
#   noise, which neither saw, both suffer.
# * CLIP scores filter noisy image–text data; the threshold belongs to the model that made the scores.
# * Unknown words become `<unk>`: the prompt silently loses them, so check what the tokenizer kept.
# * CLIP is a scorer, not a generator; it is reused inside generators (DALL-E 2), video retrieval
#   (CLIP4Clip) and segmentation (GroupViT).
#
# ## References
#
# * A. Radford et al. *Learning transferable visual models from natural language supervision (CLIP).* ICML 2021.
#   Zero-shot transfer, prompt engineering and ensembling, zero-shot vs linear probes (Figures 5 and 6), the
#   robustness table. OpenAI's notebook *Prompt Engineering for ImageNet* (github.com/openai/CLIP): the
#   forward selection of 7 of the 80 templates.
# * K. Zhou, J. Yang, C. C. Loy, Z. Liu. *Learning to prompt for vision-language models (CoOp).* IJCV 2022. The
#   prompt table of section 3.
# * R. Taori et al. *Measuring robustness to natural distribution shifts in image classification.* NeurIPS 2020.
#   Effective robustness.
# * H. Wang, S. Ge, E. P. Xing, Z. C. Lipton. *Learning robust global representations by penalizing local
#   predictive power (ImageNet-Sketch).* NeurIPS 2019.
# * A. Fang et al. *Data determines distributional robustness in contrastive language image pre-training (CLIP).* ICML 2022.
# * C. Schuhmann et al. *LAION-400M* (2021) and *LAION-5B: an open large-scale dataset for training next
#   generation image-text models.* NeurIPS 2022 Datasets and Benchmarks. CLIP filtering.
# * C. H. Lampert, H. Nickisch, S. Harmeling. *Learning to detect unseen object classes by between-class
#   attribute transfer.* CVPR 2009. Attribute-based zero-shot (notebook 01).
# * G. Ilharco et al. *OpenCLIP.* 2021 (`build_zero_shot_classifier`, the oracle of our tests).
# * A. Ramesh et al. *Hierarchical text-conditional image generation with CLIP latents (DALL-E 2).* 2022.
#   H. Luo et al. *CLIP4Clip: an empirical study of CLIP for end to end video clip retrieval.* Neurocomputing 2022.
#   J. Xu et al. *GroupViT: semantic segmentation emerges from text supervision.* CVPR 2022.
# * M. Wortsman et al. *Robust fine-tuning of zero-shot models.* CVPR 2022.
