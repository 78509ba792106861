"""Sources stage: where images come from.

For now: local files and folders (see `decode.find_images`) and the sample photos that
installed packages ship, which are the offline default input.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from distill.decode import IMAGE_EXTENSIONS


def _package_dir(module: str) -> Path | None:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(spec.submodule_search_locations[0])


def packaged_photos() -> list[Path]:
    """Real photos shipped by scikit-image, matplotlib and pyiqa, found without a download."""
    folders = []
    if skimage := _package_dir("skimage"):
        folders.append(skimage / "data")
    if matplotlib := _package_dir("matplotlib"):
        folders.append(matplotlib / "mpl-data" / "sample_data")
    if pyiqa := _package_dir("pyiqa"):
        folders += [pyiqa.parent / "ResultsCalibra" / "dist_dir",
                    pyiqa.parent / "ResultsCalibra" / "ref_dir"]
    return sorted(
        path for folder in folders if folder.is_dir() for path in folder.rglob("*")
        if path.suffix.lower() in IMAGE_EXTENSIONS
    )
