"""Typical mistakes for the exercises of notebook 03: each must be rejected with a message naming the problem.

``MISTAKES[exercise id][what the student did] = (function, words the failure message must contain)``;
tests/test_exercises.py runs them all.
"""

import torch
import torch.nn.functional as F


def _logit(p):
    p = torch.as_tensor(p, dtype=torch.float64)
    return torch.log(p / (1 - p))


def _linear_fit(x, y):
    x, y = torch.as_tensor(x, dtype=torch.float64), torch.as_tensor(y, dtype=torch.float64)
    slope = ((x - x.mean()) * (y - y.mean())).sum() / ((x - x.mean()) ** 2).sum()
    return slope, y.mean() - slope * x.mean()


# ------------------------------------------------------------------------------------ 03.select_templates


def _correct(emb, chosen, x, y, combine):
    cls = combine(emb[:, chosen])
    return int(((F.normalize(x, dim=1) @ F.normalize(cls, dim=1).T).argmax(1) == y).sum())


def _ensemble(e):
    return F.normalize(F.normalize(e, dim=-1).mean(dim=1), dim=-1)


def _forward(emb, x, y, *, combine=_ensemble, stop_on_equal=True, high_ties=False, repeats=False, limit=None):
    chosen, best = [], -1
    for _ in range(limit or emb.shape[1]):
        scores = {t: _correct(emb, chosen + [t], x, y, combine) for t in range(emb.shape[1]) if repeats or t not in chosen}
        pick = max(scores, key=lambda t: (scores[t], t if high_ties else -t))
        if scores[pick] < best or (stop_on_equal and scores[pick] == best):
            break
        chosen.append(pick)
        best = scores[pick]
    return chosen


def _best_singles(emb, x, y):
    n = len(_forward(emb, x, y))
    single = {t: _correct(emb, [t], x, y, _ensemble) for t in range(emb.shape[1])}
    return sorted(single, key=lambda t: (-single[t], t))[:n]


def _never_stops(emb, x, y):
    return _forward(emb, x, y, stop_on_equal=False)


def _stops_after_one(emb, x, y):
    return _forward(emb, x, y, limit=1) if len(_forward(emb, x, y)) > 1 else _forward(emb, x, y) + [0]


# ------------------------------------------------------------------------------------------------ 03.probe


def _train(x, y, c, wd, *, penalty=None, bias=True, steps=500, loss="ce", opt="lbfgs"):
    w = torch.zeros(c, x.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros(c, dtype=torch.float64, requires_grad=bias)
    x = x.double()
    params = [w, b] if bias else [w]

    def objective():
        logits = x @ w.T + b
        if loss == "ce":
            fit = F.cross_entropy(logits, y)
        elif loss == "sum":
            fit = F.cross_entropy(logits, y, reduction="sum")
        else:
            fit = F.mse_loss(logits, F.one_hot(y, c).double())
        return fit + (wd * w.pow(2).sum() if penalty is None else penalty(w, b))

    if opt == "lbfgs":
        optimiser = torch.optim.LBFGS(params, max_iter=steps, line_search_fn="strong_wolfe")

        def closure():
            optimiser.zero_grad()
            value = objective()
            value.backward()
            return value

        optimiser.step(closure)
    else:
        optimiser = torch.optim.SGD(params, lr=0.01)
        for _ in range(steps):
            optimiser.zero_grad()
            objective().backward()
            optimiser.step()
    return w.detach(), b.detach()


MISTAKES = {
    "03.select_templates": {
        "the best single templates, not forward selection": (_best_singles, "best on their own"),
        "averages the raw embeddings": (
            lambda e, x, y: _forward(e, x, y, combine=lambda t: F.normalize(t.mean(dim=1), dim=-1)), "raw embeddings"),
        "ties go to the higher index": (lambda e, x, y: _forward(e, x, y, high_ties=True), "lowest index"),
        "goes on while the count stays equal": (_never_stops, "stays equal"),
        "a template chosen twice": (lambda e, x, y: _forward(e, x, y, repeats=True), "only once"),
        "stops after the first template": (_stops_after_one, "too early"),
        "returns the template embeddings' classifier instead of indices": (
            lambda e, x, y: _ensemble(e[:, _forward(e, x, y)]), "template indices"),
    },
    "03.probe": {
        "no weight decay": (lambda x, y, c, wd: _train(x, y, c, wd, penalty=lambda w, b: 0.0), "penalty"),
        "sum of the cross-entropy instead of the mean": (lambda x, y, c, wd: _train(x, y, c, wd, loss="sum"), "not the sum"),
        "the bias penalised too": (
            lambda x, y, c, wd: _train(x, y, c, wd, penalty=lambda w, b: wd * (w.pow(2).sum() + b.pow(2).sum())), "minimum"),
        "no bias": (lambda x, y, c, wd: _train(x, y, c, wd, bias=False), "bias is all zeros"),
        "far too few steps of plain gradient descent": (
            lambda x, y, c, wd: _train(x, y, c, wd, steps=20, opt="sgd"), "Train longer"),
        "mean squared error on one-hot targets": (lambda x, y, c, wd: _train(x, y, c, wd, loss="mse"), "minimum"),
        "returns only the weight": (lambda x, y, c, wd: _train(x, y, c, wd)[0], "pair (weight, bias)"),
        "weight transposed (D, C)": (lambda x, y, c, wd: (_train(x, y, c, wd)[0].T.contiguous(), _train(x, y, c, wd)[1]),
                                     "transposed"),
        "the untrained zeros": (
            lambda x, y, c, wd: (torch.zeros(c, x.shape[1]), torch.zeros(c)), "not at the minimum"),
    },
    "03.effective_robustness": {
        "the plain drop (ood - id), no baselines": (lambda bi, bo, mi, mo: mo - mi, "plain drop"),
        "line fitted on accuracies, not logits": (
            lambda bi, bo, mi, mo: mo - (lambda a, b: (a * mi + b).item())(*_linear_fit(bi, bo)), "accuracies themselves"),
        "compared in logit units (no sigmoid back)": (
            lambda bi, bo, mi, mo: (_logit(mo) - (lambda a, b: a * _logit(mi) + b)(*_linear_fit(_logit(bi), _logit(bo)))).item(),
            "logit units"),
        "axes swapped (id fitted on ood)": (
            lambda bi, bo, mi, mo: mo - torch.sigmoid((_logit(mi) - (lambda a, b: b)(*_linear_fit(_logit(bo), _logit(bi))))
                                                      / (lambda a, b: a)(*_linear_fit(_logit(bo), _logit(bi)))).item(),
            "other way round"),
        "against the baselines' mean ood accuracy": (lambda bi, bo, mi, mo: mo - float(torch.as_tensor(bo).mean()), "mean shifted"),
        "returns one value per baseline": (lambda bi, bo, mi, mo: mo - torch.as_tensor(bo), "single number"),
        "the trend's prediction itself, not the distance to it": (
            lambda bi, bo, mi, mo: torch.sigmoid((lambda a, b: a * _logit(mi) + b)(*_linear_fit(_logit(bi), _logit(bo)))).item(),
            "should be"),
    },
}
