"""Planners over MuJoCo models: sampling MPC, trajectory diffusion, hierarchical, dynamics guard.

``envs`` is imported first: it sets ``MUJOCO_GL=egl`` (unless the user chose) before any planner
module imports mujoco, which reads the variable once, at import; a headless process that imports
mujoco first would reach for a window (GLFW) and abort at its first render.
"""

import envs  # noqa: F401
