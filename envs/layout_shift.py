"""Layout shifts: moving a task's obstacles or goal outside the support of its training data.

A task that supports them has a method ``shift_layout(rng, kind) -> dict`` (the domain-randomization
presets ``obstacle_shift`` and ``goal_shift`` call it before every reset). The shift holds for the
episodes that follow until the next call; ``kind="none"`` restores the nominal scene.
"""

from __future__ import annotations

LAYOUT_KINDS = ("none", "obstacle", "goal")
"""What a layout shift moves: nothing (the nominal scene), the obstacles, or the goal."""


def check_layout_kind(task: str, kind: str) -> None:
    """Raise a one-line error naming ``task`` when ``kind`` is not a layout kind."""
    if kind not in LAYOUT_KINDS:
        raise ValueError(f"{task} cannot shift its layout by kind {kind!r}; expected one of "
                         f"{list(LAYOUT_KINDS)}")
