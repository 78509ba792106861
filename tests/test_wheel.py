"""A wheel behaves like the checkout: its package data (the named teacher sets) travels, so
`distill score --teachers offline` scores with brisque, piqe and technical from a plain install."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from distill.sources import packaged_photos

ROOT = Path(__file__).resolve().parents[1]


def test_installed_wheel_knows_the_offline_teacher_set(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "-q", "-w", str(tmp_path / "dist"), str(ROOT)],
                   check=True, capture_output=True, timeout=300)
    (wheel,) = (tmp_path / "dist").glob("distill-*.whl")
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target",
                    str(site), str(wheel)], check=True, capture_output=True, timeout=300)
    image = packaged_photos()[0]
    # Run outside the checkout, with the installed copy first on the path.
    env = {**os.environ, "PYTHONPATH": str(site)}
    where = subprocess.run([sys.executable, "-c", "import distill; print(distill.__file__)"],
                           cwd=tmp_path, env=env, capture_output=True, text=True, check=True)
    assert Path(where.stdout.strip()).is_relative_to(site)
    result = subprocess.run([sys.executable, "-m", "distill.cli", "score", str(image),
                             "--teachers", "offline", "--format", "json", "--no-progress"],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
                            check=False)
    assert result.returncode == 0, result.stderr
    (row,) = json.loads(result.stdout)
    assert {"score_brisque", "score_piqe", "score_technical"} <= set(row)
