"""`distill cull`: dry run, --link, --move, --xmp merged into an existing sidecar, and an
interrupted run resumed with no photo done twice and none lost."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from distill.cull import JOURNAL, CullOptions, cull
from distill.xmp import rating_from_quality, read_sidecar
from students import create_student
from students.checkpoint import save_student
from students.preprocess import policy
from tests.test_label import _photos

EXISTING_SIDECAR = """<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>
<x:xmpmeta xmlns:x="adobe:ns:meta/">
 <rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">
  <rdf:Description rdf:about="" xmlns:dc="http://purl.org/dc/elements/1.1/"
    xmlns:xmp="http://ns.adobe.com/xap/1.0/" xmp:Rating="1" xmp:CreatorTool="darktable">
   <dc:subject><rdf:Bag><rdf:li>holiday</rdf:li></rdf:Bag></dc:subject>
  </rdf:Description>
 </rdf:RDF>
</x:xmpmeta>
<?xpacket end="w"?>"""


@pytest.fixture(scope="module")
def student_file(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    model = create_student("tiny")
    path = tmp_path_factory.mktemp("student") / "student.pt"
    save_student(path, model.eval(), "tiny", {}, policy(64), {"note": "random, for tests"})
    return path


@pytest.fixture()
def folder(skimage_photos, tmp_path) -> Path:
    photos = tmp_path / "photos"
    (photos / "trip").mkdir(parents=True)
    for index, image in enumerate(_photos(skimage_photos)):
        image.save(photos / ("trip" if index % 2 else ".") / f"img{index:02d}.jpg", quality=90)
    (photos / "broken.jpg").write_text("not a photo")
    return photos


def _bytes(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*.jpg")}


def test_dry_run_reports_and_touches_nothing(folder, student_file, tmp_path):
    before = _bytes(folder)
    result = cull(folder, student_file, dest=tmp_path / "out", progress=False)
    assert (result["keep"] + result["trash"], result["error"]) == (12, 1)
    rows = (tmp_path / "out" / "cull.csv").read_text().splitlines()
    assert rows[0] == "image,quality,keep_prob,decision,tier,action,error" and len(rows) == 14
    assert _bytes(folder) == before and not (tmp_path / "out" / "keep").exists()


def test_link_sorts_without_touching_originals(folder, student_file, tmp_path):
    before = _bytes(folder)
    result = cull(folder, student_file, dest=tmp_path / "out", options=CullOptions(action="link"),
                  progress=False)
    linked = _bytes(tmp_path / "out" / "keep") | _bytes(tmp_path / "out" / "trash")
    assert len(linked) == result["keep"] + result["trash"] == 12
    assert _bytes(folder) == before
    assert all(linked[name] == before[name] for name in linked)


def test_xmp_merges_an_existing_sidecar(folder, student_file, tmp_path):
    photo = folder / "img00.jpg"
    photo.with_suffix(".xmp").write_text(EXISTING_SIDECAR, encoding="utf-8")
    cull(folder, student_file, dest=tmp_path / "out", options=CullOptions(xmp=True), progress=False)
    with (tmp_path / "out" / "cull.csv").open(newline="") as handle:
        report = {row["image"]: row for row in csv.DictReader(handle)}
    merged = read_sidecar(photo.with_suffix(".xmp"))
    text = photo.with_suffix(".xmp").read_text(encoding="utf-8")
    assert merged["xmp:CreatorTool"] == "darktable" and "holiday" in text, "kept what was there"
    assert text.startswith("<?xpacket begin") and text.rstrip().endswith('<?xpacket end="w"?>')
    assert merged["xmp:Rating"] == str(rating_from_quality(float(report["img00.jpg"]["quality"])))
    assert merged["digiKam:PickLabel"] == str(int(report["img00.jpg"]["tier"]) + 1)
    fresh = read_sidecar(folder / "trip" / "img01.jpg.xmp")  # no sidecar before: digiKam's name
    assert set(fresh) >= {"xmp:Rating", "digiKam:PickLabel"}


def test_interrupted_move_resumes_without_loss_or_repeats(folder, student_file, tmp_path):
    before = _bytes(folder)
    dest = tmp_path / "out"
    command = [sys.executable, "-m", "distill.cli", "cull", str(folder), "--model", str(student_file),
               "--move", "--dest", str(dest), "--batch-size", "2", "--no-progress"]
    process = subprocess.Popen(command, env=dict(os.environ, OMP_NUM_THREADS="1"),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    journal = dest / JOURNAL
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if journal.exists() and journal.read_text().count('"done": true') >= 4:
            break
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.wait()
    moved_at_kill = len(_bytes(dest / "keep")) + len(_bytes(dest / "trash")) if dest.exists() else 0
    assert 0 < moved_at_kill < 12, f"kill landed after {moved_at_kill} moves"

    result = subprocess.run(command, capture_output=True, text=True, check=False, timeout=300)
    assert result.returncode == 0, result.stderr
    sorted_photos = _bytes(dest / "keep") | _bytes(dest / "trash")
    assert sorted_photos == {k: v for k, v in before.items() if k != "broken.jpg"}, "none lost"
    assert set(_bytes(dest / "keep")).isdisjoint(_bytes(dest / "trash")), "none twice"
    rows = (dest / "cull.csv").read_text().splitlines()[1:]
    assert len(rows) == 13 and len({r.split(",")[0] for r in rows}) == 13
