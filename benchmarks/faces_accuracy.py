"""The `faces` teacher on real photos that installed packages ship: detection recall, false
detections, the eyes-open ratio on open and (synthesised) closed eyes, and the cost per photo.

Photos (licences as their packages state them):
- one face each: scikit-image's `astronaut` (Eileen Collins, NASA, public domain) and `camera`
  (the cameraman; his eye is at the viewfinder, so he counts for detection only),
  matplotlib's `grace_hopper` (US Navy, public domain), pyiqa's calibration photo `I04` (Kodak's
  test image 4; its distorted twin counts for detection only), OpenCV's `messi5.jpg` (Debian's
  opencv-doc, Apache-2.0/BSD; fetched with apt-get download when the benchmark runs);
- 100 faces and 100 non-faces of scikit-image's `lfw_subset` (Labeled Faces in the Wild,
  25×25 px grey crops, here 4× larger on a grey margin of 30 %; LFW is for research use);
- photos without faces (packaged scenes, pyiqa's calibration photos but `I04`, KDE's
  wallpapers) for false detections.

No package ships photos of closed eyes, so they are synthesised (`close_eyes`): within the
eye contour of the face mesh (grown a little), the skin just above the upper lid is moved
down over the eye with a soft edge, and a dark line is drawn along the lower lid, where
lashes meet. This shows whether the eyelid landmarks follow an eye whose iris and white are
gone; it cannot show a real closed eye's shape (the lid's curve and crease, lashes, a
half-closed blink), so the threshold is a first estimate, not a validated one.

Also a group shot: five of the faces pasted onto a real wallpaper, two of them with closed
eyes (what `distill cull --faces` reports as "eyes closed (2 of 5 faces)"), at 2400 px and
upscaled to 24 MP for the cost on a camera's file.

    python benchmarks/faces_accuracy.py [--weights-dir DIR]   # weights: distill weights fetch
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

RESULTS = Path(__file__).parent / "results" / "faces_accuracy.json"
# The mesh's eye contours, from one corner along the upper lid and back along the lower one.
EYE_CONTOURS = ((33, 246, 161, 160, 159, 158, 157, 173, 133, 155, 154, 153, 145, 144, 163, 7),
                (263, 466, 388, 387, 386, 385, 384, 398, 362, 382, 381, 380, 374, 373, 390, 249))
LASHES = (40, 30, 30)


def close_eyes(image: Image.Image, models) -> Image.Image:
    """The photo with every detected face's eyes synthetically closed (see the docstring)."""
    pixels = np.asarray(image.convert("RGB")).copy()
    for box, keypoints, _ in models.detect(image):
        points, _ = models.mesh(image, box, keypoints)
        for contour in EYE_CONTOURS:
            outline = points[list(contour), :2]
            centre = outline.mean(0)
            height = np.ptp(outline[:, 1])
            mask = np.zeros(pixels.shape[:2], np.uint8)
            grown = centre + (outline - centre) * np.array([1.15, 1.6])
            cv2.fillPoly(mask, [np.round(grown).astype(np.int32)], 255)
            mask = cv2.GaussianBlur(mask.astype(np.float32), (0, 0), max(1.0, height / 4)) / 255
            above = np.roll(pixels, round(height * 1.3 + 2), axis=0)
            pixels = (pixels * (1 - mask[..., None]) + above * mask[..., None]).astype(np.uint8)
            lower = outline[8:].tolist() + outline[:1].tolist()
            cv2.polylines(pixels, [np.round(lower).astype(np.int32)], False, LASHES,
                          max(1, int(height / 6)), cv2.LINE_AA)
    return Image.fromarray(pixels)


def face_photos() -> dict[str, tuple[Path, bool]]:
    """Name → (photo, whether its eyes count: open and unambiguous)."""
    from distill.sources import packaged_photos

    found = {}
    for path in packaged_photos():
        if path.stem in ("astronaut", "grace_hopper"):
            found[path.stem] = (path, True)
        elif path.stem == "camera":
            found[path.stem] = (path, False)
        elif path.stem == "I04":
            found[f"I04-{path.parent.name}"] = (path, path.parent.name == "ref_dir")
    try:
        from benchmarks.real_photos import unpacked

        samples = unpacked("opencv-doc", "usr/share/doc/opencv-doc/examples/data")
        found["messi5"] = (samples / "messi5.jpg", True)
    except Exception as exc:  # noqa: BLE001 - apt may be unreachable; say so and go on
        print(f"opencv-doc not fetched ({exc}); without messi5.jpg")
    return found


def lfw_faces(margin: float = 0.3, scale: int = 4) -> tuple[list[Image.Image], list[Image.Image]]:
    from skimage.data import lfw_subset

    def framed(crop: np.ndarray) -> Image.Image:
        face = Image.fromarray((crop * 255).astype(np.uint8)).convert("RGB")
        face = face.resize((face.width * scale,) * 2, Image.Resampling.BICUBIC)
        pad = int(face.width * margin)
        canvas = Image.new("RGB", (face.width + 2 * pad,) * 2, (128, 128, 128))
        canvas.paste(face, (pad, pad))
        return canvas

    crops = lfw_subset()
    return [framed(c) for c in crops[:100]], [framed(c) for c in crops[100:]]


def group_shot(faces: list[Image.Image], background: Path, width: int = 2400) -> Image.Image:
    """Face crops side by side in the lower half of a real photo."""
    scene = Image.open(background).convert("RGB")
    scene = scene.resize((width, round(scene.height * width / scene.width)))
    side = width // (len(faces) + 1)
    for index, face in enumerate(faces):
        face = face.resize((side, round(face.height * side / face.width)))
        scene.paste(face, (side // 2 + index * side, scene.height - face.height - 20))
    return scene


def face_crop(image: Image.Image, models, grow: float = 0.9) -> Image.Image:
    (box, _, _), *_ = models.detect(image)
    centre, half = (box[:2] + box[2:]) / 2, (box[2:] - box[:2]).max() * grow
    return image.crop(tuple(int(v) for v in (*(centre - half), *(centre + half))))


def timed(models, image: Image.Image, repeats: int = 3) -> tuple[list, float]:
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        faces = models.faces(image)
        seconds.append(time.perf_counter() - started)
    return faces, statistics.median(seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights-dir", default=None)
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args()

    from benchmarks.real_photos import real_photos
    from distill.sources import packaged_photos
    from teachers.faces import EYES_CLOSED_BELOW, FaceModels

    models = FaceModels(args.weights_dir)
    result = {"date": datetime.now(UTC).isoformat(timespec="seconds"),
              "machine": {"platform": platform.platform(), "processor": platform.processor(),
                          "cpu_count": os.cpu_count(), "threads": 1,
                          "load_average_before": [round(v, 2) for v in os.getloadavg()]},
              "eyes_closed_below": EYES_CLOSED_BELOW, "photos": {}}
    eyes = {"open": [], "closed": []}
    detected = 0
    photos = face_photos()
    for name, (path, eyes_count) in photos.items():
        image = Image.open(path).convert("RGB")
        faces, seconds = timed(models, image)
        main_face = max(faces, key=lambda f: (f.box[2] - f.box[0]), default=None)
        row = {"size": list(image.size), "faces_found": len(faces), "ms": round(seconds * 1e3, 1),
               "faces": [f.record() for f in faces]}
        detected += main_face is not None
        if main_face is not None and eyes_count:
            eyes["open"].append((name, main_face.eyes_open))
            closed = max(models.faces(close_eyes(image, models)),
                         key=lambda f: (f.box[2] - f.box[0]), default=None)
            if closed is not None:
                eyes["closed"].append((name, closed.eyes_open))
                row["closed_eyes_synthesised"] = closed.record()
        result["photos"][name] = row
    ratios_open = [r for _, pair in eyes["open"] for r in pair]
    ratios_closed = [r for _, pair in eyes["closed"] for r in pair]
    result["packaged_faces"] = {
        "photos": len(photos), "detected": detected, "recall": round(detected / len(photos), 4),
        "median_ms_per_photo": statistics.median(r["ms"] for r in result["photos"].values())}
    result["eyes"] = {
        "open_eyes": len(ratios_open), "closed_eyes": len(ratios_closed),
        "open_ratio_min": round(min(ratios_open), 4), "closed_ratio_max": round(max(ratios_closed), 4),
        "open_called_open": sum(r >= EYES_CLOSED_BELOW for r in ratios_open),
        "closed_called_closed": sum(r < EYES_CLOSED_BELOW for r in ratios_closed),
        "accuracy": round((sum(r >= EYES_CLOSED_BELOW for r in ratios_open)
                           + sum(r < EYES_CLOSED_BELOW for r in ratios_closed))
                          / (len(ratios_open) + len(ratios_closed)), 4),
        "per_photo": {"open": eyes["open"], "closed": eyes["closed"]}}

    faces, others = lfw_faces()
    result["lfw_subset"] = {
        "faces": len(faces), "detected": sum(1 for f in faces if models.faces(f)),
        "non_faces": len(others), "false_detections": sum(1 for o in others if models.faces(o))}
    result["lfw_subset"]["recall"] = round(result["lfw_subset"]["detected"] / len(faces), 4)

    scenes = [p for p in packaged_photos() if p.stem in ("chelsea", "coffee", "rocket", "china",
                                                         "flower", "motorcycle_left", "coins")
              or ("ResultsCalibra" in str(p) and p.stem != "I04")]
    scenes += [p for p in real_photos() if "wallpapers" in str(p)]
    result["photos_without_faces"] = {"photos": len(scenes), "false_detections": sum(
        len(models.faces(Image.open(p).convert("RGB"))) for p in scenes)}

    people = [Image.open(photos[n][0]).convert("RGB") for n in
              ("astronaut", "grace_hopper", "messi5", "astronaut", "grace_hopper")
              if n in photos]
    crops = [face_crop(p, models) for p in people]
    crops[-2:] = [close_eyes(c, models) for c in crops[-2:]]
    background = next(p for p in real_photos() if "wallpapers" in str(p))
    shot = group_shot(crops, background)
    faces, seconds = timed(models, shot)
    result["group_shot"] = {"faces_pasted": len(crops), "closed_pasted": 2,
                            "faces_found": len(faces),
                            "eyes_closed_found": sum(f.eyes_closed for f in faces),
                            "size": list(shot.size), "ms": round(seconds * 1e3, 1),
                            "faces": [f.record() for f in faces]}
    big = shot.resize((6000, round(shot.height * 6000 / shot.width)), Image.Resampling.BICUBIC)
    faces, seconds = timed(models, big)
    result["group_shot_24mp"] = {"size": list(big.size), "faces_found": len(faces),
                                 "ms": round(seconds * 1e3, 1)}
    result["machine"]["load_average_after"] = [round(v, 2) for v in os.getloadavg()]
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k not in ("photos",)}, indent=1)[:3000])


if __name__ == "__main__":
    main()
