"""Focus at the decoded resolution (teachers.focus) and how culling uses it: relative within
a group of similar shots, where the student's qualities are within its noise."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageFilter

from distill.culling import DecideOptions, decide
from distill.decode import decode_bytes
from teachers.focus import measure_focus


@pytest.fixture(scope="module")
def scenes(skimage_photos) -> list[Image.Image]:
    return [Image.open(skimage_photos[n]).convert("RGB") for n in ("astronaut", "coffee", "rocket")]


def test_focus_falls_with_defocus_whatever_the_scene(scenes):
    for scene in scenes:
        values = [measure_focus(scene.filter(ImageFilter.GaussianBlur(s)) if s else scene)["focus"]
                  for s in (0, 1.5, 3)]
        assert values[0] > 0.5 and values[0] > values[1] + 0.1 > values[2] + 0.2, values


def test_focus_records_the_scale_it_was_measured_at(scenes):
    buffer = io.BytesIO()
    scenes[0].resize((1024, 1024)).save(buffer, "JPEG", quality=90)
    assert measure_focus(decode_bytes(buffer.getvalue()).image)["focus_scale"] == 1.0
    draft = decode_bytes(buffer.getvalue(), draft_size=256).image  # a 4x DCT-scaled draft
    assert measure_focus(draft)["focus_scale"] == 0.25


def _frame(name: str, quality: float, focus: float, faces=None, second: int = 0) -> dict:
    measures = {"focus": focus, "sharpness": 100.0, "exposure": 0.45, "clipped_shadows": 0.0,
                "clipped_highlights": 0.0, "noise": 2.0}
    if faces is not None:
        measures["faces"] = [{"sharpness": s, "eyes_closed": c, "box": [0, 0, 1, 1]}
                             for s, c in faces]
    return {"image": name, "quality": quality, "keep_prob": 0.6, "descriptor": [1.0, 0.0, 0.0],
            "taken_at": f"2026:06:13 14:00:0{second}", "measures": measures}


def test_within_the_students_noise_the_sharpest_frame_wins():
    burst = [_frame("a.jpg", 6.10, 0.41), _frame("b.jpg", 6.05, 0.82, second=1),
             _frame("c.jpg", 6.00, 0.35, second=2), _frame("d.jpg", 5.95, 0.30, second=3)]
    rows = decide(burst, DecideOptions(keep_threshold=0.5))
    assert [r["decision"] for r in rows] == ["trash", "keep", "trash", "trash"]
    assert rows[1]["reason"] == "keep_prob 0.60 ≥ 0.5; sharpest of 4: focus 0.82 vs 0.41"
    # relative to the sharpest of the group: all three are flagged, though a and c are above
    # the absolute floor
    assert [("blurry" in r["flags"]) for r in rows] == [True, False, True, True]
    assert rows[0]["reason"] == "blurry; similar to b.jpg (quality 6.05)"
    # a soft frame never wins against one in focus, however the student likes it
    burst[0]["quality"] = 7.0
    rows = decide(burst, DecideOptions(keep_threshold=0.5))
    assert [r["decision"] for r in rows] == ["trash", "keep", "trash", "trash"]
    # among frames in focus, a quality gap beyond the noise is the student's call
    burst[2]["measures"]["focus"], burst[2]["quality"] = 0.78, 7.0
    rows = decide(burst, DecideOptions(keep_threshold=0.5))
    assert [r["decision"] for r in rows] == ["trash", "trash", "keep", "trash"]
    assert rows[2]["reason"] == "keep_prob 0.60 ≥ 0.5; in focus (2 of 4 soft)"
    assert rows[1]["flags"] == [] and rows[1]["reason"] == "similar to c.jpg (quality 7.00)"


def test_every_eye_open_first_then_the_sharpest_faces():
    burst = [_frame("a.jpg", 6.5, 0.8, faces=[(0.8, False), (0.7, True)]),
             _frame("b.jpg", 6.0, 0.7, faces=[(0.6, False), (0.5, False)], second=1),
             _frame("c.jpg", 6.1, 0.7, faces=[(0.7, False), (0.65, False)], second=2)]
    rows = decide(burst, DecideOptions(keep_threshold=0.5))
    assert [r["decision"] for r in rows] == ["trash", "trash", "keep"]
    assert rows[2]["reason"].endswith("eyes open (closed in 1 of 3); sharpest of 3: "
                                      "focus 0.65 vs 0.50")
    assert rows[0]["reason"].startswith("eyes closed (1 of 2 faces); similar to c.jpg")
    assert rows[0]["flags"] == ["eyes-closed"]
    # a photo shot once, kept by its keep_prob, but with a soft face: a person decides
    single = decide([_frame("e.jpg", 7.0, 0.8, faces=[(0.2, False)])], DecideOptions())
    assert single[0]["decision"] == "pending" and single[0]["flags"] == ["face-blurry"]
    assert single[0]["reason"].startswith("face out of focus; keep_prob 0.60")
    assert np.isfinite(single[0]["group_id"])
