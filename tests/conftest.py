import os

os.environ.setdefault("MUJOCO_GL", "egl")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(2)


@pytest.fixture
def tiny_store(tmp_path):
    """A small PointObstacle dataset written by the real collector."""
    from agents.collect import CollectConfig, collect

    out = tmp_path / "tiny.zarr"
    collect(CollectConfig(out=str(out), episodes=6, seed=0), progress=False)
    return out
