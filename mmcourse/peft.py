"""Parameter-efficient fine-tuning: LoRA and bottleneck adapters on a frozen network.

The lecture's two ways to change a big network without updating all of it:

- **Adapters** (Houlsby et al., 2019): a small bottleneck block, down-projection -> nonlinearity ->
  up-projection, added with a residual after a sublayer. The up-projection starts at zero, so the adapted
  network starts as the frozen one: ``h + up(act(down(h)))`` with ``up = 0`` is ``h``.
- **LoRA** (Hu et al., 2021): most parameters of a transformer sit in linear layers, and the update a
  fine-tuning makes to one of them, ΔW, may have a low intrinsic rank. So learn it as a product
  ``ΔW = (α / r) · B A`` with ``A: (r, in)``, ``B: (out, r)`` and r small, and leave W frozen::

      y = W x + b + (α / r) · B (A (dropout(x)))

  A starts Kaiming-uniform (a = √5, as ``nn.Linear`` initialises its weight), B at zero, so at step 0 the
  wrapped layer is *bit for bit* the base layer. After training ``W + (α / r) B A`` can be written into
  W (``merge_lora``): inference then costs exactly what the base model costs.

Conventions. The course uses peft's scaling ``α / r`` (``LoraConfig(r, lora_alpha)``), and peft's names
(``lora_A``, ``lora_B``, ``scaling``). Other conventions exist and change what a given α means:
rsLoRA (Kalajdzievski, 2023; ``LoraConfig(use_rslora=True)``) scales by ``α / √r`` so that the update's
size does not shrink as r grows; some from-scratch tutorials multiply by ``α`` alone. With α / r,
doubling r at fixed α halves the scale of each rank-one piece; keeping ``α = r`` (or ``α = 2r``) keeps
the scale fixed while r is swept.

What is here (each works on any ``nn.Module`` whose linear layers are ``nn.Linear``)::

    LoRALinear(base, r, alpha, dropout=0.0)          one wrapped linear layer
    apply_lora(model, target_modules, *, r, alpha, dropout=0.0) -> model   (in place)
    merge_lora(model) / unmerge_lora(model)          write ΔW into W / take it out again
    unload_lora(model, *, merge=True) -> model       put plain nn.Linear layers back (peft's merge_and_unload)
    disable_lora(model)                              context manager: the base model, exactly
    lora_layers(model) -> {name: LoRALinear}
    BottleneckAdapter(width, bottleneck), Adapted(sublayer, adapter), apply_adapters(model, target_modules, *, bottleneck)
    count_parameters(model, *, trainable=True) -> int

``nn.MultiheadAttention`` cannot be targeted: it reads its fused ``in_proj_weight`` and its
``out_proj.weight`` directly instead of calling the sublayers, so a wrapper around ``out_proj`` would
silently never run. Convert such blocks first (``mmcourse.models.transformer.Attention.from_multihead``
gives separate ``q_proj``, ``k_proj``, ``v_proj``, ``out_proj`` layers computing the same function).
"""

from __future__ import annotations

import contextlib
import math
import re
from typing import Callable, Iterator, Sequence

import torch
from torch import nn

Tensor = torch.Tensor

TargetModules = str | Sequence[str]

__all__ = [
    "LoRALinear", "apply_lora", "merge_lora", "unmerge_lora", "unload_lora", "disable_lora", "lora_layers",
    "BottleneckAdapter", "Adapted", "apply_adapters", "count_parameters", "find_modules",
]


# ------------------------------------------------------------------------------------------ LoRA


class LoRALinear(nn.Module):
    """A frozen ``nn.Linear`` plus a trainable low-rank update: ``y = base(x) + (α/r) · B(A(dropout(x)))``.

    ``base``: the ``nn.Linear`` to adapt (its parameters are frozen here, and kept, not copied);
    ``r``: the rank, 1 ≤ r ≤ min(in_features, out_features); ``alpha``: the numerator of the scaling
    ``α / r`` (peft's ``lora_alpha``); ``dropout``: applied to the LoRA branch's input only.

    Shapes: x (..., in_features) -> y (..., out_features). ``lora_A``: Linear(in, r) without bias,
    Kaiming-uniform; ``lora_B``: Linear(r, out) without bias, zeros. ``merged`` tells whether ΔW is
    currently written into ``base.weight`` (then the branch is skipped).
    """

    def __init__(self, base: nn.Linear, r: int, alpha: float, dropout: float = 0.0) -> None:
        super().__init__()
        if isinstance(base, LoRALinear):
            raise ValueError("this layer already has LoRA; apply LoRA once (unload_lora first to start again)")
        if not isinstance(base, nn.Linear):
            raise TypeError(f"LoRALinear wraps an nn.Linear, got {type(base).__name__}")
        _check_rank(r, base.in_features, base.out_features)
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not math.isfinite(alpha) or alpha <= 0:
            raise ValueError(f"alpha must be a positive number, got {alpha!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        self.base = base
        self.base.requires_grad_(False)
        self.r, self.alpha = int(r), float(alpha)
        self.scaling = self.alpha / self.r
        kwargs = dict(device=base.weight.device, dtype=base.weight.dtype)
        self.lora_A = nn.Linear(base.in_features, self.r, bias=False, **kwargs)  # A: (r, in)
        self.lora_B = nn.Linear(self.r, base.out_features, bias=False, **kwargs)  # B: (out, r)
        self.lora_dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.merged = False
        self.enabled = True
        self.reset_lora_parameters()

    @property
    def in_features(self) -> int:
        return self.base.in_features

    @property
    def out_features(self) -> int:
        return self.base.out_features

    @property
    def weight(self) -> Tensor:
        """The base weight (with ΔW inside while merged), so code that reads ``.weight`` keeps working."""
        return self.base.weight

    @property
    def bias(self) -> Tensor | None:
        return self.base.bias

    def reset_lora_parameters(self) -> None:
        """A Kaiming-uniform (a = √5), B = 0: the update BA is zero, its gradient with respect to B is not."""
        nn.init.kaiming_uniform_(self.lora_A.weight, a=math.sqrt(5))
        nn.init.zeros_(self.lora_B.weight)

    def delta_weight(self) -> Tensor:
        """ΔW = (α/r) · B A, shape (out_features, in_features), in the base weight's dtype."""
        return (self.lora_B.weight @ self.lora_A.weight) * self.scaling

    def forward(self, x: Tensor) -> Tensor:
        y = self.base(x)
        if self.merged or not self.enabled:
            return y
        return y + self.lora_B(self.lora_A(self.lora_dropout(x))) * self.scaling

    @torch.no_grad()
    def merge(self) -> None:
        """W <- W + ΔW. Afterwards the layer costs what the base layer costs."""
        if self.merged:
            raise RuntimeError("this LoRA layer is already merged; merging twice would add ΔW twice")
        self.base.weight += self.delta_weight().to(self.base.weight.dtype)
        self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        """W <- W - ΔW: the base weight again, up to one rounding of W + ΔW (see the notebook)."""
        if not self.merged:
            raise RuntimeError("this LoRA layer is not merged; nothing to unmerge")
        self.base.weight -= self.delta_weight().to(self.base.weight.dtype)
        self.merged = False

    def extra_repr(self) -> str:
        return f"r={self.r}, alpha={self.alpha:g}, scaling={self.scaling:g}, merged={self.merged}"


def _check_rank(r: int, in_features: int, out_features: int) -> None:
    if isinstance(r, bool) or not isinstance(r, int):
        raise TypeError(f"the rank r must be an int, got {type(r).__name__}")
    if r <= 0:
        raise ValueError(f"the rank r must be at least 1, got {r}")
    if r > min(in_features, out_features):
        raise ValueError(
            f"rank r={r} exceeds min(in_features, out_features) = min({in_features}, {out_features}); a rank above "
            "that adds parameters but no expressive power (BA already has full rank at r = min(in, out))"
        )


# ------------------------------------------------------------------------------- target matching


def _matches(name: str, target_modules: TargetModules) -> bool:
    """peft's rule: a string is a regular expression the full name must match; a list holds names that
    match the full module name or its last dotted parts (``"q_proj"`` matches ``"blocks.0.attn.q_proj"``)."""
    if isinstance(target_modules, str):
        return re.fullmatch(target_modules, name) is not None
    return any(name == t or name.endswith("." + t) for t in target_modules)


def find_modules(model: nn.Module, target_modules: TargetModules) -> list[str]:
    """Names of the modules of ``model`` that ``target_modules`` selects (see :func:`apply_lora`)."""
    if isinstance(target_modules, str):
        if target_modules == "all-linear":
            return [n for n, m in model.named_modules() if isinstance(m, nn.Linear) and not _inside_lora(model, n)]
    elif not isinstance(target_modules, (list, tuple)) or not all(isinstance(t, str) for t in target_modules) \
            or not target_modules:
        raise TypeError(f"target_modules must be a regex string, 'all-linear' or a non-empty list of names, "
                        f"got {target_modules!r}")
    return [n for n, _ in model.named_modules() if n and _matches(n, target_modules)]


def _inside_lora(model: nn.Module, name: str) -> bool:
    parent = name.rpartition(".")[0]
    return bool(parent) and isinstance(model.get_submodule(parent), LoRALinear)


def _describe(model: nn.Module, kind: type[nn.Module] = nn.Linear, limit: int = 24) -> str:
    names = [n for n, m in model.named_modules() if isinstance(m, kind)]
    shown = ", ".join(names[:limit]) + (f", ... ({len(names)} in all)" if len(names) > limit else "")
    return f"the model's {kind.__name__} modules are: {shown or 'none'}"


def _replace(model: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, new)


def _refuse_multihead(model: nn.Module, names: list[str]) -> None:
    for name in names:
        parent = name.rpartition(".")[0]
        if parent and isinstance(model.get_submodule(parent), nn.MultiheadAttention):
            raise ValueError(
                f"{name!r} sits inside an nn.MultiheadAttention, which uses its weights directly and never calls "
                "this sublayer, so a wrapper there would silently do nothing. Convert the attention first "
                "(mmcourse.models.transformer.Attention.from_multihead) and target q_proj/k_proj/v_proj/out_proj"
            )


def _select(model: nn.Module, target_modules: TargetModules) -> list[str]:
    names = find_modules(model, target_modules)
    if not names:
        raise ValueError(f"target_modules={target_modules!r} matches no module; {_describe(model)}")
    _refuse_multihead(model, names)
    return names


# ----------------------------------------------------------------------------------- LoRA on a model


def apply_lora(
    model: nn.Module, target_modules: TargetModules, *, r: int, alpha: float, dropout: float = 0.0,
    freeze: bool = True,
) -> nn.Module:
    """Wrap the selected ``nn.Linear`` layers of ``model`` in :class:`LoRALinear`, in place; returns ``model``.

    ``target_modules`` follows peft's ``LoraConfig(target_modules=...)``: a list of names, each matching a
    module's full dotted name or its last parts (``["q_proj", "v_proj"]``: every query and value projection),
    a string read as a regular expression the whole name must match (``r"blocks\\.0\\..*_proj"``), or
    ``"all-linear"`` (every ``nn.Linear``; unlike peft, the output layer too, if it is one). Every selected
    module must be an ``nn.Linear``.

    ``freeze=True`` (peft's behaviour) sets ``requires_grad=False`` on every parameter of the model except
    the LoRA matrices; unfreeze what else must train afterwards (new token embeddings, a head).
    :func:`lora_layers` lists the wrapped layers by name.
    """
    if lora_layers(model):
        raise ValueError(
            f"the model already has LoRA layers ({', '.join(lora_layers(model))}); apply LoRA once "
            "(unload_lora(model) first to start again)"
        )
    names = _select(model, target_modules)
    wrong = {n: type(model.get_submodule(n)).__name__ for n in names if not isinstance(model.get_submodule(n), nn.Linear)}
    if wrong:
        raise TypeError(
            "LoRA here adapts nn.Linear layers only, but target_modules also selects "
            + ", ".join(f"{n} ({t})" for n, t in wrong.items()) + f"; {_describe(model)}"
        )
    for name in names:  # check every rank before changing anything
        m = model.get_submodule(name)
        try:
            _check_rank(r, m.in_features, m.out_features)
        except ValueError as e:
            raise ValueError(f"{name}: {e}") from None
    if freeze:
        model.requires_grad_(False)
    for name in names:
        _replace(model, name, LoRALinear(model.get_submodule(name), r, alpha, dropout))
    return model


def lora_layers(model: nn.Module) -> dict[str, LoRALinear]:
    """``{name: layer}`` for every :class:`LoRALinear` in ``model``, in module order."""
    return {n: m for n, m in model.named_modules() if isinstance(m, LoRALinear)}


def _layers_or_fail(model: nn.Module) -> dict[str, LoRALinear]:
    layers = lora_layers(model)
    if not layers:
        raise ValueError("the model has no LoRA layers; call apply_lora first")
    return layers


def merge_lora(model: nn.Module) -> nn.Module:
    """Write ΔW = (α/r)·BA into every LoRA layer's base weight (in place); returns ``model``.

    Raises if the model has no LoRA layers or is already merged (merging twice would add ΔW twice)."""
    layers = _layers_or_fail(model)
    merged = [n for n, m in layers.items() if m.merged]
    if merged:
        raise RuntimeError(f"already merged: {', '.join(merged)}; merging twice would add ΔW twice")
    for layer in layers.values():
        layer.merge()
    return model


def unmerge_lora(model: nn.Module) -> nn.Module:
    """Take ΔW out of every merged LoRA layer again (in place); returns ``model``."""
    layers = _layers_or_fail(model)
    unmerged = [n for n, m in layers.items() if not m.merged]
    if unmerged:
        raise RuntimeError(f"not merged: {', '.join(unmerged)}; call merge_lora first")
    for layer in layers.values():
        layer.unmerge()
    return model


def unload_lora(model: nn.Module, *, merge: bool = True) -> nn.Module:
    """Replace every LoRA layer by its base ``nn.Linear`` (in place); returns ``model``.

    ``merge=True``: with ΔW merged in (peft's ``merge_and_unload``); ``merge=False``: the original base
    layer (ΔW dropped; unmerged first if it was merged)."""
    for name, layer in _layers_or_fail(model).items():
        if merge and not layer.merged:
            layer.merge()
        if not merge and layer.merged:
            layer.unmerge()
        _replace(model, name, layer.base)
    return model


@contextlib.contextmanager
def disable_lora(model: nn.Module) -> Iterator[nn.Module]:
    """Within the block the LoRA branches are off: an unmerged model computes exactly its base model
    (peft's ``disable_adapter()``). Refused while merged, where the base weights hold ΔW."""
    layers = _layers_or_fail(model)
    if any(m.merged for m in layers.values()):
        raise RuntimeError("the model is merged; unmerge_lora first (the base weights hold ΔW while merged)")
    try:
        for m in layers.values():
            m.enabled = False
        yield model
    finally:
        for m in layers.values():
            m.enabled = True


# ------------------------------------------------------------------------------------------ adapters


class BottleneckAdapter(nn.Module):
    """Houlsby's adapter: ``h + up(act(down(h)))`` for h (..., width); ``down``: width -> bottleneck,
    ``up``: bottleneck -> width, initialised at zero so the adapter starts as the identity."""

    def __init__(self, width: int, bottleneck: int, activation: Callable[[], nn.Module] = nn.GELU) -> None:
        super().__init__()
        if isinstance(bottleneck, bool) or not isinstance(bottleneck, int) or bottleneck <= 0:
            raise ValueError(f"the bottleneck size must be a positive int, got {bottleneck!r}")
        self.down = nn.Linear(width, bottleneck)
        self.act = activation()
        self.up = nn.Linear(bottleneck, width)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, h: Tensor) -> Tensor:
        return h + self.up(self.act(self.down(h)))


class Adapted(nn.Module):
    """A frozen sublayer followed by an adapter: ``adapter(sublayer(x))``. Wrapping a block's attention
    output projection and its MLP places adapters where Houlsby et al. put them: on each sublayer's
    output, before the residual addition."""

    def __init__(self, sublayer: nn.Module, adapter: BottleneckAdapter) -> None:
        super().__init__()
        self.sublayer, self.adapter = sublayer, adapter

    def forward(self, x: Tensor) -> Tensor:
        return self.adapter(self.sublayer(x))


def _output_width(module: nn.Module) -> int:
    if isinstance(module, nn.Linear):
        return module.out_features
    linears = [m for m in module.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise TypeError(f"cannot tell the output width of {type(module).__name__}: it holds no nn.Linear")
    return linears[-1].out_features


def apply_adapters(
    model: nn.Module, target_modules: TargetModules, *, bottleneck: int, freeze: bool = True,
) -> nn.Module:
    """Put a :class:`BottleneckAdapter` after each selected sublayer (in place); returns ``model``.

    ``target_modules`` as in :func:`apply_lora` (e.g. ``["out_proj", "mlp"]`` for Houlsby's two adapters
    per block); the adapter's width is the sublayer's output width (its last ``nn.Linear``).
    ``freeze=True`` freezes every other parameter of the model."""
    if any(isinstance(m, Adapted) for m in model.modules()):
        raise ValueError("the model already has adapters; apply them once")
    names = _select(model, target_modules)
    widths = {n: _output_width(model.get_submodule(n)) for n in names}
    if freeze:
        model.requires_grad_(False)
    for name in names:
        sub = model.get_submodule(name)
        adapter = BottleneckAdapter(widths[name], bottleneck)
        p = next(sub.parameters(), None)
        if p is not None:
            adapter.to(device=p.device, dtype=p.dtype)
        _replace(model, name, Adapted(sub, adapter))
    return model


# ------------------------------------------------------------------------------------------ counting


def count_parameters(model: nn.Module, *, trainable: bool = True) -> int:
    """The number of parameters of ``model`` (shared ones once); only those with ``requires_grad`` when
    ``trainable`` (the default), all of them otherwise."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable)
