"""`distill cull`: dry run, --link, --move, --xmp merged through exiv2, interrupted and faulty
runs that lose nothing. Every test that culls checks that the originals are byte-identical
and that each photo is in exactly one place (`assert_each_photo_once`).

The numbered cases are the defects of the reliability issue, each of which failed before it
was fixed: (1) a `photo.xmp` sidecar moved onto its photo, (2) a half copy on another file
system counted as done, (3) exiftool's one-Description-per-namespace sidecars, (4) unparsable
sidecars stopping the run, (7) two camera cards into one destination, (8) two runs on one
destination, (9) pick labels that disagreed with the folder, (10) one-line errors.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import exiv2
import pytest
import torch
from PIL import Image

from distill import safefs
from distill.culling import JOURNAL, CullOptions, DecideOptions, cull
from distill.xmp import PICK_LABEL, RATING, read_sidecar, write_sidecar
from tests.killing import killed_after
from tests.test_label import _photos

FIXTURES = Path(__file__).parent / "fixtures"
DARKTABLE_SIDECAR = """<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>
<x:xmpmeta xmlns:x="adobe:ns:meta/">
 <rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">
  <rdf:Description rdf:about="" xmlns:dc="http://purl.org/dc/elements/1.1/"
    xmlns:xmp="http://ns.adobe.com/xap/1.0/" xmp:Rating="1" xmp:CreatorTool="darktable">
   <dc:subject><rdf:Bag><rdf:li>holiday</rdf:li></rdf:Bag></dc:subject>
  </rdf:Description>
 </rdf:RDF>
</x:xmpmeta>
<?xpacket end="w"?>"""
HOSTILE_SIDECARS = {
    "garbage": b"\x89not xml at all\x00\xff",
    "utf16": DARKTABLE_SIDECAR.replace("\ufeff", "").encode("utf-16"),
    "billion_laughs": b'<?xml version="1.0"?><!DOCTYPE l [<!ENTITY a "ha">'
                      b'<!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">]><l>&b;</l>',
    "xxe": b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]><x>&e;</x>',
}


@pytest.fixture()
def folder(skimage_photos, tmp_path) -> Path:
    photos = tmp_path / "photos"
    (photos / "trip").mkdir(parents=True)
    for index, image in enumerate(_photos(skimage_photos)):
        image.save(photos / ("trip" if index % 2 else ".") / f"img{index:02d}.jpg", quality=90)
    (photos / "broken.jpg").write_text("not a photo")
    return photos


PHOTO_SUFFIXES = (".jpg", ".png", ".dng", ".heic")


def _hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and not p.name.startswith(".")
            and p.suffix in (*PHOTO_SUFFIXES, ".xmp")}


def assert_each_photo_once(before: dict[str, str], *roots: Path) -> None:
    """Every original photo, byte for byte, in exactly one place under `roots`; nothing else
    with a photo's name, and no temporary file left behind."""
    found: dict[str, list[str]] = {}
    for root in roots:
        for path in (p for p in root.rglob("*") if p.suffix in PHOTO_SUFFIXES and p.is_file()):
            if "culled" in path.relative_to(root).parts and root.name != "culled":
                continue  # a default dest inside the folder is listed as its own root
            found.setdefault(hashlib.sha256(path.read_bytes()).hexdigest(), []).append(str(path))
        assert not list(root.rglob(f"*{safefs.PARTIAL_SUFFIX}")), "temporary files left"
    photos = {name: digest for name, digest in before.items() if name.endswith(PHOTO_SUFFIXES)}
    for name, digest in photos.items():
        assert len(found.get(digest, [])) == 1, f"{name} is in {found.get(digest)}"
    assert sum(map(len, found.values())) == len(photos), "a file that is no original appeared"


def _others(properties: dict[str, str]) -> dict[str, str]:
    """A sidecar's properties but the two that cull sets."""
    return {k: v for k, v in properties.items() if k not in (RATING, PICK_LABEL)}


def _report(path: Path) -> dict[str, dict]:
    with path.open(newline="") as handle:
        return {row["image"]: row for row in csv.DictReader(handle)}


def cli(*args, timeout=300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "distill.cli", "cull", *map(str, args),
                           "--no-progress"], capture_output=True, text=True, timeout=timeout,
                          env=dict(os.environ, OMP_NUM_THREADS="1"), check=False)


def assert_one_line(result: subprocess.CompletedProcess, *needles: str) -> None:
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1, \
        result.stderr
    for needle in needles:
        assert needle in result.stderr, result.stderr


# ---------------------------------------------------------------- the three actions

def test_dry_run_reports_and_touches_nothing(folder, student_file, tmp_path):
    before = _hashes(folder)
    result = cull(folder, student_file, dest=tmp_path / "out", progress=False)
    assert (result["keep"] + result["trash"], result["error"]) == (12, 1)
    rows = (tmp_path / "out" / "cull.csv").read_text().splitlines()
    assert rows[0].startswith("image,decision,reason,quality,keep_prob,group_id,") and len(rows) == 14
    assert _hashes(folder) == before and not (tmp_path / "out" / "keep").exists()


def test_link_sorts_without_touching_originals(folder, student_file, tmp_path):
    before = _hashes(folder)
    result = cull(folder, student_file, dest=tmp_path / "out", options=CullOptions(action="link"),
                  progress=False)
    linked = _hashes(tmp_path / "out" / "keep") | _hashes(tmp_path / "out" / "trash")
    assert len(linked) == result["keep"] + result["trash"] == 12
    assert _hashes(folder) == before
    assert all(linked[name] == before[name] for name in linked)


def test_xmp_merges_a_darktable_sidecar(folder, student_file, tmp_path):
    photo = folder / "img00.jpg"
    photo.with_suffix(".xmp").write_text(DARKTABLE_SIDECAR, encoding="utf-8")
    original = read_sidecar(photo.with_suffix(".xmp"))
    cull(folder, student_file, dest=tmp_path / "out", options=CullOptions(xmp=True), progress=False)
    report = _report(tmp_path / "out" / "cull.csv")
    merged = read_sidecar(photo.with_suffix(".xmp"))
    assert _others(merged) == _others(original) == {"Xmp.xmp.CreatorTool": "darktable",
                                                    "Xmp.dc.subject": "holiday"}
    text = photo.with_suffix(".xmp").read_text(encoding="utf-8")
    assert text.startswith("<?xpacket begin") and text.rstrip().endswith('<?xpacket end="w"?>')
    assert merged["Xmp.xmp.Rating"] == report["img00.jpg"]["rating"]
    assert merged["Xmp.digiKam.PickLabel"] == report["img00.jpg"]["pick_label"]
    fresh = read_sidecar(folder / "trip" / "img01.jpg.xmp")  # no sidecar before: digiKam's name
    assert set(fresh) >= {"Xmp.xmp.Rating", "Xmp.digiKam.PickLabel"}


def test_3_xmp_merges_an_exiftool_sidecar_into_one_that_exiv2_reads(folder, student_file, tmp_path):
    """exiftool writes one rdf:Description per namespace; the merge must leave one rating."""
    sidecar = folder / "img00.jpg.xmp"
    shutil.copyfile(FIXTURES / "exiftool-12.57-sidecar.xmp", sidecar)
    original = read_sidecar(sidecar)
    assert original["Xmp.xmp.Rating"] == "5" and len(_others(original)) == 9
    result = cull(folder, student_file, dest=tmp_path / "out", progress=False,
                  options=CullOptions(xmp=True, decide=DecideOptions(keep_threshold=0.0)))
    assert result["xmp_errors"] == 0
    merged = read_sidecar(sidecar)  # exiv2 refuses a packet with a duplicate property
    row = _report(tmp_path / "out" / "cull.csv")["img00.jpg"]
    assert merged["Xmp.xmp.Rating"] == row["rating"] != "5"
    assert merged["Xmp.digiKam.PickLabel"] == "3"
    assert _others(merged) == _others(original), "every other property is kept"
    assert merged["Xmp.dc.subject"] == "family, beach"
    assert sidecar.read_text(encoding="utf-8").count("Rating") == 1


def test_1_move_keeps_a_name_xmp_sidecar_beside_its_photo(folder, student_file, tmp_path):
    """`photo.xmp` (Lightroom, darktable) used to be moved onto the moved photo."""
    (folder / "img00.xmp").write_text(DARKTABLE_SIDECAR, encoding="utf-8")
    (folder / "trip" / "img01.jpg.xmp").write_text(DARKTABLE_SIDECAR, encoding="utf-8")
    before = _hashes(folder)
    dest = tmp_path / "out"
    cull(folder, student_file, dest=dest, options=CullOptions(action="move"), progress=False)
    assert_each_photo_once(before, folder, dest)
    report = _report(dest / "cull.csv")
    moved = Path(report["img00.jpg"]["target"])
    assert moved.read_bytes()[:3] == b"\xff\xd8\xff", "the photo is still a JPEG"
    assert hashlib.sha256(moved.with_suffix(".xmp").read_bytes()).hexdigest() == before["img00.xmp"]
    long_form = Path(report["trip/img01.jpg"]["target"] + ".xmp")
    assert hashlib.sha256(long_form.read_bytes()).hexdigest() == before["trip/img01.jpg.xmp"]
    assert not list(folder.rglob("*.xmp")), "the sidecars travelled with their photos"


def test_move_never_replaces_an_existing_file(folder, student_file, tmp_path):
    dest = tmp_path / "out"
    for decision in ("keep", "trash"):
        (dest / decision).mkdir(parents=True)
        (dest / decision / "img00.jpg").write_bytes(b"someone else's file")
    before = _hashes(folder)
    cull(folder, student_file, dest=dest, options=CullOptions(action="move"), progress=False)
    planted = [dest / d / "img00.jpg" for d in ("keep", "trash")]
    assert all(p.read_bytes() == b"someone else's file" for p in planted)
    assert Path(_report(dest / "cull.csv")["img00.jpg"]["target"]).name == "img00-1.jpg"
    for path in planted:
        path.unlink()
    assert_each_photo_once(before, folder, dest)


def test_interrupted_move_resumes_without_loss_or_repeats(folder, student_file, tmp_path):
    before = _hashes(folder)
    dest = tmp_path / "out"
    args = ["cull", str(folder), "--model", str(student_file), "--move", "--xmp", "--dest",
            str(dest), "--batch-size", "2", "--no-progress"]
    killed_after(4, "distill.culling.run:finish", *args)  # right after its 4th photo is placed
    moved_at_kill = len(list(dest.rglob("*.jpg")))
    assert moved_at_kill == 4, f"kill landed after {moved_at_kill} moves"
    command = [sys.executable, "-m", "distill.cli", *args]

    result = subprocess.run(command, capture_output=True, text=True, check=False, timeout=300)
    assert result.returncode == 0, result.stderr
    assert_each_photo_once(before, folder, dest)
    assert len(list((dest / "keep").rglob("*.jpg")) + list((dest / "trash").rglob("*.jpg"))) == 12
    assert len(list(dest.rglob("*.jpg.xmp"))) == 12, "each moved photo has its sidecar"
    rows = (dest / "cull.csv").read_text().splitlines()[1:]
    assert len(rows) == 13 and len({r.split(",")[0] for r in rows}) == 13


# ---------------------------------------------------------------- other file systems, full disks

def test_2_move_across_file_systems_survives_a_full_disk(folder, student_file, mount_tmpfs):
    """A nearly full destination on another file system: copies that do not fit leave no
    file with a photo's name, the sources stay, and the re-run after space is freed finishes."""
    dest = mount_tmpfs("card", "size=160k")
    before = _hashes(folder)
    first = cli(folder, "--model", student_file, "--move", "--dest", dest)
    assert_one_line(first, "No space left on device")
    assert_each_photo_once(before, folder, dest)
    assert len(list(dest.rglob("*.jpg"))) < 12 and len(list(folder.rglob("*.jpg"))) > 1
    subprocess.run(["mount", "-o", "remount,size=16m", str(dest)], check=True)
    second = cli(folder, "--model", student_file, "--move", "--dest", dest)
    assert second.returncode == 0, second.stderr
    assert_each_photo_once(before, folder, dest)
    assert [p.name for p in folder.rglob("*.jpg")] == ["broken.jpg"]


@pytest.mark.parametrize("leftover", ["partial", "truncated_target"])
def test_2_a_copy_killed_midway_is_never_taken_for_the_photo(leftover, folder, student_file,
                                                             mount_tmpfs, monkeypatch):
    """A kill in the middle of a cross-file-system copy leaves a short temporary file, which
    the re-run discards and copies again. A short file under the photo's own name (what the
    old `shutil.move` left, and what the old rule 'target exists means done' accepted before
    deleting the source) is refused: the source stays and the report says why."""
    dest = mount_tmpfs("card")
    before = _hashes(folder)

    def killed_midway(reader, writer, length=0):
        writer.write(reader.read(1000))
        raise KeyboardInterrupt

    monkeypatch.setattr(shutil, "copyfileobj", killed_midway)
    with pytest.raises(KeyboardInterrupt):
        cull(folder, student_file, dest=dest, options=CullOptions(action="move"), progress=False)
    monkeypatch.undo()
    entry = next(e for e in _journal(dest) if e.get("target"))
    source, target = Path(entry["source"]), Path(entry["target"])
    # a SIGKILL runs no cleanup: put back the short file it would have left
    short = safefs.partial_path(target) if leftover == "partial" else target
    short.write_bytes(source.read_bytes()[:1000])

    result = cull(folder, student_file, dest=dest, options=CullOptions(action="move"),
                  progress=False)
    placed = 12 if leftover == "partial" else 11  # a photo not placed is an error (and broken.jpg)
    assert (result["keep"] + result["trash"], result["error"]) == (placed, 13 - placed)
    error = _report(dest / "cull.csv")[entry["image"]]["error"]
    if leftover == "partial":
        assert not error and safefs.is_placed(target, entry["sha256"])
    else:
        assert "holds another file" in error
        assert safefs.sha256_file(source) == before[entry["image"]], "the source is kept"
        target.unlink()  # the truncated file, not a photo
    assert_each_photo_once(before, folder, dest)


def _journal(dest: Path) -> list[dict]:
    """The journal's photos, each with everything recorded of it, in the order first seen."""
    merged: dict[str, dict] = {}
    for line in (dest / JOURNAL).read_text().splitlines():
        record = json.loads(line)
        for entry in record.get("decisions", [record]):
            if "source" in entry:
                merged.setdefault(entry["source"], {}).update(entry)
    return list(merged.values())


def test_move_into_another_file_system_verifies_every_copy(folder, student_file, mount_tmpfs):
    dest = mount_tmpfs("card", "size=16m")
    before = _hashes(folder)
    cull(folder, student_file, dest=dest, options=CullOptions(action="move", xmp=True),
         progress=False)
    assert_each_photo_once(before, folder, dest)
    entries = [e for e in _journal(dest) if e.get("target")]
    assert len(entries) == 12
    assert all(safefs.is_placed(Path(e["target"]), e["sha256"]) for e in entries)


# ---------------------------------------------------------------- sidecars that cannot be read

@pytest.mark.parametrize("kind", sorted(HOSTILE_SIDECARS))
def test_4_an_unreadable_sidecar_is_reported_and_the_run_goes_on(kind, folder, student_file,
                                                                 tmp_path):
    sidecar = folder / "img00.jpg.xmp"
    sidecar.write_bytes(HOSTILE_SIDECARS[kind])
    before = _hashes(folder)
    dest = tmp_path / "out"
    for _ in range(2):  # and a re-run does not die on the same entry
        result = cli(folder, "--model", student_file, "--move", "--xmp", "--dest", dest)
        assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    report = _report(dest / "cull.csv")
    assert len(report) == 13 and "left untouched" in report["img00.jpg"]["xmp_error"]
    moved = Path(report["img00.jpg"]["target"] + ".xmp")
    assert moved.read_bytes() == HOSTILE_SIDECARS[kind], "the sidecar was left as it was"
    assert sum(1 for row in report.values() if row["xmp_error"]) == 1
    assert_each_photo_once(before, folder, dest)
    assert "xmp errors 1" in result.stdout


# ---------------------------------------------------------------- several runs, one destination

def test_7_a_second_card_into_the_same_dest_is_culled_too(skimage_photos, student_file, tmp_path):
    cards = [tmp_path / "card1" / "DCIM", tmp_path / "card2" / "DCIM"]
    images = _photos(skimage_photos)
    for number, card in enumerate(cards):
        card.mkdir(parents=True)
        for index in range(3):
            images[number * 3 + index].save(card / f"IMG_{index + 1:04d}.jpg", quality=90)
    before = {f"{n}/{k}": v for n, card in enumerate(cards) for k, v in _hashes(card).items()}
    dest = tmp_path / "sorted"
    for card in cards:
        result = cull(card, student_file, dest=dest, options=CullOptions(action="move"),
                      progress=False)
        assert result["keep"] + result["trash"] == 3, "the second card was not skipped"
    assert_each_photo_once(before, *cards, dest)
    report = _report(dest / "cull.csv")
    assert all(Path(row["target"]).exists() for row in report.values())
    assert len(list(dest.rglob("IMG_0001*.jpg"))) == 2


def test_8_a_second_run_on_a_busy_dest_says_so(folder, student_file, tmp_path):
    dest = tmp_path / "out"
    dest.mkdir()
    with safefs.DestinationLock(dest):  # another process holds it
        result = cli(folder, "--model", student_file, "--move", "--dest", dest)
    assert_one_line(result, "is busy")
    assert not (dest / "keep").exists()


def test_resuming_with_other_options_is_refused(folder, student_file, tmp_path):
    dest = tmp_path / "out"
    cull(folder, student_file, dest=dest, options=CullOptions(action="link"), progress=False)
    assert_one_line(cli(folder, "--model", student_file, "--move", "--dest", dest), "action")
    # a dry run leaves nothing on disk but its journal: a real run may follow it
    cull(folder, student_file, dest=tmp_path / "dry", progress=False)
    result = cull(folder, student_file, dest=tmp_path / "dry", options=CullOptions(action="link"),
                  progress=False)
    assert result["keep"] + result["trash"] == 12


# ---------------------------------------------------------------- sidecars agree with folders

@pytest.mark.parametrize("threshold", [0.9, 0.0])
def test_9_the_pick_label_agrees_with_the_folder(threshold, folder, student_file, tmp_path):
    """keep/ → 3 accepted, pending/ → 2, trash/ → 1 rejected, whatever quality says: with a
    0.9 threshold every group best goes to trash, with 0.0 to keep; the other shots of a
    group (a re-take) goes to pending."""
    Image.open(folder / "img00.jpg").save(folder / "img00-again.jpg", quality=70)  # a re-take
    dest = tmp_path / "out"
    decide = DecideOptions(keep_threshold=threshold, similar_decision="pending")
    cull(folder, student_file, dest=dest, progress=False,
         options=CullOptions(action="move", xmp=True, decide=decide))
    expected = {"keep": "3", "pending": "2", "trash": "1"}
    found = {name: {read_sidecar(s)["Xmp.digiKam.PickLabel"] for s in (dest / name).rglob("*.xmp")}
             for name in expected if (dest / name).exists()}
    assert sum(len(list((dest / n).rglob("*.xmp"))) for n in found) == 13
    assert found == {name: {expected[name]} for name in found}
    assert ("keep" in found) == (threshold == 0.0) and ("trash" in found) == (threshold == 0.9)
    assert "pending" in found, "the re-take is a similar shot"


def test_written_sidecars_read_back_in_exiv2(tmp_path):
    """The real-client check: exiv2's own image factory, not our reader, parses the file."""
    sidecar = write_sidecar(tmp_path / "a.jpg.xmp", 4, 1)
    image = exiv2.ImageFactory.open(str(sidecar))
    image.readMetadata()
    values = {d.key(): d.toString() for d in image.xmpData()}
    assert values == {"Xmp.xmp.Rating": "4", "Xmp.digiKam.PickLabel": "1"}


# ---------------------------------------------------------------- one line, not a traceback

@pytest.mark.parametrize("args, needle", [
    (["--batch-size", "0"], "--batch-size"), (["--batch-size", "-1"], "--batch-size"),
    (["--keep-threshold", "1.5"], "--keep-threshold"), (["--max-images", "-2"], "--max-images")])
def test_10_bad_options_are_one_line(args, needle, folder, student_file):
    result = cli(folder, "--model", student_file, *args)
    assert result.returncode == 2 and needle in result.stderr and "Traceback" not in result.stderr


def test_10_dest_equal_to_the_folder_is_refused(folder, student_file):
    before = _hashes(folder)
    assert_one_line(cli(folder, "--model", student_file, "--move", "--dest", folder),
                    "is the folder being culled")
    assert _hashes(folder) == before


def test_10_a_read_only_dest_is_one_line(folder, student_file, mount_tmpfs):
    dest = mount_tmpfs("readonly", "ro,size=1m")
    before = _hashes(folder)
    assert_one_line(cli(folder, "--model", student_file, "--move", "--dest", dest / "out"),
                    "Read-only file system", str(dest))
    assert _hashes(folder) == before


@pytest.mark.parametrize("damage", ["state_dict", "onnx_metadata"])
def test_10_a_damaged_student_file_is_one_line(damage, folder, student_file, tmp_path):
    if damage == "state_dict":
        payload = torch.load(student_file, weights_only=True)
        payload["state_dict"] = {"weight": torch.zeros(3)}
        broken = tmp_path / "student.pt"
        torch.save(payload, broken)
        needle = "do not fit"
    else:
        import onnx

        from distill.training import export_student
        exported = export_student(student_file, "onnx", tmp_path / "student.onnx")
        model = onnx.load(exported["model"])
        for prop in model.metadata_props:
            if prop.key == "distill.preprocessing":
                prop.value = "{not json"
        broken = tmp_path / "broken.onnx"
        onnx.save(model, broken)
        needle = "bad distill metadata"
    assert_one_line(cli(folder, "--model", broken), needle)


def test_unique_names_and_verified_copies_never_replace(tmp_path):
    source = tmp_path / "a.jpg"
    source.write_bytes(os.urandom(5000))
    taken = tmp_path / "out" / "a.jpg"
    taken.parent.mkdir()
    taken.write_bytes(b"other")
    target = safefs.free_name(taken)
    assert target.name == "a-1.jpg"
    digest = safefs.sha256_file(source)
    with pytest.raises(safefs.PlacementError):
        safefs.verified_copy(source, taken, digest)  # the name is taken: refused, not replaced
    assert taken.read_bytes() == b"other"
    with pytest.raises(safefs.PlacementError):
        safefs.verified_copy(source, target, "0" * 64)  # a copy that does not match: refused
    assert not target.exists() and not safefs.partial_path(target).exists()
    safefs.move(source, target, digest)
    assert not source.exists() and safefs.sha256_file(target) == digest
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["a-1.jpg", "a.jpg", "out"]
