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
# # 01 · Joint embeddings
#
# **In this notebook you will**
#
# 1. see why independent class labels limit a classifier, and recognise a class *never seen in training* from its attributes;
# 2. see that two separately trained encoders live in incompatible spaces;
# 3. tell a **joint** representation from a **coordinated** one, and coordinate two views with linear **CCA**;
# 4. compute **cosine similarities** and measure cross-modal retrieval with **Recall@K**, both ways;
# 5. do vector arithmetic across modalities: the image of a blue square − "blue" + "red".
#
# About 45 minutes. Everything runs on a laptop CPU in under a minute; the one model that takes
# minutes to train ships with the course (`mmcourse train attributes_shapes` rebuilds it).

# %% tags=["setup"]
import sys
import textwrap

if "google.colab" in sys.modules:  # on Colab: install the course package, pinned to this notebook's version
    import subprocess

    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "mmcourse @ git+https://github.com/mmcourse/mmcourse@v0.1.0"],
        check=True,
    )

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F

import mmcourse
from mmcourse import check
from mmcourse.data import COLORS, HELDOUT_COMBOS, SHAPES, make_shapes

device = mmcourse.start(seed=0)

# %% [markdown] slideshow={"slide_type": "slide"}
# ## 1 · Labels are limiting
#
# A supervised classifier maps an image to one of *C* labels, and treats those labels as
# independent: confusing a robin with a crow costs as much as confusing it with a truck, and a
# class that had no training images can never be predicted. The lecture's birds make the point:
#
# | bird | head | belly |
# | --- | --- | --- |
# | American robin | white | white |
# | crow | black | black |
# | painted bunting (male) | blue | red |
#
# Described by **attributes**, a bird we never saw is just a new combination of things we *have*
# seen. That is the original zero-shot learning recipe:
#
# 1. instead of a class label, predict a set of shared attributes for each image;
# 2. write down each class's attributes once (its *signature*);
# 3. at test time, predict all attributes and pick the class whose signature is most similar.
#
# Our world for the whole course is a world of coloured shapes. Its classes are colour–shape pairs
# ("a red triangle"); its attributes are a colour and a shape. Eight pairs are **held out**: the
# training split never shows them, so no label-based classifier can ever output them.

# %%
from mmcourse.plots import image_grid, show_images

train = make_shapes(2000, seed=1, split="train")
heldout = make_shapes(500, seed=2, split="heldout")
print(f"{len(COLORS)} colours x {len(SHAPES)} shapes = {len(COLORS) * len(SHAPES)} classes, {len(HELDOUT_COMBOS)} held out:")
print(", ".join(f"{c} {s}" for c, s in HELDOUT_COMBOS))
show_images(train.images[:8], [textwrap.fill(c, 16) for c in train.captions[:8]],
            title="training images and their captions (32 x 32 pixels)")
show_images(heldout.images[:8], [f"{c} {s}" for c, s in heldout.combos[:8]], title="held-out pairs: never in training")

# %% [markdown] slideshow={"slide_type": "notes"}
# Instructor: ask the room which classifier could ever answer "red triangle" here. The images are
# generated on the fly (≈ 20 000 per second), so every run shows new ones; the seeds keep them fixed.

# %% [markdown] slideshow={"slide_type": "slide"}
# ### An attribute predictor
#
# `mmcourse.models.AttributePredictor` has two heads, one per attribute group: an 8-way
# colour classifier and an 8-way shape classifier. Each head gets only its own evidence: the colour
# branch looks at one pixel at a time, and the shape branch at a grey, contrast-normalised image.
# (A single shared network would learn the training set's correlations: red things are never
# triangles there, so "red" would vote against "triangle", exactly on the pairs we care about.)
#
# Training it well takes a couple of minutes on a CPU, so here is a short live run to see the loss
# fall, and then we load the course's pretrained copy.

# %%
from mmcourse.models import AttributePredictor
from mmcourse.training import batches_of, fit

torch.manual_seed(0)
live = AttributePredictor()
live_data = make_shapes(3000, seed=3, split="train", style=("photo", "flat"))
losses = fit(
    live,
    lambda model, batch: model.loss(model(batch[0]), batch[1], batch[2]),
    batches_of((live_data.images, live_data.color_ids, live_data.shape_ids), batch_size=64),
    steps=120,
    lr=3e-3,
    desc="live training",
)
plt.figure(figsize=(5, 2.8))
plt.plot(losses)
plt.xlabel("step")
plt.ylabel("colour + shape cross-entropy (nats)")
plt.title("120 steps of attribute training on the CPU")
plt.show()

# %%
attr_model = mmcourse.pretrained.load("attributes_shapes")
card = mmcourse.pretrained.card("attributes_shapes")
print(f"pretrained: {card['metrics']['steps']} steps in {card['train']['seconds']:.0f} s; its measured accuracies:")
for key in ("seen_photo", "heldout_photo"):
    print(f"  {key:14s} colour {card['metrics'][key]['color']:.3f}  shape {card['metrics'][key]['shape']:.3f}")

# %% [markdown] slideshow={"slide_type": "notes"}
# Instructor: the live run above takes about 5 s on a laptop CPU (under a second on a GPU); the
# pretrained checkpoint stands in for the full 6 000-step run (about 5 minutes on 2 CPU cores). Rebuild it
# before class with `mmcourse train attributes_shapes` if you change the recipe.

# %% [markdown] slideshow={"slide_type": "slide"}
# ### Comparing attribute vectors: cosine similarity
#
# To pick "the class with the most similar signature" we need a similarity between vectors. The
# course uses the **cosine similarity** throughout (it is also CLIP's):
#
# $$\cos(\mathbf a, \mathbf b) = \frac{\mathbf a^\top \mathbf b}{\lVert\mathbf a\rVert\,\lVert\mathbf b\rVert}$$
#
# It ignores length and compares direction only: two vectors pointing the same way score 1, orthogonal
# ones 0, opposite ones −1. For a set of *N* vectors against a set of *M*, normalise every row to unit
# length; then one matrix product gives all *N × M* similarities.
#
# **Exercise 01.cosine** (2 points). Write `cosine_similarity_matrix(a, b)` for `a` of shape `(N, D)`
# and `b` of shape `(M, D)`, returning the `(N, M)` matrix of cosine similarities.

# %% exercise="01.cosine"
def cosine_similarity_matrix(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(N, D), (M, D) -> (N, M) cosine similarities."""
    ### BEGIN SOLUTION
    a = a / a.norm(dim=1, keepdim=True)
    b = b / b.norm(dim=1, keepdim=True)
    return a @ b.T
    ### END SOLUTION


# %% tags=["check"]
check.exercise("01.cosine", cosine_similarity_matrix)

# %% [markdown]
# **Exercise 01.attributes** (3 points). Write `predict_class(attribute_scores, signatures)`: given
# predicted attribute scores `(N, A)` and the class signatures `(C, A)`, return the index `(N,)` of
# the class whose signature is most cosine-similar to each row. The tested version of your
# function lives in the package as `mmcourse.attributes.predict_by_signature`; the rest of the notebook uses that.

# %% exercise="01.attributes"
def predict_class(attribute_scores: torch.Tensor, signatures: torch.Tensor) -> torch.Tensor:
    """(N, A) scores, (C, A) signatures -> (N,) long: the most similar class for each row."""
    ### BEGIN SOLUTION
    return cosine_similarity_matrix(attribute_scores, signatures).argmax(dim=1)
    ### END SOLUTION


# %% tags=["check"]
check.exercise("01.attributes", predict_class)

# %% [markdown] slideshow={"slide_type": "slide"}
# ### Recognising classes never seen
#
# All 64 colour–shape classes get a signature: a one-hot colour next to a one-hot shape. We compare
# with a **label classifier**: a linear layer on the same image features, trained on the 56 seen
# classes. It cannot even name a held-out class.

# %%
from mmcourse.attributes import ATTRIBUTE_NAMES, class_signatures, predict_by_signature
from mmcourse.data.shapes import combos_for

classes = combos_for("all")  # all 64 (colour, shape) pairs
signatures = class_signatures(classes)  # (64, 16)
seen_classes = combos_for("train")
test_seen = make_shapes(1000, seed=4, split="train")
test_held = make_shapes(1000, seed=5, split="heldout")

with torch.no_grad():
    feats_train = attr_model.features(train.images)
    feats_seen, feats_held = attr_model.features(test_seen.images), attr_model.features(test_held.images)
    probs_seen = attr_model.attribute_probs(attr_model(test_seen.images))
    probs_held = attr_model.attribute_probs(attr_model(test_held.images))


def class_index(data, names):
    return torch.tensor([names.index(p) for p in data.combos])


# the label classifier: logistic regression over the 56 seen classes, on the same features
torch.manual_seed(0)
label_clf = torch.nn.Linear(feats_train.shape[1], len(seen_classes))
opt = torch.optim.Adam(label_clf.parameters(), lr=0.05)
y_train = class_index(train, seen_classes)
for _ in range(150):
    opt.zero_grad()
    F.cross_entropy(label_clf(feats_train), y_train).backward()
    opt.step()
with torch.no_grad():
    label_seen = [seen_classes[i] for i in label_clf(feats_seen).argmax(1)]
    label_held = [seen_classes[i] for i in label_clf(feats_held).argmax(1)]

attr_seen = [classes[i] for i in predict_by_signature(probs_seen, signatures)]
attr_held = [classes[i] for i in predict_by_signature(probs_held, signatures)]


def accuracy(pred, data):
    return sum(p == t for p, t in zip(pred, data.combos)) / len(data)


print(f"{'':22s}{'seen pairs':>12s}{'held-out pairs':>16s}")
print(f"{'label classifier':22s}{accuracy(label_seen, test_seen):12.3f}{accuracy(label_held, test_held):16.3f}")
print(f"{'attributes (zero-shot)':22s}{accuracy(attr_seen, test_seen):12.3f}{accuracy(attr_held, test_held):16.3f}")
print(f"chance: {1 / 64:.3f} (64 classes)")

# %% [markdown] slideshow={"slide_type": "fragment"}
# The label classifier is as good as the attribute model on seen pairs and helpless on the rest: it has
# no output for a class it never saw. The attribute model composes a new class from known parts.

# %%
fig, axes = plt.subplots(1, 4, figsize=(11, 2.6), gridspec_kw={"width_ratios": [1, 3, 1, 3]})
for col, i in enumerate([0, 1]):
    ax_img, ax_bar = axes[2 * col], axes[2 * col + 1]
    ax_img.imshow(image_grid(test_held.images[i]), interpolation="nearest")
    ax_img.set_title(f"truth: {' '.join(test_held.combos[i])}", fontsize=8)
    ax_img.axis("off")
    ax_bar.bar(range(len(ATTRIBUTE_NAMES)), probs_held[i].numpy(), color=["tab:red"] * 8 + ["tab:gray"] * 8)
    ax_bar.set_xticks(range(len(ATTRIBUTE_NAMES)), [a.split(":")[1] for a in ATTRIBUTE_NAMES], rotation=90, fontsize=7)
    ax_bar.set_ylabel("probability")
    ax_bar.set_title(f"predicted attributes -> {' '.join(attr_held[i])}", fontsize=9)
plt.suptitle("attribute-based zero-shot on held-out pairs")
plt.tight_layout()
plt.show()

# %% [markdown] slideshow={"slide_type": "slide"}
# ## 2 · Two encoders, two spaces
#
# Attributes must be designed by hand. Captions are free: people write them anyway. Can we put
# images and captions in one space, so that a caption lands next to the images it describes?
#
# We already have an image encoder (the attribute model's 128-dimensional features) and a text encoder
# is easy to write: a **bag of words**, counting each vocabulary word (CLIP's authors found bag-of-words
# text encoders surprisingly strong). But the two live in different spaces: different sizes, different
# axes. Even squeezed to the same size, their similarities mean nothing.

# %%
from mmcourse.models import bag_of_words
from mmcourse.retrieval import cosine_similarity, recall_at_k

gallery = make_shapes(1000, seed=6, split="all")  # every pair, seen and held out
with torch.no_grad():
    img_feats = attr_model.features(gallery.images).double()  # (1000, 128)
txt_feats = bag_of_words(gallery.captions).double()  # (1000, vocabulary size)
print("image features", tuple(img_feats.shape), "| text features", tuple(txt_feats.shape))

# make the sizes agree with a random projection of the text features: dimensions agree, meaning does not
g = torch.Generator().manual_seed(0)
random_proj = torch.randn(txt_feats.shape[1], img_feats.shape[1], generator=g, dtype=torch.float64)
sim_unaligned = cosine_similarity(img_feats, txt_feats @ random_proj)

fig, ax = plt.subplots(figsize=(4, 3.4))
im = ax.imshow(sim_unaligned[:12, :12].numpy(), cmap="viridis")
ax.set_xlabel("caption j")
ax.set_ylabel("image i")
ax.set_title("cosine(image i, caption j), unaligned\n(matching pairs are on the diagonal)")
fig.colorbar(im, ax=ax)
plt.tight_layout()
plt.show()
print(f"image -> caption Recall@1 unaligned: {recall_at_k(sim_unaligned, 1):.3f} (chance {1 / len(gallery):.3f})")

# %% [markdown] slideshow={"slide_type": "slide"}
# ## 3 · Joint or coordinated?
#
# Baltrušaitis et al. sort multimodal representations into two families:
#
# * a **joint** representation projects all modalities together into *one* vector,
#   $\mathbf x = f(\mathbf x_\text{image}, \mathbf x_\text{text})$ — a bimodal autoencoder, or a
#   network on the concatenated features. It needs both inputs at once.
# * a **coordinated** representation keeps one encoder per modality,
#   $f(\mathbf x_\text{image}) \sim g(\mathbf x_\text{text})$, and constrains the two outputs to be
#   similar for matching inputs: CCA (maximal correlation) or CLIP (contrastive similarity).
#   ("Joint embedding space", as CLIP's papers say, is in this taxonomy a coordinated one.)
#
# The difference shows in retrieval. A joint model can score a pair (does this caption match this
# image?) but has to run once per pair; a coordinated model embeds each side once, and a single
# matrix product scores all pairs. Let us build a small joint model: an MLP on the concatenated
# features, trained to tell matching from shuffled pairs.

# %%
import time

torch.manual_seed(0)
txt_train = bag_of_words(train.captions)
img_train = feats_train
joint = torch.nn.Sequential(torch.nn.Linear(img_train.shape[1] + txt_train.shape[1], 64), torch.nn.ReLU(), torch.nn.Linear(64, 1))
opt = torch.optim.Adam(joint.parameters(), lr=3e-3)
for step in range(300):
    idx = torch.randint(len(train), (128,))
    wrong = torch.randint(len(train), (128,))  # a random caption: almost always a mismatch
    x = torch.cat([torch.cat([img_train[idx], txt_train[idx]], 1), torch.cat([img_train[idx], txt_train[wrong]], 1)])
    same = torch.tensor([train.combos[i] == train.combos[j] for i, j in zip(idx.tolist(), wrong.tolist())])
    y = torch.cat([torch.ones(128), same.float()])  # a shuffled caption can still describe the same pair
    opt.zero_grad()
    F.binary_cross_entropy_with_logits(joint(x).squeeze(1), y).backward()
    opt.step()

# retrieval with the joint model: every (image, caption) pair goes through the network
n = 300
with torch.no_grad():
    start = time.perf_counter()
    pairs = torch.cat([img_feats[:n].float().repeat_interleave(n, 0), txt_feats[:n].float().repeat(n, 1)], dim=1)
    sim_joint = joint(pairs).view(n, n)
    t_joint = time.perf_counter() - start
gallery_class = class_index(gallery, classes)  # (1000,) index of each image's colour-shape pair
relevant = gallery_class[:n, None] == gallery_class[None, :n]  # (n, n): same colour and shape
print(f"joint model, {n} x {n} = {n * n} forward passes: {t_joint * 1e3:.0f} ms; "
      f"image -> caption R@1 (same colour and shape) = {recall_at_k(sim_joint, 1, relevant):.3f}")

# %% [markdown] slideshow={"slide_type": "slide"}
# ## 4 · Coordinating two views with CCA
#
# Canonical correlation analysis (Hotelling, 1936) is the classical coordinated representation.
# It looks for a direction $\mathbf w_x$ in image-feature space and $\mathbf w_y$ in text-feature space
# such that the projections of paired examples are maximally correlated,
#
# $$(\mathbf w_x^*, \mathbf w_y^*) = \arg\max_{\mathbf w_x, \mathbf w_y} \operatorname{corr}(X\mathbf w_x,\; Y\mathbf w_y),$$
#
# then a second pair uncorrelated with the first, and so on. Deep CCA replaces the two linear maps
# by networks $f_1, f_2$. Linear CCA has a closed form: whiten each view
# ($C_{xx}^{-1/2}$, $C_{yy}^{-1/2}$); the singular value decomposition of the whitened
# cross-covariance $T = C_{xx}^{-1/2} C_{xy} C_{yy}^{-1/2} = U S V^\top$ gives the directions
# $W_x = C_{xx}^{-1/2} U$, $W_y = C_{yy}^{-1/2} V$ and the canonical correlations $S$.
# Here it is from scratch (a small ridge `reg` keeps the covariances invertible: many words never occur).

# %%
def cca_from_scratch(x, y, dim, reg=1e-4):
    x, y = x.double(), y.double()
    xc, yc = x - x.mean(0), y - y.mean(0)
    n = x.shape[0]
    cxx = xc.T @ xc / (n - 1) + reg * torch.eye(x.shape[1], dtype=x.dtype)
    cyy = yc.T @ yc / (n - 1) + reg * torch.eye(y.shape[1], dtype=y.dtype)
    cxy = xc.T @ yc / (n - 1)

    def inv_sqrt(c):
        vals, vecs = torch.linalg.eigh(c)
        return vecs @ torch.diag(vals.clamp(min=1e-12).rsqrt()) @ vecs.T

    u, s, vh = torch.linalg.svd(inv_sqrt(cxx) @ cxy @ inv_sqrt(cyy))
    return inv_sqrt(cxx) @ u[:, :dim], inv_sqrt(cyy) @ vh.T[:, :dim], s[:dim]


w_x, w_y, corr = cca_from_scratch(img_train, txt_train, dim=16)

# %% [markdown]
# The package's `mmcourse.cca.fit_cca` is the tested version (compared against scikit-learn's CCA in
# the course's tests). Check that ours agrees, then use the package from here on.

# %% tags=["check"]
from mmcourse.cca import fit_cca

cca = fit_cca(img_train, txt_train, dim=16)
torch.testing.assert_close(corr, cca.correlations)
print("from-scratch CCA matches mmcourse.cca.fit_cca; leading canonical correlations:",
      [round(c, 3) for c in cca.correlations[:6].tolist()])

# %%
plt.figure(figsize=(5, 2.8))
plt.bar(range(1, 17), cca.correlations.numpy())
plt.xlabel("canonical component")
plt.ylabel("correlation on training pairs")
plt.title("CCA between image features and bag-of-words captions")
plt.ylim(0, 1)
plt.show()

# %% [markdown] slideshow={"slide_type": "slide"}
# ## 5 · Cross-modal retrieval and Recall@K
#
# In the coordinated space, retrieval is a nearest-neighbour search by cosine similarity, in either
# direction: image → caption (find the words for a picture) and caption → image (search photos by
# text). The standard measure is **Recall@K**: the fraction of queries whose correct item is among
# the *K* most similar items.
#
# **Exercise 01.recall** (3 points). Write `recall_at_k(similarity, k)`. Row *i* of `similarity`
# `(N, N)` holds query *i*'s similarity to every item, and query *i*'s correct item is item *i* (the
# diagonal). Return the fraction of queries (a Python float) whose correct item is among the *k*
# highest-scoring items of their row. Be pessimistic about ties: an item that scores exactly as high
# as the correct one ranks ahead of it (otherwise a model that maps everything to one point would
# look perfect).

# %% exercise="01.recall"
def my_recall_at_k(similarity: torch.Tensor, k: int) -> float:
    """(N, N) similarities, correct items on the diagonal -> fraction of rows whose diagonal entry is in the top k."""
    ### BEGIN SOLUTION
    correct = similarity.diagonal()
    rank = (similarity >= correct[:, None]).sum(dim=1) - 1  # other items scoring at least as high
    return (rank < k).float().mean().item()
    ### END SOLUTION


# %% tags=["check"]
check.exercise("01.recall", my_recall_at_k)

# %% [markdown]
# In our world many images share a meaning (there are ~16 red squares in the gallery), so we count a
# retrieved item as correct when it shows the same colour and shape as the query: the `relevant`
# matrix of `mmcourse.retrieval.recall_table`. We evaluate on seen and on held-out pairs.

# %%
from mmcourse.retrieval import recall_table


def embed_images(images):
    with torch.no_grad():
        return cca.transform_x(attr_model.features(images))


def embed_text(captions):
    return cca.transform_y(bag_of_words(captions))


img_emb, txt_emb = embed_images(gallery.images), embed_text(gallery.captions)
is_held = torch.tensor([c in set(HELDOUT_COMBOS) for c in gallery.combos])
for name, keep in (("seen pairs", ~is_held), ("held-out pairs", is_held)):
    idx = keep.nonzero().flatten()
    rel = gallery_class[idx, None] == gallery_class[None, idx]
    table = recall_table(img_emb[idx], txt_emb[idx], rel)
    for direction, scores in table.items():
        print(f"{name:15s} {direction}: " + "  ".join(f"R@{k} {v:.3f}" for k, v in scores.items()))

fig, axes = plt.subplots(1, 2, figsize=(8, 3.4))
for ax, sim, title in ((axes[0], sim_unaligned, "unaligned (random projection)"), (axes[1], cosine_similarity(img_emb, txt_emb), "after CCA (16 dimensions)")):
    im = ax.imshow(sim[:12, :12].numpy(), cmap="viridis")
    ax.set_xlabel("caption j")
    ax.set_ylabel("image i")
    ax.set_title(f"cosine(image i, caption j)\n{title}")
    fig.colorbar(im, ax=ax)
plt.tight_layout()
plt.show()

start = time.perf_counter()
sim_cca = cosine_similarity(img_emb[:n], txt_emb[:n])
print(f"coordinated space: all {n} x {n} similarities in {(time.perf_counter() - start) * 1e3:.2f} ms "
      f"(R@1 {recall_at_k(sim_cca, 1, relevant):.3f}) vs {t_joint * 1e3:.0f} ms for the joint model")

# %% [markdown]
# After CCA the diagonal lights up: matching pairs are now the most similar ones. Off-diagonal bright
# cells are not errors; they are other images of the same colour and shape.
#
# Words matter in a bag of words, and CCA can only use the words it saw. The captions use synonyms
# ("crimson", "scarlet" for red): CCA learns they co-vary with the same pixels. The held-out pairs
# are retrieved too, because their colour words and shape words were each seen with other partners
# (their gallery has only eight classes, one per colour, which makes it the easier of the two).

# %% [markdown] slideshow={"slide_type": "slide"}
# ## 6 · Vector arithmetic across modalities
#
# In a well-coordinated space, directions mean something. Kiros et al. took the image embedding of a
# blue car, subtracted the word embedding of "blue", added "red", and retrieved red cars. Our version:
# the image of a blue square − "blue" + "red".

# %%
def arithmetic(image, minus_word, plus_word):
    """Unit vector of embed(image) - embed(minus_word) + embed(plus_word)."""
    q = embed_images(image[None]) - embed_text([minus_word]) + embed_text([plus_word])
    return F.normalize(q, dim=1)


def arithmetic_hits(from_pair, to_pair, k=10):
    """Mean share of to_pair among the top k, over every gallery image of from_pair."""
    sources = [i for i, c in enumerate(gallery.combos) if c == from_pair]
    hits = []
    for i in sources:
        q = arithmetic(gallery.images[i], from_pair[0], to_pair[0])
        top = cosine_similarity(q, img_emb)[0].topk(k).indices
        hits.append(sum(gallery.combos[j] == to_pair for j in top.tolist()) / k)
    return sum(hits) / len(hits), sources


share, sources = arithmetic_hits(("blue", "square"), ("red", "square"))
q = arithmetic(gallery.images[sources[0]], "blue", "red")
top = cosine_similarity(q, img_emb)[0].topk(7).indices.tolist()
show_images(torch.stack([gallery.images[sources[0]]] + [gallery.images[j] for j in top]),
            ["query image"] + [" ".join(gallery.combos[j]) for j in top],
            title='image of a blue square − "blue" + "red": nearest images')
print(f"red squares among the top 10, averaged over every blue square: {share:.2f} "
      f"({sum(c == ('red', 'square') for c in gallery.combos)} red squares in a gallery of {len(gallery)})")
share_new, _ = arithmetic_hits(("blue", "triangle"), ("red", "triangle"))
print(f'blue triangle − "blue" + "red" -> red triangles (a held-out pair) in the top 10: {share_new:.2f}')

# %% [markdown] slideshow={"slide_type": "notes"}
# Instructor: the explorer below is the live demo; each caption change redraws in about 0.15 s on a CPU.
# Good prompts: a synonym ("a crimson box"), a held-out pair ("a pink diamond"), an unknown word
# ("a vermilion square": only "square" survives, so any colour of square comes back).

# %% [markdown] slideshow={"slide_type": "slide"}
# ## 7 · Play: search the gallery by text
#
# Type any caption (or pick one). The left shows the eight nearest images in the CCA space, the
# right shows the whole gallery in the first two principal components of that space, the caption as a
# star and its nearest images circled. Try synonyms ("scarlet", "box"), a held-out pair ("a pink
# diamond"), and a word the vocabulary does not know ("a vermilion square": it becomes `<unk>`).

# %%
from mmcourse.data.shapes import RGB
from mmcourse.widgets.retrieval import RetrievalExplorer

explorer = RetrievalExplorer(
    gallery.images,
    img_emb,
    embed_text,
    examples=["a red square", "a crimson box", "a pink diamond", "a sketch of a green star", "a vermilion square"],
    point_colors=[RGB[c] for c in gallery.colors],
)
explorer.widget()

# %% [markdown] slideshow={"slide_type": "slide"}
# ## What to remember
#
# * Class labels are independent symbols; attributes (and later, sentences) are shared parts, and
#   sharing is what lets a model recognise a class it never saw.
# * Separately trained encoders give separate spaces: their similarities are meaningless until the
#   spaces are aligned.
# * A **joint** representation fuses modalities into one vector; a **coordinated** one keeps an
#   encoder per modality and aligns their outputs. Coordinated spaces make retrieval a matrix product.
# * CCA aligns two views linearly by maximising correlation; CLIP (next notebook) aligns them with a
#   contrastive loss and learned encoders.
# * Evaluate retrieval with Recall@K in both directions; in a coordinated space, directions can be
#   added and subtracted across modalities.
#
# ## References
#
# * C. H. Lampert, H. Nickisch, S. Harmeling. *Learning to detect unseen object classes by between-class attribute transfer.* CVPR 2009.
# * H. Hotelling. *Relations between two sets of variates.* Biometrika 1936. G. Andrew et al. *Deep canonical correlation analysis.* ICML 2013.
# * T. Baltrušaitis, C. Ahuja, L.-P. Morency. *Multimodal machine learning: a survey and taxonomy.* TPAMI 2018.
# * R. Kiros, R. Salakhutdinov, R. Zemel. *Unifying visual-semantic embeddings with multimodal neural language models.* 2014.
# * A. Radford et al. *Learning transferable visual models from natural language supervision (CLIP).* ICML 2021.
