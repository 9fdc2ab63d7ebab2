"""Roadmaps for high-level planning: nodes in the plane, edges between them, A* shortest paths."""

from __future__ import annotations

import heapq
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True, eq=False)
class Roadmap:
    """A graph over positions: ``nodes[i]`` is a point, ``edges[i]`` the nodes it connects to."""

    nodes: np.ndarray
    """``(N, 2)`` node positions, metres."""
    edges: tuple[tuple[int, ...], ...]
    """Neighbours of each node (undirected: each edge is listed at both ends)."""
    locate: Callable[[np.ndarray], int] = field(repr=False)
    """``(2,) position -> node`` the robot is at (for a grid: the cell it stands in)."""

    def __post_init__(self) -> None:
        if self.nodes.ndim != 2 or len(self.edges) != len(self.nodes):
            raise ValueError(f"roadmap has {len(self.nodes)} nodes and {len(self.edges)} edge lists; "
                             "expected (N, 2) nodes and one edge list per node")

    def shortest_path(self, start: int, goal: int,
                      penalties: dict[tuple[int, int], float] | None = None) -> list[int]:
        """A* from ``start`` to ``goal`` with Euclidean edge lengths (plus ``penalties[(i, j)]``).

        Returns:
            Node indices from ``start`` to ``goal`` inclusive, or ``[]`` when ``goal`` is unreachable.
        """
        penalties = penalties or {}
        nodes = self.nodes
        heuristic = np.linalg.norm(nodes - nodes[goal], axis=1)  # admissible: straight lines
        best = {start: 0.0}
        parent: dict[int, int] = {}
        frontier = [(float(heuristic[start]), 0.0, start)]
        while frontier:
            _, cost, node = heapq.heappop(frontier)
            if node == goal:
                path = [goal]
                while path[-1] != start:
                    path.append(parent[path[-1]])
                return path[::-1]
            if cost > best[node]:
                continue
            for nxt in self.edges[node]:
                step = float(np.linalg.norm(nodes[nxt] - nodes[node])) + penalties.get((node, nxt), 0.0)
                if cost + step < best.get(nxt, np.inf):
                    best[nxt] = cost + step
                    parent[nxt] = node
                    heapq.heappush(frontier, (cost + step + float(heuristic[nxt]), cost + step, nxt))
        return []


def grid_roadmap(layout) -> Roadmap:
    """The 4-connected roadmap of a grid maze's free cells (``envs.maze_layouts.MazeLayout``).

    Args:
        layout: Any object with ``free`` (``(rows, cols)`` bool), ``cell_center(cell)`` and
            ``cell_of(pos)``.
    """
    free = np.asarray(layout.free)
    cells = [tuple(int(v) for v in c) for c in np.argwhere(free)]
    index = {c: i for i, c in enumerate(cells)}
    nodes = np.array([layout.cell_center(c) for c in cells], dtype=np.float64)
    edges = tuple(tuple(index[(r + dr, c + dc)] for dr, dc in ((-1, 0), (1, 0), (0, -1), (0, 1))
                        if (r + dr, c + dc) in index) for r, c in cells)

    def locate(pos: np.ndarray) -> int:
        cell = tuple(layout.cell_of(pos))
        if cell in index:
            return index[cell]
        # Contact can push the centre a hair into a wall cell: take the nearest free cell then.
        return int(np.argmin(np.linalg.norm(nodes - np.asarray(pos)[:2], axis=1)))

    return Roadmap(nodes=nodes, edges=edges, locate=locate)
