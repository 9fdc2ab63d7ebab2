"""Layering: envs never import torch, policies never import mujoco, nothing imports agents."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = {"envs": {"torch", "policies", "planners", "agents"},
             "policies": {"mujoco", "envs", "planners", "agents"},
             "planners": {"agents"},
             "sim_assets": {"torch", "mujoco", "envs", "policies", "planners", "agents"}}


def _imports(path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module.split(".")[0]


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_no_forbidden_imports_in_source(package):
    bad = [(str(p.relative_to(ROOT)), name) for p in (ROOT / package).rglob("*.py")
           for name in _imports(p) if name in FORBIDDEN[package]]
    assert not bad


@pytest.mark.parametrize(("package", "absent"), [("envs", "torch"), ("policies", "mujoco")])
def test_importing_a_package_does_not_load_the_forbidden_one(package, absent):
    code = f"import sys, {package}; print({absent!r} in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
