"""MJCF scenes and robots shipped with kinodiff."""

from importlib import resources
from pathlib import Path


def asset_path(name: str) -> Path:
    """Return the path of a shipped MJCF file.

    Args:
        name: File name inside ``sim_assets`` (e.g. ``"point_obstacle.xml"``).

    Raises:
        FileNotFoundError: When no such asset ships, naming the valid ones.
    """
    root = resources.files(__name__)
    path = Path(str(root.joinpath(name)))
    if not path.is_file():
        valid = sorted(p.name for p in Path(str(root)).glob("*.xml"))
        raise FileNotFoundError(f"unknown asset {name!r}; expected one of {valid}")
    return path
