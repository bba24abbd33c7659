"""Real photos that installed packages ship (matplotlib, scikit-image), for validation and tests.

Found by path, without importing those packages, so the lookup costs nothing.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

_MATPLOTLIB = ("mpl-data/sample_data/grace_hopper.jpg",)
_SKIMAGE = ("data/chelsea.png", "data/coffee.png", "data/astronaut.png", "data/rocket.jpg", "data/camera.png")


def _package_dir(name: str) -> Path | None:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def sample_photos() -> list[Path]:
    """Paths of the sample photos found: grace_hopper.jpg, then scikit-image's (camera is grayscale)."""
    found: list[Path] = []
    for package, names in (("matplotlib", _MATPLOTLIB), ("skimage", _SKIMAGE)):
        root = _package_dir(package)
        if root is not None:
            found += [root / n for n in names if (root / n).is_file()]
    return found
