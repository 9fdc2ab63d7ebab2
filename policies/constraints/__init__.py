"""Constraint enforcement inside sampling: a spec (plain data) held on action chunks.

``ChunkConstraint`` (chunk.py) is what a policy holds; the math lives in pure functions
(solvers.py), the robot's differentiable twin in robot.py and obstacle distances in geometry.py.
"""

from policies.constraints.chunk import METHODS, ChunkConstraint, ChunkConstraintConfig
from policies.constraints.geometry import Obstacles
from policies.constraints.robot import LinearRollout, TorchRobot

__all__ = ["METHODS", "ChunkConstraint", "ChunkConstraintConfig", "LinearRollout", "Obstacles",
           "TorchRobot"]
