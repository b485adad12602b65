"""Signed distance functions for the shapes world.

Every function takes local coordinates ``u, v`` (tensors of any shape, in units of the object's
radius, ``v`` pointing down as image rows do) and returns the signed distance to the shape's
outline in the same units: negative inside, positive outside. Distances (not just an inside test)
let one renderer draw anti-aliased fills, outlines of a fixed pixel width and shaded interiors.
"""

from __future__ import annotations

import math
from typing import Callable

import torch

Tensor = torch.Tensor


def _box(u: Tensor, v: Tensor, half_w: float, half_h: float) -> Tensor:
    qx = u.abs() - half_w
    qy = v.abs() - half_h
    outside = torch.sqrt(qx.clamp(min=0) ** 2 + qy.clamp(min=0) ** 2)
    inside = torch.maximum(qx, qy).clamp(max=0)
    return outside + inside


def _disc(u: Tensor, v: Tensor, cu: float, cv: float, radius: float) -> Tensor:
    return torch.sqrt((u - cu) ** 2 + (v - cv) ** 2) - radius


def _rotate45(u: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
    s = 1.0 / math.sqrt(2.0)
    return (u + v) * s, (v - u) * s


def circle(u: Tensor, v: Tensor) -> Tensor:
    return _disc(u, v, 0.0, 0.0, 0.92)


def square(u: Tensor, v: Tensor) -> Tensor:
    return _box(u, v, 0.78, 0.78)


def triangle(u: Tensor, v: Tensor) -> Tensor:
    # Equilateral, apex up; the max over the three edge half-planes is exact inside and near edges.
    v = v - 0.28  # centre the bounding box rather than the centroid
    r = 1.15
    apothem = r * 0.5
    c = math.cos(math.pi / 6)
    return torch.stack(
        [v - apothem, -c * u - 0.5 * v - apothem, c * u - 0.5 * v - apothem]
    ).amax(0)


def diamond(u: Tensor, v: Tensor) -> Tensor:
    ru, rv = _rotate45(u, v)
    return _box(ru, rv, 0.68, 0.68)


def star(u: Tensor, v: Tensor) -> Tensor:
    # Fold the plane into the wedge between a tip (angle 0) and a valley (angle pi/5), then take
    # the signed distance to the edge segment tip -> valley.
    points, inner = 5, 0.45
    sector = 2 * math.pi / points
    angle = torch.atan2(u, -v)  # 0 at the top tip
    a = torch.remainder(angle, sector)
    a = torch.minimum(a, sector - a)
    rho = torch.sqrt(u * u + v * v)
    qx, qy = rho * torch.cos(a), rho * torch.sin(a)
    tx, ty = 1.0, 0.0
    vx, vy = inner * math.cos(sector / 2), inner * math.sin(sector / 2)
    ex, ey = vx - tx, vy - ty
    t = (((qx - tx) * ex + (qy - ty) * ey) / (ex * ex + ey * ey)).clamp(0, 1)
    dist = torch.sqrt((qx - tx - t * ex) ** 2 + (qy - ty - t * ey) ** 2)
    cross = ex * (qy - ty) - ey * (qx - tx)  # > 0 on the origin's side of the edge
    return torch.where(cross > 0, -dist, dist)


def cross(u: Tensor, v: Tensor) -> Tensor:
    return torch.minimum(_box(u, v, 0.9, 0.3), _box(u, v, 0.3, 0.9))


def heart(u: Tensor, v: Tensor) -> Tensor:
    # A diamond with a disc on each of its two upper edges; tip down.
    ru, rv = _rotate45(u, v - 0.1)
    body = _box(ru, rv, 0.566, 0.566)
    lobes = torch.minimum(_disc(u, v, -0.4, -0.3, 0.566), _disc(u, v, 0.4, -0.3, 0.566))
    return torch.minimum(body, lobes)


def crescent(u: Tensor, v: Tensor) -> Tensor:
    return torch.maximum(_disc(u, v, 0.0, 0.0, 0.95), -_disc(u, v, 0.42, -0.3, 0.78))


SDF: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "circle": circle,
    "square": square,
    "triangle": triangle,
    "diamond": diamond,
    "star": star,
    "cross": cross,
    "heart": heart,
    "crescent": crescent,
}
