"""The faces teacher on real photos (MediaPipe's models from the mediapipe wheel, run by
LiteRT), its weights rules, and `distill cull --faces`: closed eyes in a burst, the reason,
the XMP keyword and the face boxes on the review page."""

from __future__ import annotations

import shutil
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFilter

from benchmarks.burst_groups import write_exif_time
from benchmarks.faces_accuracy import close_eyes
from distill.errors import DistillError, WeightsMissingError
from teachers import create_teacher, weights
from teachers.faces import EYES_CLOSED_BELOW, FaceModels

FACE_WEIGHTS = ("face-detection-short-range", "face-detection-full-range", "face-landmark",
                "iris-landmark")
ASTRONAUT_FACE = (170, 60, 285, 180)  # where Eileen Collins' face is in skimage's astronaut


@pytest.fixture(scope="module")
def face_weights(tmp_path_factory) -> Path:
    """The four models, from the mediapipe wheel on the package index; skip only if it is
    unreachable."""
    folder = tmp_path_factory.mktemp("face-weights")
    try:
        for name in FACE_WEIGHTS:
            weights.fetch(name, folder)
    except DistillError as exc:
        pytest.skip(f"package index unreachable: {exc}")
    return folder


@pytest.fixture(scope="module")
def models(face_weights) -> FaceModels:
    return FaceModels(str(face_weights))


@pytest.fixture(scope="module")
def astronaut(skimage_photos) -> Image.Image:
    return Image.open(skimage_photos["astronaut"]).convert("RGB")


def test_a_real_face_with_open_eyes_then_synthetically_closed(models, astronaut):
    (face,) = models.faces(astronaut)
    left, top, right, bottom = face.box
    centre = ((left + right) / 2, (top + bottom) / 2)
    assert ASTRONAUT_FACE[0] < centre[0] < ASTRONAUT_FACE[2]
    assert ASTRONAUT_FACE[1] < centre[1] < ASTRONAUT_FACE[3]
    assert face.score > 0.6 and min(face.eyes_open) > EYES_CLOSED_BELOW + 0.1
    assert not face.eyes_closed and 0 < face.exposure < 1
    (closed,) = models.faces(close_eyes(astronaut, models))
    assert closed.eyes_closed and max(closed.eyes_open) < EYES_CLOSED_BELOW
    # the same face, blurred at its own resolution, is measured as less sharp
    (soft,) = models.faces(astronaut.filter(ImageFilter.GaussianBlur(2)))
    assert soft.sharpness < face.sharpness - 0.1
    assert models.faces(Image.new("RGB", (64, 48), (90, 120, 200))) == []


def test_teacher_columns_and_provenance(face_weights, astronaut, photo):
    teacher = create_teacher("faces", weights_dir=str(face_weights))
    out = teacher.score([astronaut, photo])  # photo: chelsea the cat, no human face
    assert out.extras["face_count"].tolist() == [1.0, 0.0]
    assert out.extras["face_eyes_closed"].tolist() == [0.0, 0.0]
    assert out.scores.tolist() == [1.0, 1.0] and np.isnan(out.extras["face_min_sharpness"][1])
    records = {r["file"]: r["sha256"] for r in teacher.provenance()["weights"]}
    assert records == {weights.CATALOG[n].filename: weights.CATALOG[n].sha256
                       for n in FACE_WEIGHTS}


def test_missing_or_corrupt_model_is_one_line_naming_it(face_weights, tmp_path):
    with pytest.raises(WeightsMissingError, match="face_detection_short_range.tflite.*"
                       "distill weights fetch face-detection-short-range"):
        FaceModels(str(tmp_path))
    for name in FACE_WEIGHTS:
        shutil.copy(face_weights / weights.CATALOG[name].filename, tmp_path)
    (tmp_path / "face_landmark.tflite").write_bytes(b"not a model")
    with pytest.raises(WeightsMissingError, match="face_landmark.tflite.*cannot be loaded") as err:
        FaceModels(str(tmp_path))
    assert "\n" not in str(err.value)


def test_cull_with_faces_keeps_the_frame_with_open_eyes(face_weights, models, astronaut,
                                                        student_file, tmp_path):
    from distill.culling import CullOptions, DecideOptions, cull
    from distill.xmp import KEYWORDS, read_sidecar
    from tests.test_cull import _report

    folder = tmp_path / "DCIM"
    folder.mkdir()
    frames = {"IMG_0001.jpg": close_eyes(astronaut, models), "IMG_0002.jpg": astronaut}
    for second, (name, image) in enumerate(frames.items()):
        image.save(folder / name, quality=92,
                   exif=write_exif_time(datetime(2026, 6, 13, 14, 0, second)))
    result = cull(folder, student_file, dest=tmp_path / "out", progress=False, html=True,
                  options=CullOptions(action="link", xmp=True, faces=True,
                                      weights_dir=str(face_weights),
                                      decide=DecideOptions(keep_threshold=0.0)))
    report = _report(tmp_path / "out" / "cull.csv")
    closed, opened = report["IMG_0001.jpg"], report["IMG_0002.jpg"]
    assert opened["decision"] == "keep" and opened["best_in_group"] == "True"
    assert "eyes open (closed in 1 of 2)" in opened["reason"]
    assert closed["decision"] == "trash"
    assert closed["reason"].startswith("eyes closed (1 of 1 faces)")
    assert (closed["faces"], closed["eyes_closed"]) == ("1", "1")
    sidecar = read_sidecar(folder / "IMG_0001.jpg.xmp")  # a link's sidecar: beside the photo
    assert "distill/eyes-closed" in sidecar[KEYWORDS]
    # the review page's thumbnails carry the face boxes, drawn in the box colour
    thumbs = list((Path(result["html"]).parent / "thumbs").glob("*.jpg"))
    assert len(thumbs) == 2
    for thumb in thumbs:
        pixels = np.asarray(Image.open(thumb).convert("RGB")).astype(int)
        yellow = (pixels[..., 0] > 200) & (pixels[..., 1] > 170) & (pixels[..., 2] < 90)
        assert yellow.sum() > 100


def test_labeling_with_faces_writes_face_columns(face_weights, skimage_photos, tmp_path):
    import pyarrow.parquet as pq

    from distill.labeling import label

    folder = tmp_path / "pool"
    folder.mkdir()
    for name in ("astronaut", "chelsea"):
        shutil.copy(skimage_photos[name], folder)
    label(source=str(folder), teachers="technical,faces", out=str(tmp_path / "out"),
          score_workers=0, weights_dir=str(face_weights), progress=False)
    (shard,) = (tmp_path / "out" / "shards").glob("labels-*.parquet")
    rows = {Path(r["path"]).stem: r for r in pq.read_table(shard).to_pylist()}
    assert rows["astronaut"]["face_count"] == 1 and rows["chelsea"]["face_count"] == 0
    assert rows["astronaut"]["face_min_eyes_open"] > EYES_CLOSED_BELOW
    assert np.isnan(rows["chelsea"]["face_min_sharpness"])
    # both scores fuse into the quality: no face, or only open eyes, is the faces teacher's 1
    assert rows["astronaut"]["score_faces"] == rows["chelsea"]["score_faces"] == 1.0
    assert all(np.isfinite(r["quality"]) and np.isfinite(r["norm_faces"]) for r in rows.values())
