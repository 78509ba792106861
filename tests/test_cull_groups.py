"""Culling as photographers expect it: similar-shot groups with a best pick, capture-time
bursts, a keep rate, a reason for every decision, camera RAW and HEIC files (real DNG and
HEIC files written here, not mocks), RAW+JPEG pairs, and the review page."""

from __future__ import annotations

import html.parser
import re
import shutil
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFilter

from benchmarks.burst_groups import build_bursts, burst_sources, write_exif_time
from benchmarks.camera_files import write_dng, write_heic
from distill.culling import CullOptions, DecideOptions, cull
from distill.xmp import read_sidecar
from tests.test_cull import _hashes, _report, assert_each_photo_once, cli

SCENES = ("chelsea-whole", "china-left", "china-right", "coffee-left", "rocket-whole")


@pytest.fixture(scope="module")
def bursts(tmp_path_factory) -> tuple[Path, list[dict]]:
    """Five bursts of 3-4 frames, one of them sharp; china's two halves are different shots."""
    folder = tmp_path_factory.mktemp("bursts") / "DCIM"
    sources = {k: v for k, v in burst_sources().items() if k in SCENES}
    return folder, build_bursts(folder, seed=3, sources=sources, frames=(3, 4))


def _copy(folder: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(folder, tmp_path / "DCIM"))


def test_similar_shots_are_grouped_and_the_best_is_kept(bursts, student_file, tmp_path):
    folder = _copy(bursts[0], tmp_path)
    before = _hashes(folder)
    result = cull(folder, student_file, dest=tmp_path / "out", progress=False, html=True,
                  options=CullOptions(decide=DecideOptions(keep_threshold=0.0)))
    report = _report(tmp_path / "out" / "cull.csv")
    truth = {row["file"]: row["burst"] for row in bursts[1]}
    sharp = {row["file"] for row in bursts[1] if row["sharp"]}
    groups = {}
    for image, row in report.items():
        groups.setdefault(row["group_id"], set()).add(truth[image])
    assert all(len(scenes) == 1 for scenes in groups.values()), "no group mixes two bursts"
    assert len(groups) == len(SCENES) == result["groups"], "each burst is one group"
    for members in ({i for i, r in report.items() if r["group_id"] == g} for g in groups):
        rows = [report[i] for i in members]
        (best,) = [r for r in rows if r["best_in_group"] == "True"]
        assert float(best["quality"]) == max(float(r["quality"]) for r in rows)
        assert best["decision"] == "keep"
        if len({r["quality"] for r in rows}) == 1:  # the random student ties: focus decides
            assert best["image"] in sharp
            focus, runner_up = re.search(r"sharpest of (\d+): focus ([\d.]+) vs ([\d.]+)",
                                         best["reason"]).group(2, 3)
            assert float(focus) > float(runner_up)
        else:
            assert "best of" in best["reason"]
        for row in rows:
            if row is not best:
                assert row["decision"] == "trash" and row["similar_to"] == best["image"]
                assert row["reason"].endswith(f"similar to {best['image']} "
                                              f"(quality {float(best['quality']):.2f})")
    assert _hashes(folder) == before
    _check_review_page(Path(result["html"]), len(report), tmp_path)


def _check_review_page(page: Path, photos: int, tmp_path: Path) -> None:
    class Images(html.parser.HTMLParser):
        def __init__(self):
            super().__init__()
            self.sources, self.badges = [], 0

        def handle_starttag(self, tag, attrs):
            attrs = dict(attrs)
            if tag == "img":
                self.sources.append(attrs["src"])
            if tag == "span" and attrs.get("class") == "badge":
                self.badges += 1

    parser = Images()
    parser.feed(page.read_text(encoding="utf-8"))
    assert len(parser.sources) == photos and parser.badges == len(SCENES), "one best per group"
    assert all((page.parent / src).is_file() and src.startswith("thumbs/")
               for src in parser.sources), "thumbnails, never the full files"
    chromium = shutil.which("chromium")
    if chromium:  # the real client: Debian's chromium, as benchmarks/screenshot_html.py runs it
        from benchmarks.screenshot_html import check

        checked = check(page, tmp_path, chromium)
        print(f"review page screenshot: {checked['screenshot']}")
        assert checked["screenshot_exists"] and checked["broken_images"] == 0
        assert checked["console_errors"] == []


def test_burst_seconds_keeps_shots_apart_in_time(bursts, student_file, tmp_path):
    folder = tmp_path / "DCIM"
    folder.mkdir()
    frames = sorted(row["file"] for row in bursts[1] if row["burst"] == "chelsea-whole")
    start = datetime(2026, 6, 13, 14, 0)
    for index, name in enumerate(frames):  # the last frame is taken a minute later
        taken = start + timedelta(seconds=0.4 * index if index < len(frames) - 1 else 60)
        Image.open(bursts[0] / name).save(folder / name, quality=92, exif=write_exif_time(taken))
    for burst_seconds, expected in ((None, 1), (2.0, 2)):
        out = tmp_path / f"out-{burst_seconds}"
        cull(folder, student_file, dest=out, progress=False,
             options=CullOptions(decide=DecideOptions(burst_seconds=burst_seconds)))
        report = _report(out / "cull.csv")
        assert len({row["group_id"] for row in report.values()}) == expected
        assert all(row["taken_at"].startswith("2026:06:13 14:0") for row in report.values())


@pytest.fixture()
def twelve(skimage_photos, tmp_path) -> Path:
    from tests.test_label import _photos

    folder = tmp_path / "photos"
    folder.mkdir()
    for index, image in enumerate(_photos(skimage_photos)):
        image.save(folder / f"img{index:02d}.jpg", quality=90)
    return folder


@pytest.mark.parametrize("rate, mode, kept", [("0.25", None, 3), (None, "aggressive", 2),
                                              (None, "conservative", 6)])
def test_a_keep_rate_keeps_the_best_fraction(rate, mode, kept, twelve, student_file, tmp_path):
    args = ["--keep-rate", rate] if rate else ["--mode", mode]
    result = cli(twelve, "--model", student_file, "--no-groups", "--dest", tmp_path / "out",
                 *args)
    assert result.returncode == 0, result.stderr
    report = _report(tmp_path / "out" / "cull.csv")
    ranked = sorted(report.values(), key=lambda r: -float(r["keep_prob"]))
    assert [r["decision"] for r in ranked] == ["keep"] * kept + ["trash"] * (12 - kept)
    assert all(r["reason"].startswith("in the best") for r in ranked[:kept])
    assert all(r["reason"].startswith("below the best") for r in ranked[kept:])
    assert f"keep {kept} " in result.stdout


def test_keep_rate_and_mode_together_are_refused(twelve, student_file):
    result = cli(twelve, "--model", student_file, "--keep-rate", "0.3", "--mode", "moderate")
    assert result.returncode == 2 and "not both" in result.stderr


def test_every_decision_has_a_reason_and_problems_are_named(photo, student_file, tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    pixels = np.asarray(photo, dtype=np.float64)
    noise = np.random.default_rng(0).normal(0, 40, pixels.shape)
    damaged = {
        "blurry": photo.filter(ImageFilter.GaussianBlur(6)),
        "under-exposed": Image.fromarray((pixels * 0.08).astype(np.uint8)),
        "over-exposed": Image.fromarray((255 - (255 - pixels) * 0.08).astype(np.uint8)),
        "noisy": Image.fromarray(np.clip(pixels + noise, 0, 255).astype(np.uint8)),
    }
    for name, image in damaged.items():
        image.save(folder / f"{name}.png")
    cull(folder, student_file, dest=tmp_path / "out", progress=False,
         options=CullOptions(xmp=True, decide=DecideOptions(keep_threshold=1.0, group=False)))
    report = _report(tmp_path / "out" / "cull.csv")
    for name in damaged:
        row = report[f"{name}.png"]
        assert name in row["flags"].split(","), (name, row["flags"])
        assert row["decision"] == "trash" and row["reason"].startswith(row["flags"].replace(",", ", "))
        keywords = read_sidecar(folder / f"{name}.png.xmp")["Xmp.dc.subject"]
        assert f"distill/{name}" in keywords.split(", ")
    assert all(row["reason"] for row in report.values())


def test_raw_heic_and_raw_plus_jpeg_pairs(skimage_photos, student_file, tmp_path):
    """Real camera formats: a DNG with an embedded preview, one without (half-size demosaic),
    a HEIC, and a RAW+JPEG pair that is decided once and moved together, sidecars included."""
    folder = tmp_path / "card"
    folder.mkdir()
    images = {name: Image.open(path).convert("RGB") for name, path in skimage_photos.items()}
    when = datetime(2026, 6, 13, 14, 0)
    images["astronaut"].save(folder / "IMG_0001.JPG", quality=92)
    write_dng(images["astronaut"], folder / "IMG_0001.DNG", preview_side=1024, taken=when)
    write_dng(images["chelsea"].resize((1200, 800)), folder / "IMG_0002.DNG",
              preview_side=1200, taken=when + timedelta(minutes=1))
    write_dng(images["coffee"], folder / "IMG_0003.DNG", taken=when + timedelta(minutes=2))
    write_heic(images["rocket"], folder / "IMG_0004.HEIC", taken=when + timedelta(minutes=3))
    (folder / "IMG_0001.DNG.xmp").write_text(_lightroom_style(), encoding="utf-8")
    before = _hashes(folder)
    dest = tmp_path / "sorted"
    result = cull(folder, student_file, dest=dest, progress=False,
                  options=CullOptions(action="move", xmp=True))
    report = _report(dest / "cull.csv")
    assert sorted(report) == ["IMG_0001.JPG", "IMG_0002.DNG", "IMG_0003.DNG", "IMG_0004.HEIC"]
    assert result["error"] == 0 and report["IMG_0001.JPG"]["companions"] == "IMG_0001.DNG"
    assert report["IMG_0003.DNG"]["taken_at"] == "2026:06:13 14:02:00.00"
    assert report["IMG_0004.HEIC"]["taken_at"] == "2026:06:13 14:03:00"
    assert_each_photo_once(before, folder, dest)
    pair = Path(report["IMG_0001.JPG"]["target"])
    assert pair.with_suffix(".DNG").is_file(), "the RAW travels with its JPEG"
    raw_sidecar = read_sidecar(pair.with_suffix(".DNG.xmp"))
    assert raw_sidecar["Xmp.xmp.Rating"] == report["IMG_0001.JPG"]["rating"]
    assert raw_sidecar["Xmp.xmp.CreatorTool"] == "Adobe Lightroom", "the RAW's sidecar merged"
    assert read_sidecar(pair.with_name(pair.name + ".xmp"))["Xmp.digiKam.PickLabel"] == \
        report["IMG_0001.JPG"]["pick_label"]
    for name in ("IMG_0002.DNG", "IMG_0003.DNG", "IMG_0004.HEIC"):
        sidecar = Path(report[name]["target"] + ".xmp")
        assert read_sidecar(sidecar)["Xmp.digiKam.PickLabel"] == report[name]["pick_label"]


def _lightroom_style() -> str:
    return ('<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF '
            'xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"><rdf:Description '
            'rdf:about="" xmlns:xmp="http://ns.adobe.com/xap/1.0/" '
            'xmp:CreatorTool="Adobe Lightroom" xmp:Rating="2"/></rdf:RDF></x:xmpmeta>')


def test_label_and_score_read_raw_and_heic(skimage_photos, tmp_path):
    from tests.test_faults import distill

    folder = tmp_path / "card"
    folder.mkdir()
    image = Image.open(skimage_photos["coffee"]).convert("RGB")
    write_dng(image, folder / "a.dng", preview_side=1024)
    write_dng(image, folder / "b.dng")
    write_heic(image, folder / "c.heic")
    result = distill("label", "--source", folder, "--out", tmp_path / "run", "--no-progress",
                     "--teachers", "piqe,technical")
    assert result.returncode == 0 and "labeled 3  errors 0" in result.stdout, result.stderr
    scored = distill("score", folder, "--teachers", "technical", "--format", "csv")
    assert scored.returncode == 0 and scored.stdout.count("\n") == 4, scored.stderr
