"""Torch policies: diffusion and baseline behaviour cloning, normalizers, save/load.

``policies`` never imports mujoco: a deployed policy needs neither MuJoCo nor the envs.
"""

from policies.base import Policy, PolicyConfig
from policies.io import load_policy, save_policy
from policies.registry import POLICIES, make_policy, register_policy

__all__ = ["POLICIES", "Policy", "PolicyConfig", "load_policy", "make_policy", "register_policy",
           "save_policy"]
