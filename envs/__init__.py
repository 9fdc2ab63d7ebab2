"""MuJoCo tasks behind the Gymnasium API, their experts and constraint specs.

Importing this package registers every ``kinodiff/*`` task with Gymnasium. ``envs`` never
imports torch.
"""

import os

# Offscreen rendering must not reach for a window: GLFW aborts a headless process. EGL works on
# a CPU through Mesa. A user's own MUJOCO_GL choice wins.
os.environ.setdefault("MUJOCO_GL", "egl")

from envs.registry import ENV_SPECS, list_envs, make_env, make_expert, register_envs  # noqa: E402

register_envs()

__all__ = ["ENV_SPECS", "list_envs", "make_env", "make_expert", "register_envs"]
