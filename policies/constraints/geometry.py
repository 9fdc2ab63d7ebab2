"""Signed distances to sphere, capsule and box obstacles, in torch (differentiable).

The twin of ``envs.constraints.Obstacle.signed_distance`` for code that may not import MuJoCo; the
obstacles arrive as the plain dicts of ``ConstraintSpec.to_dict()["obstacles"]``.
"""

from __future__ import annotations

from typing import Any

import torch

OBSTACLE_KINDS = ("sphere", "capsule", "box")


class Obstacles:
    """Static obstacles as tensors, one signed-distance call for all of them.

    Args:
        docs: Obstacles as dicts with ``kind``, ``position`` (3,), ``size`` (3,), ``rotation`` (3, 3).
        dtype: Floating type.

    Raises:
        ValueError: On an unknown obstacle kind, naming it.
    """

    def __init__(self, docs: list[dict[str, Any]], dtype: torch.dtype = torch.float64) -> None:
        for doc in docs:
            if doc["kind"] not in OBSTACLE_KINDS:
                raise ValueError(f"obstacle kind {doc['kind']!r} is not supported; expected one of "
                                 f"{OBSTACLE_KINDS}")
        self.kinds = [doc["kind"] for doc in docs]
        self.names = [doc.get("name", f"obstacle_{i}") for i, doc in enumerate(docs)]
        n = len(docs)
        self.position = torch.tensor([doc["position"] for doc in docs], dtype=dtype).reshape(n, 3)
        self.size = torch.tensor([doc["size"] for doc in docs], dtype=dtype).reshape(n, 3)
        self.rotation = torch.tensor([doc["rotation"] for doc in docs], dtype=dtype).reshape(n, 3, 3)

    def __len__(self) -> int:
        return len(self.kinds)

    def signed_distance(self, points: torch.Tensor) -> torch.Tensor:
        """Signed distance from points to each obstacle's surface (negative inside).

        Args:
            points: [..., 3] world points.

        Returns:
            [..., O] distances, metres.
        """
        # Every obstacle's local frame at once: local = (p - c) R.
        local = torch.einsum("...oa,oab->...ob", points[..., None, :] - self.position, self.rotation)
        out = []
        for o, kind in enumerate(self.kinds):
            p, size = local[..., o, :], self.size[o]
            if kind == "sphere":
                out.append(p.norm(dim=-1) - size[0])
            elif kind == "capsule":
                axial = p[..., 2].clamp(-size[1], size[1])
                radial = torch.stack([p[..., 0], p[..., 1], p[..., 2] - axial], dim=-1)
                out.append(radial.norm(dim=-1) - size[0])
            else:
                q = p.abs() - size
                outside = q.clamp_min(0.0).norm(dim=-1)
                out.append(outside + q.max(dim=-1).values.clamp_max(0.0))
        return torch.stack(out, dim=-1)
