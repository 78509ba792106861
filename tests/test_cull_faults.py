"""Issue 19, the culling side; each case failed on the code before it. Numbers are the issue's:
(1) a sidecar exiv2 cannot read, (2) `--report` over a photo, (4) paths that are not regular
files, (5) names that are not UTF-8 or are too long, (6) a sidecar two photos claim, (7) a
photo edited after its decision, (8) a kill between a sidecar merge and the done line,
(9) counts, (10) a student predicting NaN or inf, (12) sidecar permissions.

Photos are small (200 px) so each cull takes about a second; photos and sidecars are checked
by sha256 before and after.
"""

from __future__ import annotations

import faulthandler
import hashlib
import os
import shutil
import stat
from pathlib import Path

import pytest
import torch
from PIL import Image

from benchmarks.camera_files import write_dng
from distill import safefs, xmp
from distill.culling import CullOptions, DecideOptions, cull
from distill.errors import ConfigError
from distill.names import as_path
from distill.xmp import read_sidecar, write_sidecar
from tests.test_cull import (
    DARKTABLE_SIDECAR,
    _hashes,
    _report,
    assert_each_photo_once,
)
from tests.test_label import _photos

XMP_HEAD = ('<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>\n'
            '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF '
            'xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">\n<rdf:Description '
            'rdf:about="" xmlns:dc="http://purl.org/dc/elements/1.1/" '
            'xmlns:xmp="http://ns.adobe.com/xap/1.0/" xmlns:xmpDM="http://ns.adobe.com/xmp/1.0/'
            'DynamicMedia/" xmlns:crs="http://ns.adobe.com/camera-raw-settings/1.0/" '
            'xmp:Label="Red" {extra}>\n<dc:subject><rdf:Bag><rdf:li>family</rdf:li>'
            '</rdf:Bag></dc:subject>\n')
XMP_TAIL = '</rdf:Description></rdf:RDF></x:xmpmeta>\n<?xpacket end="w"?>'
# Well-formed XMP that defusedxml accepts and exiv2's parser silently drops whole.
EXIV2_CANNOT_READ = {
    "literal": XMP_HEAD.format(extra="") + '<dc:description rdf:parseType="Literal"><b>bold'
               "</b> words</dc:description>" + XMP_TAIL,
    "nested": XMP_HEAD.format(extra="") + "<xmpDM:x>" + "<rdf:Bag><rdf:li>" * 500 + "v"
              + "</rdf:li></rdf:Bag>" * 500 + "</xmpDM:x>" + XMP_TAIL,
}
ALL_KEPT = DecideOptions(keep_threshold=0.0, group=False)  # every photo to keep/, one folder


@pytest.fixture(scope="module")
def images(skimage_photos) -> list[Image.Image]:
    return [image.resize((200, 200 * image.height // image.width))
            for image in _photos(skimage_photos)[:8]]


def _card(folder: Path, names: list[str], images: list[Image.Image]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for index, name in enumerate(names):
        images[index % len(images)].save(folder / name, quality=90)
    return folder


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _move(folder, student_file, dest, decide=ALL_KEPT, **options) -> dict:
    return cull(folder, student_file, dest=dest, progress=False,
                options=CullOptions(action="move", xmp=True, decide=decide, **options))


# ---------------------------------------------------------------- 1, 12: sidecars kept safe

@pytest.mark.parametrize("kind", sorted(EXIV2_CANNOT_READ))
def test_1_a_sidecar_exiv2_cannot_read_is_left_byte_for_byte(kind, images, student_file, tmp_path):
    folder = _card(tmp_path / "card", ["IMG_0001.jpg", "IMG_0002.jpg"], images)
    (folder / "IMG_0001.jpg.xmp").write_text(EXIV2_CANNOT_READ[kind], encoding="utf-8")
    before = _hashes(folder)
    dest = tmp_path / "out"
    for _ in range(2):  # and a re-run neither replaces it nor dies on it
        result = _move(folder, student_file, dest)
    row = _report(dest / "cull.csv")["IMG_0001.jpg"]
    assert _sha(Path(row["target"] + ".xmp")) == before["IMG_0001.jpg.xmp"], "moved, unchanged"
    assert "left untouched" in row["xmp_error"] and result["xmp_errors"] == 1
    assert (result["keep"], result["error"]) == (2, 0)
    assert_each_photo_once(before, folder, dest)


def test_12_a_merge_keeps_every_property_and_the_sidecars_permissions(tmp_path):
    """A merge that exiv2 can prove safe is written, with the old file's mode (a read-only
    one is refused); a sidecar that is no regular file is refused at once (a FIFO or
    /dev/zero never blocks the run)."""
    rich = XMP_HEAD.format(extra='crs:RawFileName="IMG_0007.CR2"') + (
        '<dc:title><rdf:Alt><rdf:li xml:lang="x-default">Sea</rdf:li><rdf:li xml:lang="de">'
        'Meer</rdf:li></rdf:Alt></dc:title>') + XMP_TAIL
    locked = tmp_path / "locked.xmp"
    locked.write_text(rich, encoding="utf-8")
    locked.chmod(0o444)  # read-only: the user's "keep out", refused as digiKam refuses it
    with pytest.raises(xmp.XmpError, match=r"read-only \(mode 0444\); left untouched"):
        write_sidecar(locked, 4, 3)
    assert locked.read_text(encoding="utf-8") == rich
    assert stat.S_IMODE(locked.stat().st_mode) == 0o444
    for mode in (0o600, 0o640):
        sidecar = tmp_path / f"mode{mode:o}.xmp"
        sidecar.write_text(rich, encoding="utf-8")
        sidecar.chmod(mode)
        old = read_sidecar(sidecar)
        write_sidecar(sidecar, 4, 3, ["blurry"])
        new = read_sidecar(sidecar)
        assert stat.S_IMODE(sidecar.stat().st_mode) == mode
        assert new["Xmp.dc.subject"] == "family, distill/blurry" and new["Xmp.xmp.Rating"] == "4"
        assert {k: v for k, v in new.items() if k not in old} == {
            "Xmp.xmp.Rating": "4", "Xmp.digiKam.PickLabel": "3"}
        assert all(new[k] == v for k, v in old.items() if k != "Xmp.dc.subject")
    os.mkfifo(tmp_path / "fifo.xmp")
    os.symlink("/dev/zero", tmp_path / "zero.xmp")
    (tmp_path / "dir.xmp").mkdir()
    for name, reason in [("fifo.xmp", "is a FIFO"), ("zero.xmp", "is a symbolic link"),
                         ("dir.xmp", "is a directory")]:
        with pytest.raises(xmp.XmpError, match=reason):
            write_sidecar(tmp_path / name, 4, 3)
    assert stat.S_ISFIFO(os.lstat(tmp_path / "fifo.xmp").st_mode)
    assert not list(tmp_path.glob(f"*{safefs.PARTIAL_SUFFIX}"))


@pytest.mark.skipif(shutil.which("exiftool") is None, reason="exiftool is not installed")
def test_1_exiftool_is_a_second_reader_where_installed(tmp_path):
    sidecar = tmp_path / "a.jpg.xmp"
    sidecar.write_text(DARKTABLE_SIDECAR, encoding="utf-8")
    write_sidecar(sidecar, 2, 1, ["noisy"])  # it agrees with a merge that kept everything
    assert read_sidecar(sidecar)["Xmp.xmp.CreatorTool"] == "darktable"
    other = DARKTABLE_SIDECAR.replace("darktable", "lightroom").encode()
    with pytest.raises(xmp.XmpError, match="exiftool reads XMP-xmp:CreatorTool differently"):
        xmp._exiftool_agrees(DARKTABLE_SIDECAR.encode(), other, sidecar)


# ---------------------------------------------------------------- 2: a report is only a report

def test_2_report_never_replaces_a_photo_or_a_stranger(images, student_file, tmp_path):
    folder = _card(tmp_path / "card", ["IMG_0000.jpg", "IMG_0001.jpg"], images)
    before = _hashes(folder)
    with pytest.raises(ConfigError, match="a report is a .csv or .json file"):
        cull(folder, student_file, report=folder / "IMG_0000.jpg", progress=False)
    theirs = tmp_path / "budget.csv"
    theirs.write_text("month,amount\njan,3\n")
    with pytest.raises(ConfigError, match="exists and is not a cull report"):
        cull(folder, student_file, dest=tmp_path / "out", report=theirs, progress=False)
    assert theirs.read_text() == "month,amount\njan,3\n" and _hashes(folder) == before
    ours = tmp_path / "mine.json"
    for _ in range(2):  # a previous report of ours is replaced
        cull(folder, student_file, dest=tmp_path / "out", report=ours, progress=False)
    assert '"decision"' in ours.read_text()


# ---------------------------------------------------------------- 4: not regular files

def test_4_links_fifos_devices_directories_and_sparse_files(images, student_file, tmp_path):
    """Sidecar names that are a link to /dev/zero, a FIFO or a directory, a sparse 20 GB
    photo and a sparse RAW beside its JPEG, a relative link to a photo: the dry run ends
    (each sidecar used to be hashed: a FIFO blocked forever), then a move sorts the rest and
    leaves each of these where and what it was, with its reason in the report."""
    folder = _card(tmp_path / "card", [f"IMG_000{i}.jpg" for i in range(5)], images)
    os.symlink("/dev/zero", folder / "IMG_0000.jpg.xmp")
    os.mkfifo(folder / "IMG_0001.jpg.xmp")
    (folder / "IMG_0002.jpg.xmp").mkdir()
    for sparse in ("BIG.jpg", "IMG_0003.dng"):
        with open(folder / sparse, "wb") as handle:
            handle.truncate(20 * 1024**3)
    os.symlink("IMG_0004.jpg", folder / "LINK.jpg")
    real = {p.name: _sha(p) for p in folder.glob("IMG_000?.jpg")}
    dest = tmp_path / "out"
    # these runs used to hang on the FIFO forever: a regression ends the test run, with tracebacks
    faulthandler.dump_traceback_later(300, exit=True)
    try:
        cull(folder, student_file, dest=dest, progress=False)  # a dry run
        cull(folder, student_file, dest=dest / "moved", progress=False,
             options=CullOptions(action="move", xmp=True, decide=ALL_KEPT))
    finally:
        faulthandler.cancel_dump_traceback_later()
    report = _report(dest / "moved" / "cull.csv")
    assert "sparse file" in report["BIG.jpg"]["error"]
    assert "sparse file" in report["IMG_0003.dng"]["error"], "not a companion: its own row"
    assert "is a symbolic link" in report["LINK.jpg"]["error"]
    for name, reason in [("IMG_0000.jpg", "is a symbolic link"), ("IMG_0001.jpg", "is a FIFO"),
                         ("IMG_0002.jpg", "is a directory")]:
        assert reason in report[name]["xmp_error"] and report[name]["decision"] == "keep"
    placed = {Path(r["target"]).name: _sha(Path(r["target"])) for r in report.values()
              if r["target"] and not r["error"]}
    assert placed == real, "every real photo moved, byte for byte; nothing else"
    assert os.readlink(folder / "LINK.jpg") == "IMG_0004.jpg" and not any(
        p.is_symlink() for p in (dest / "moved").rglob("*")), "no link moved or made"
    assert stat.S_ISFIFO(os.lstat(folder / "IMG_0001.jpg.xmp").st_mode)
    assert (folder / "IMG_0002.jpg.xmp").is_dir() and (folder / "IMG_0000.jpg.xmp").is_symlink()
    assert (folder / "BIG.jpg").stat().st_size == 20 * 1024**3


# ---------------------------------------------------------------- 5: names are bytes

def test_5_names_that_are_not_utf8_or_too_long_for_a_sidecar(images, student_file, tmp_path):
    folder = _card(tmp_path / "card", ["IMG_0001.jpg"], images)
    odd = os.fsdecode(b"IMG_\xff\xfe.jpg")  # Latin-1 from an old card: not UTF-8
    long = "L" * 251 + ".jpg"  # 255 bytes: legal, but photo.jpg.xmp is not
    images[1].save(folder / odd, "JPEG")
    images[2].save(folder / long, "JPEG")
    before = _hashes(folder)
    dest = tmp_path / "out"
    cull(folder, student_file, dest=dest / "dry", progress=False)  # was a UnicodeEncodeError
    rows = _report(dest / "dry" / "cull.csv")
    assert "IMG_\\xff\\xfe.jpg" in rows and as_path("IMG_\\xff\\xfe.jpg") == odd
    for _ in range(2):  # the folder finishes, and a re-run does too
        result = _move(folder, student_file, dest / "sorted")
        assert (result["keep"], result["error"], result["xmp_errors"]) == (3, 0, 0)
    rows = _report(dest / "sorted" / "cull.csv")
    assert "more than its file system's 255: written as" in rows[long]["note"]
    target = Path(rows[long]["target"])
    assert read_sidecar(target.with_suffix(".xmp"))["Xmp.xmp.Rating"] == rows[long]["rating"]
    placed = as_path(rows["IMG_\\xff\\xfe.jpg"]["target"])
    assert os.fsencode(placed).endswith(b"/keep/IMG_\xff\xfe.jpg")
    assert read_sidecar(Path(placed + ".xmp"))["Xmp.xmp.Rating"] == rows["IMG_\\xff\\xfe.jpg"]["rating"]
    assert_each_photo_once(before, folder, dest / "sorted")


# ---------------------------------------------------------------- 6: one owner per sidecar

def test_6_a_sidecar_two_photos_could_claim_has_one_owner(images, student_file, tmp_path):
    """IMG_0007.jpg + IMG_0007.png + a Lightroom IMG_0007.xmp naming the PNG; IMG_0008.jpg +
    .png + .dng + IMG_0008.xmp naming none (the RAW wins). Each other photo gets its own
    photo.ext.xmp; a re-run finishes."""
    folder = _card(tmp_path / "card", ["IMG_0007.jpg", "IMG_0007.png", "IMG_0008.jpg",
                                       "IMG_0008.png"], images)
    write_dng(images[4], folder / "IMG_0008.dng", preview_side=200)
    (folder / "IMG_0007.xmp").write_text(
        XMP_HEAD.format(extra='crs:RawFileName="IMG_0007.png"') + XMP_TAIL, encoding="utf-8")
    (folder / "IMG_0008.xmp").write_text(XMP_HEAD.format(extra="") + XMP_TAIL, encoding="utf-8")
    original = {n: read_sidecar(folder / n) for n in ("IMG_0007.xmp", "IMG_0008.xmp")}
    before = _hashes(folder)
    dest = tmp_path / "out"
    for _ in range(2):
        result = _move(folder, student_file, dest)
    assert (result["keep"], result["error"], result["xmp_errors"]) == (5, 0, 0)
    rows = _report(dest / "cull.csv")
    for owner, other in [("IMG_0007.png", "IMG_0007.jpg"), ("IMG_0008.dng", "IMG_0008.jpg")]:
        shared = Path(rows[owner]["target"]).with_suffix(".xmp")
        merged = read_sidecar(shared)
        assert merged["Xmp.xmp.Rating"] == rows[owner]["rating"]
        assert merged["Xmp.xmp.Label"] == "Red" == original[shared.name]["Xmp.xmp.Label"]
        own = read_sidecar(Path(rows[other]["target"] + ".xmp"))
        assert own["Xmp.xmp.Rating"] == rows[other]["rating"] and "Xmp.xmp.Label" not in own
        assert f"{shared.name} is {owner}'s sidecar" in rows[other]["note"]
    assert not list(folder.iterdir()), "every photo and sidecar moved"
    assert_each_photo_once(before, folder, dest)


def test_6_a_shared_dest_never_gives_a_photo_another_photos_sidecar(images, student_file,
                                                                    tmp_path):
    cards = [tmp_path / "card1", tmp_path / "card2"]
    _card(cards[0], ["IMG_0001.png"], images)
    (cards[0] / "IMG_0001.xmp").write_text(DARKTABLE_SIDECAR, encoding="utf-8")
    _card(cards[1], ["IMG_0001.jpg"], images[3:])
    before = {f"{n}/{k}": v for n, card in enumerate(cards) for k, v in _hashes(card).items()}
    dest = tmp_path / "sorted"
    for card in cards:
        _move(card, student_file, dest)
    first = read_sidecar(dest / "keep" / "IMG_0001.xmp")
    assert first["Xmp.xmp.CreatorTool"] == "darktable"
    second = _report(dest / "cull.csv")["IMG_0001.jpg"]  # the report of the last card
    jpeg = dest / "keep" / "IMG_0001-1.jpg"
    assert second["target"] == str(jpeg) and not (dest / "keep" / "IMG_0001.jpg").exists()
    assert read_sidecar(jpeg.with_name(jpeg.name + ".xmp"))["Xmp.xmp.Rating"] == second["rating"]
    assert_each_photo_once(before, *cards, dest)


# ---------------------------------------------------------------- 7, 8, 9: resumes and counts

def _interrupt_before_acting(monkeypatch, folder, student_file, dest, **options):
    """A run killed right after its decisions were journaled, before anything moved."""
    def killed(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(safefs, "move", killed)
    with pytest.raises(KeyboardInterrupt):
        cull(folder, student_file, dest=dest, progress=False,
             options=CullOptions(decide=ALL_KEPT, **options))
    monkeypatch.undo()


@pytest.mark.parametrize("file_systems", ["one", "two"])
def test_7_9_a_photo_edited_or_deleted_after_its_decision(file_systems, images, student_file,
                                                          tmp_path, mount_tmpfs, monkeypatch):
    """Resumed later: an edited photo is not placed under the decision made for its old bytes
    (on one file system as across two); it is scored and decided again, and the report says
    so. A deleted one is an error row, counted as an error, not as the keep it was meant to be."""
    folder = _card(tmp_path / "card", [f"IMG_000{i}.jpg" for i in range(4)], images)
    dest = tmp_path / "out" if file_systems == "one" else mount_tmpfs("card2", "size=16m")
    _interrupt_before_acting(monkeypatch, folder, student_file, dest, action="move")
    images[5].save(folder / "IMG_0001.jpg", quality=80)  # edited in place since the decision
    (folder / "IMG_0002.jpg").unlink()
    before = _hashes(folder)
    result = cull(folder, student_file, dest=dest, progress=False,
                  options=CullOptions(action="move", decide=ALL_KEPT))
    rows = _report(dest / "cull.csv")
    assert "changed after it was decided (keep)" in rows["IMG_0001.jpg"].get("note", "")
    assert _sha(Path(rows["IMG_0001.jpg"]["target"])) == before["IMG_0001.jpg"]
    assert "vanished before it was moved" in rows["IMG_0002.jpg"]["error"]
    assert (result["keep"], result["error"], result["total"]) == (3, 1, 4)
    assert result["keep"] + result["pending"] + result["trash"] + result["error"] == 4
    assert_each_photo_once(before, folder, dest)


def test_8_a_kill_after_a_sidecar_merge_before_the_done_line(images, student_file, tmp_path,
                                                              monkeypatch):
    """RAW+JPEG with their sidecars: the kill lands after the JPEG's sidecar was merged and
    while the RAW's was being written (its temporary file left behind). The resume finishes
    the RAW's sidecar, calls nothing 'another file' and leaves no temporary file."""
    folder = _card(tmp_path / "card", ["IMG_0001.jpg", "IMG_0002.jpg"], images)
    write_dng(images[0], folder / "IMG_0001.dng", preview_side=200)
    for sidecar in ("IMG_0001.jpg.xmp", "IMG_0001.dng.xmp"):
        (folder / sidecar).write_text(DARKTABLE_SIDECAR, encoding="utf-8")
    before = _hashes(folder)
    dest = tmp_path / "out"
    real_write, writes = xmp.write_sidecar, []

    def killed_on_the_second(sidecar, *args, **kwargs):
        writes.append(sidecar)
        if len(writes) == 2:
            safefs.partial_path(Path(sidecar)).write_text("<half")  # what a SIGKILL leaves
            raise KeyboardInterrupt
        return real_write(sidecar, *args, **kwargs)

    monkeypatch.setattr(xmp, "write_sidecar", killed_on_the_second)
    with pytest.raises(KeyboardInterrupt):
        _move(folder, student_file, dest)
    monkeypatch.undo()
    result = _move(folder, student_file, dest)
    assert (result["error"], result["xmp_errors"], result["keep"]) == (0, 0, 2)
    row = _report(dest / "cull.csv")["IMG_0001.jpg"]
    for sidecar in (row["target"] + ".xmp", str(Path(row["target"]).with_suffix(".dng")) + ".xmp"):
        merged = read_sidecar(Path(sidecar))
        assert merged["Xmp.xmp.Rating"] == row["rating"] and merged["Xmp.dc.subject"] == "holiday"
    assert_each_photo_once(before, folder, dest)


# ---------------------------------------------------------------- 10: a diverged student

@pytest.fixture(scope="module")
def diverged_students(student_file, tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("diverged")
    made = {}
    for kind in ("nan", "inf"):
        payload = torch.load(student_file, weights_only=True)
        state = payload["state_dict"]
        if kind == "nan":  # a diverged fp16 run: every weight NaN
            payload["state_dict"] = {k: v.float().fill_(float("nan")) if v.is_floating_point()
                                     else v for k, v in state.items()}
        else:  # an overflow: the heads' bias at inf
            state["quality.bias"].fill_(float("inf"))
            state["keep.bias"].fill_(float("inf"))
        made[kind] = folder / f"{kind}.pt"
        torch.save(payload, made[kind])
    return made


@pytest.mark.parametrize("kind", ["nan", "inf"])
def test_10_a_student_predicting_nan_or_inf_gives_error_rows(kind, diverged_students, images,
                                                             tmp_path):
    from distill.benchmarking.predict import StudentPredictor

    folder = _card(tmp_path / "card", ["IMG_0001.jpg", "IMG_0002.jpg"], images)
    predictions = StudentPredictor(diverged_students[kind]).predict(images[:2])
    assert sorted(predictions.errors) == [0, 1] and "non-finite" in predictions.errors[0]
    for _ in range(2):  # the decide pass does not die on it, now or on a re-run
        result = cull(folder, diverged_students[kind], dest=tmp_path / "out", progress=False)
    assert (result["error"], result["keep"] + result["trash"]) == (2, 0)
    assert "non-finite" in _report(tmp_path / "out" / "cull.csv")["IMG_0001.jpg"]["error"]
