"""Real photos of 1-15 megapixels for the benchmarks: KDE Plasma's wallpapers from Debian.

`plasma-workspace-wallpapers` ships ~30 wallpapers, most of them photographs, each at a dozen
resolutions; the largest JPEG of each is kept (1-15 MP). The package is fetched with
`apt-get download` and unpacked with `dpkg -x` into a cache folder, once; the packaged photos
of scikit-image and friends of at least 1 MP are added.

    python benchmarks/real_photos.py    # fetch and list
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from PIL import Image

from distill.sources import packaged_photos

PACKAGE = "plasma-workspace-wallpapers"
CACHE = Path(os.environ.get("DISTILL_BENCH_CACHE", Path.home() / ".cache" / "distill-bench"))
MIN_MEGAPIXELS = 1.0


def unpacked(package: str = PACKAGE, inside: str = "usr/share/wallpapers") -> Path:
    """`inside` of a Debian package, fetched with `apt-get download` and unpacked with
    `dpkg -x` into the cache folder, once."""
    root = CACHE / package
    if not (root / inside).is_dir():
        CACHE.mkdir(parents=True, exist_ok=True)
        subprocess.run(["apt-get", "download", package], cwd=CACHE, check=True,
                       capture_output=True)
        deb = next(CACHE.glob(f"{package}_*.deb"))
        subprocess.run(["dpkg", "-x", str(deb), str(root)], check=True)
        deb.unlink()
    return root / inside


def _megapixels(path: Path) -> float:
    with Image.open(path) as image:
        return image.width * image.height / 1e6


def real_photos() -> list[Path]:
    """The largest JPEG of each wallpaper, and the packaged photos of ≥ 1 MP; [] (and a
    note) when apt cannot fetch the package."""
    try:
        wallpapers = unpacked()
    except (OSError, subprocess.CalledProcessError, StopIteration) as exc:
        print(f"real photos: cannot fetch {PACKAGE} ({exc}); using packaged photos only")
        wallpapers = None
    chosen = []
    for folder in sorted(wallpapers.iterdir()) if wallpapers else []:
        jpegs = [p for p in (folder / "contents").rglob("*.jpg") if "dark" not in p.parent.name]
        if jpegs:
            chosen.append(max(jpegs, key=_megapixels))
    chosen += [p for p in packaged_photos() if p.suffix.lower() in (".jpg", ".jpeg", ".png")
               and _megapixels(p) >= MIN_MEGAPIXELS]
    return [p for p in chosen if _megapixels(p) >= MIN_MEGAPIXELS]


if __name__ == "__main__":
    for path in real_photos():
        print(f"{_megapixels(path):5.1f} MP  {path}")
