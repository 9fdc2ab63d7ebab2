"""Maze grids for Maze-v0, the single source of truth, and the geometry derived from them.

The grids are D4RL Maze2D's U-maze (5x5), medium (8x8) and large (9x12) mazes, outer walls included:
``#`` is a wall, ``O`` a free cell and ``G`` the (free) goal cell, in D4RL's far corner. Row 0 is
the top of the picture (largest y), column 0 the left (smallest x); the maze is centred on the
origin. The shipped MJCF scenes ``sim_assets/maze_<name>.xml`` were written from these grids, and a
test checks their wall boxes against :func:`wall_boxes`, so the two cannot drift apart.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import numpy as np

WALL, FREE, GOAL = "#", "O", "G"

CELL_SIZE = 0.5
"""Edge of one grid cell, metres (D4RL uses 1 m with a faster robot; this keeps episodes short)."""

ROBOT_RADIUS = 0.05
"""Radius of the point robot's sphere, metres."""

GRIDS: dict[str, tuple[str, ...]] = {
    "u": (
        "#####",
        "#GOO#",
        "###O#",
        "#OOO#",
        "#####",
    ),
    "medium": (
        "########",
        "#OO##OO#",
        "#OO#OOO#",
        "##OOO###",
        "#OO#OOO#",
        "#O#OO#O#",
        "#OOO#OG#",
        "########",
    ),
    "large": (
        "############",
        "#OOOO#OOOOO#",
        "#O##O#O#O#O#",
        "#OOOOOO#OOO#",
        "#O####O###O#",
        "#OO#O#OOOOO#",
        "##O#O#O#O###",
        "#OO#OOO#OGO#",
        "############",
    ),
}
"""Layout name -> grid rows, top row first."""

Cell = tuple[int, int]
"""A grid cell as ``(row, col)``."""

_STEPS: tuple[Cell, ...] = ((-1, 0), (1, 0), (0, -1), (0, 1))


@dataclass(frozen=True, kw_only=True)
class MazeLayout:
    """One maze: its grid and the geometry experts and planners need.

    Positions are ``(x, y)`` in metres in the plane; cells are ``(row, col)`` of :attr:`grid`.
    """

    name: str
    """Layout name, a key of :data:`GRIDS`."""
    grid: tuple[str, ...]
    """Rows of ``#`` (wall), ``O`` (free) and one ``G`` (goal), top row first."""
    cell_size: float = CELL_SIZE
    """Edge of one cell, metres."""
    robot_radius: float = ROBOT_RADIUS
    """Radius of the robot's sphere, metres."""

    def __post_init__(self) -> None:
        rows = len(self.grid)
        if rows < 3 or any(len(r) != len(self.grid[0]) for r in self.grid):
            raise ValueError(f"grid {self.grid!r} must be a rectangle of at least 3 rows")
        bad = set("".join(self.grid)) - {WALL, FREE, GOAL}
        if bad:
            raise ValueError(f"grid {self.name!r} has characters {sorted(bad)}; expected '#', 'O', 'G'")
        if "".join(self.grid).count(GOAL) != 1:
            raise ValueError(f"grid {self.name!r} must hold exactly one 'G' goal cell")
        border = self.grid[0] + self.grid[-1] + "".join(r[0] + r[-1] for r in self.grid)
        if set(border) != {WALL}:
            raise ValueError(f"grid {self.name!r} must be enclosed by '#' walls")
        if not self.cell_size > 0:
            raise ValueError(f"cell_size {self.cell_size} must be > 0")
        if not 0 < self.robot_radius < 0.5 * self.cell_size:
            raise ValueError(f"robot_radius {self.robot_radius} must lie in (0, cell_size / 2)")
        if len(self.distance_to_goal) != len(self.start_cells) + 1:
            raise ValueError(f"grid {self.name!r} has free cells the goal cannot be reached from")

    @property
    def shape(self) -> tuple[int, int]:
        """``(rows, cols)`` of the grid."""
        return len(self.grid), len(self.grid[0])

    @property
    def extent(self) -> tuple[float, float]:
        """``(width, height)`` of the whole maze, outer walls included, metres."""
        rows, cols = self.shape
        return cols * self.cell_size, rows * self.cell_size

    @cached_property
    def free(self) -> np.ndarray:
        """``(rows, cols)`` read-only bool mask of free cells (the goal included)."""
        mask = np.array([[ch != WALL for ch in row] for row in self.grid])
        mask.flags.writeable = False
        return mask

    @cached_property
    def goal_cell(self) -> Cell:
        """The goal cell."""
        row = next(r for r, line in enumerate(self.grid) if GOAL in line)
        return row, self.grid[row].index(GOAL)

    @cached_property
    def goal(self) -> np.ndarray:
        """``(2,)`` read-only goal position: the centre of :attr:`goal_cell`, metres."""
        goal = self.cell_center(self.goal_cell)
        goal.flags.writeable = False
        return goal

    @cached_property
    def start_cells(self) -> tuple[Cell, ...]:
        """Every free cell except the goal cell, row-major: the episode starts in one of them."""
        rows, cols = self.shape
        return tuple(
            (r, c) for r in range(rows) for c in range(cols) if self.grid[r][c] == FREE
        )

    @cached_property
    def distance_to_goal(self) -> dict[Cell, int]:
        """Shortest path length in cell moves (4-connected) from each reachable free cell to the goal."""
        dist = {self.goal_cell: 0}
        frontier = [self.goal_cell]
        while frontier:
            nxt = []
            for r, c in frontier:
                for dr, dc in _STEPS:
                    cell = (r + dr, c + dc)
                    if cell not in dist and self.grid[cell[0]][cell[1]] != WALL:
                        dist[cell] = dist[(r, c)] + 1
                        nxt.append(cell)
            frontier = nxt
        return dist

    def next_cell(self, cell: Cell) -> Cell:
        """The neighbour of free ``cell`` one move closer to the goal (the goal maps to itself).

        Ties are broken in the fixed order up, down, left, right, so paths are deterministic.
        """
        dist = self.distance_to_goal
        d = dist[cell]
        if d == 0:
            return cell
        r, c = cell
        return next((r + dr, c + dc) for dr, dc in _STEPS if dist.get((r + dr, c + dc)) == d - 1)

    def cell_center(self, cell: Cell) -> np.ndarray:
        """``(2,)`` position of the centre of ``cell``, metres."""
        rows, cols = self.shape
        r, c = cell
        return np.array([(c - 0.5 * (cols - 1)) * self.cell_size, (0.5 * (rows - 1) - r) * self.cell_size])

    def cell_of(self, pos: np.ndarray) -> Cell:
        """The cell holding position ``pos`` (``(2,)``, metres), clipped to the grid."""
        rows, cols = self.shape
        col = math.floor(float(pos[0]) / self.cell_size + 0.5 * cols)
        row = math.floor(0.5 * rows - float(pos[1]) / self.cell_size)
        return min(max(row, 0), rows - 1), min(max(col, 0), cols - 1)


def make_layout(name: str) -> MazeLayout:
    """Build the layout ``name``.

    Raises:
        ValueError: When ``name`` is not a key of :data:`GRIDS`, listing the valid names.
    """
    if name not in GRIDS:
        raise ValueError(f"layout {name!r} is unknown; expected one of {sorted(GRIDS)}")
    return MazeLayout(name=name, grid=GRIDS[name])


def wall_boxes(layout: MazeLayout) -> list[tuple[float, float, float, float]]:
    """The wall boxes the MJCF must hold for ``layout``: ``[(cx, cy, hx, hy), ...]`` in metres.

    Wall cells are merged into rectangles, fewer geoms than one box per cell: maximal horizontal
    runs of ``#`` in each row, then runs with the same columns in consecutive rows stacked into one.
    The list is ordered by top row, then left column.
    """
    rows, _ = layout.shape
    rects: list[tuple[int, int, int, int]] = []  # (top row, bottom row, left col, right col)
    open_runs: dict[tuple[int, int], int] = {}  # (left col, right col) -> top row
    for r in range(rows + 1):
        runs = set()
        if r < rows:
            line = layout.grid[r]
            c = 0
            while c < len(line):
                if line[c] == WALL:
                    start = c
                    while c + 1 < len(line) and line[c + 1] == WALL:
                        c += 1
                    runs.add((start, c))
                c += 1
        for run in [run for run in open_runs if run not in runs]:
            rects.append((open_runs.pop(run), r - 1, *run))
        for run in runs - open_runs.keys():
            open_runs[run] = r
    boxes = []
    s = layout.cell_size
    for r0, r1, c0, c1 in sorted(rects, key=lambda b: (b[0], b[2])):
        (x0, y0), (x1, y1) = layout.cell_center((r0, c0)), layout.cell_center((r1, c1))
        boxes.append((
            float(0.5 * (x0 + x1)),
            float(0.5 * (y0 + y1)),
            0.5 * s * (c1 - c0 + 1),
            0.5 * s * (r1 - r0 + 1),
        ))
    return boxes
