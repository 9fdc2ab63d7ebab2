"""Every library that imports mujoco has it render through EGL unless the user chose otherwise.

mujoco picks its GL backend from MUJOCO_GL once, when it is imported; ``envs`` sets the default.
A module that imports mujoco before ``envs`` gets GLFW, and the first offscreen render of a headless
process aborts (``kinodiff eval`` renders a video by default).
"""

import os
import subprocess
import sys

import pytest

CHECK = ("import sys, importlib; importlib.import_module(sys.argv[1]); import mujoco; "
         "print(mujoco.GLContext.__module__)")


@pytest.mark.parametrize("module", ["envs", "planners.dynamics_guard", "planners.sampling",
                                    "agents.rollout.actors", "agents.evaluate", "agents.collect"])
def test_mujoco_renders_headless_whichever_library_comes_first(module):
    env = {k: v for k, v in os.environ.items() if k != "MUJOCO_GL"}
    backend = subprocess.run([sys.executable, "-c", CHECK, module], env=env, capture_output=True,
                             text=True, check=True).stdout.strip()
    assert backend == "mujoco.egl", f"importing {module} first gives {backend}"
