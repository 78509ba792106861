"""The `faces` teacher: faces, open or closed eyes, and whether each face is in focus.

MediaPipe's face models, as the mediapipe 0.10.14 wheel ships them (Apache-2.0), run through
LiteRT (`ai-edge-litert`, the TensorFlow Lite interpreter on PyPI; mediapipe itself pins
protobuf < 5 and OpenCV-contrib, which would replace this project's). Weights come from the
catalog (`teachers.weights`: declared source and sha256), never from the network at run time.

1. **Detection**: BlazeFace, the short-range model (128 px input, 896 SSD anchors; faces that
   fill much of the frame) and the full-range one (192 px, 2304 anchors; faces down to a few
   percent of it), each on the whole photo letterboxed to a square; sigmoid scores, both
   models' detections merged by weighted non-maximum suppression; a box and six keypoints
   (eyes, nose, mouth, ears) per face.
2. **Landmarks**: the 468-point face mesh (192 px) on a square crop 1.5× the face box, turned
   so the eyes are level, taken from the photo at the resolution it was decoded at; then, per
   eye, MediaPipe's eye model (64 px crop of 2.3 eye widths around the mesh's eye corners),
   whose eyelid contour follows a closing lid where the mesh's stays open (measured: the mesh
   gave 0.25 to an eye the eye model gives 0.11).
3. **Measures** per face: detection score; eyes-open ratio per eye, the eye aspect ratio of
   Soukupová and Čech (2016) from the eye model's eyelid points (mean lid gap / corner-to-
   corner width: ~0.3–0.4 open, ~0.1–0.2 closed); sharpness, `teachers.focus` on the eyes and
   brows at the decoded resolution; exposure, mean luma of the face box / 255.
   Per photo: face count, faces with closed eyes, the sharpness of the least sharp face.

The models were trained on faces about a tenth of the frame or larger; tiny faces in crowds
are missed (`benchmarks/faces_accuracy.py` measures recall).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import cv2
import numpy as np
from PIL import Image

from distill.decode import ORIGINAL_SIZE_KEY
from distill.errors import WeightsMissingError
from teachers import weights
from teachers.base import Teacher, TeacherOutput, TeacherSpec, library_versions, weights_record
from teachers.focus import focus, luma

MESH = "face-landmark"
IRIS = "iris-landmark"
IRIS_SIDE = 64
IRIS_ROI_SCALE = 2.3  # the eye model sees 2.3 eye widths, as MediaPipe crops it
MESH_SIDE = 192
NMS_IOU = 0.3
MIN_PRESENCE = 0.5  # the mesh's face-presence flag, after a sigmoid
ROI_SCALE = 1.5  # the mesh sees the face box grown by half, as MediaPipe crops it
# Eye aspect ratio below which an eye counts as closed: between the open eyes (≥ 0.26) and the
# closed ones (≤ 0.2) of benchmarks/faces_accuracy.py.
EYES_CLOSED_BELOW = 0.2
# The eye model's contour: point 0 and 8 are the corners, 1-7 the lower lid and 9-15 the upper
# lid, each from corner 0 to corner 8; the lid gap is taken at the middle three pairs.
LID_PAIRS = ((3, 11), (4, 12), (5, 13))
# Mesh indices (MediaPipe's canonical face mesh). Per eye: the two corners, then three
# upper-lid points and the three lower-lid points facing them.
EYES = {
    "right": ((33, 133), (160, 159, 158), (144, 145, 153)),  # the subject's right eye
    "left": ((362, 263), (385, 386, 387), (380, 374, 373)),
}
BROWS = (70, 105, 107, 300, 334, 336)  # upper edge of the eyes region
MAX_FACES = 20


@dataclass
class Face:
    box: tuple[float, float, float, float]  # left, top, right, bottom, in original pixels
    score: float  # detection score, 0-1
    eyes_open: tuple[float, float]  # eye aspect ratio of the subject's right and left eye
    sharpness: float  # teachers.focus on the eyes region; NaN where too small to measure
    exposure: float  # mean luma of the face box / 255

    @property
    def eyes_closed(self) -> bool:
        return min(self.eyes_open) < EYES_CLOSED_BELOW

    def record(self) -> dict:
        values = asdict(self)
        return {k: ([round(float(x), 4) for x in v] if isinstance(v, tuple) else
                    round(float(v), 4)) for k, v in values.items()}


def _anchors(side: int, layers: Sequence[tuple[int, int]]) -> np.ndarray:
    """SSD anchor centres, unit size (MediaPipe's fixed_anchor_size): per (stride, anchors
    per cell) layer, cell by cell, row by row."""
    centres = []
    for stride, per_cell in layers:
        cells = side // stride
        grid = (np.arange(cells, dtype=np.float32) + 0.5) / cells
        y, x = np.meshgrid(grid, grid, indexing="ij")
        centres.append(np.repeat(np.stack([x.ravel(), y.ravel()], axis=1), per_cell, axis=0))
    return np.concatenate(centres)


@dataclass(frozen=True)
class Detector:
    weights: str  # catalog name
    side: int  # square input, px
    anchors: np.ndarray
    min_score: float  # MediaPipe's own threshold for the model


# Short range: faces that fill much of the frame (portraits); full range: faces down to a few
# percent of it (groups). Both run, and their detections are merged.
DETECTORS = (
    Detector("face-detection-short-range", 128, _anchors(128, [(8, 2), (16, 6)]), 0.5),
    Detector("face-detection-full-range", 192, _anchors(192, [(4, 1)]), 0.6),
)


def _iou(box: np.ndarray, others: np.ndarray) -> np.ndarray:
    left = np.maximum(box[0], others[:, 0])
    top = np.maximum(box[1], others[:, 1])
    right = np.minimum(box[2], others[:, 2])
    bottom = np.minimum(box[3], others[:, 3])
    inter = np.clip(right - left, 0, None) * np.clip(bottom - top, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (others[:, 2] - others[:, 0]) * (others[:, 3] - others[:, 1])
    return inter / np.maximum(area + areas - inter, 1e-12)


def weighted_nms(boxes: np.ndarray, keypoints: np.ndarray, scores: np.ndarray
                 ) -> list[tuple[np.ndarray, np.ndarray, float]]:
    """MediaPipe's weighted suppression: each cluster of overlapping detections becomes
    their score-weighted mean, with the best member's score."""
    order = np.argsort(-scores, kind="stable")
    kept = []
    while len(order) and len(kept) < MAX_FACES:
        overlap = _iou(boxes[order[0]], boxes[order])
        cluster, order = order[overlap > NMS_IOU], order[overlap <= NMS_IOU]
        weight = scores[cluster][:, None]
        kept.append(((boxes[cluster] * weight).sum(0) / weight.sum(),
                     (keypoints[cluster] * weight[:, :, None]).sum(0) / weight.sum(),
                     float(scores[cluster[0]])))
    return kept


def eye_aspect_ratio(contour: np.ndarray) -> float:
    """Mean lid gap over corner-to-corner width, of the eye model's 16 eyelid points."""
    width = np.linalg.norm(contour[0] - contour[8])
    gaps = [np.linalg.norm(contour[lower] - contour[upper]) for lower, upper in LID_PAIRS]
    return float(np.mean(gaps) / width) if width > 0 else float("nan")


def _square_crop(image: Image.Image, centre: np.ndarray, half: float, angle: float,
                 side: int, mirror: bool = False) -> tuple[np.ndarray, np.ndarray] | None:
    """A side×side crop of a square (centre, half side, turned by angle) and the affine map
    from crop pixels back to the image's; None where the square is outside the image. Only
    the square's bounds are cut from the image, so a 24 MP photo is not copied whole."""
    across = np.array([math.cos(angle), math.sin(angle)], dtype=np.float32)
    down = np.array([-across[1], across[0]], dtype=np.float32)
    reach = half * math.sqrt(2)
    left, top = (max(0, int(c - reach)) for c in centre)
    right, bottom = (min(limit, int(c + reach) + 1) for c, limit in zip(centre, image.size))
    if right - left < 2 or bottom - top < 2:
        return None
    region = np.asarray(image.crop((left, top, right, bottom)))
    origin = np.array([left, top], dtype=np.float32)
    corners = np.float32([centre - half * across - half * down - origin,
                          centre + half * across - half * down - origin,
                          centre - half * across + half * down - origin])
    target = np.float32([[side, 0], [0, 0], [side, side]] if mirror else
                        [[0, 0], [side, 0], [0, side]])
    to_crop = cv2.getAffineTransform(corners, target)
    crop = cv2.warpAffine(region, to_crop, (side, side), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REPLICATE)
    back = cv2.invertAffineTransform(to_crop)
    back[:, 2] += origin
    return crop.astype(np.float32) / 255.0, back


class FaceModels:
    """The detector and the mesh, one LiteRT interpreter pair per thread (an interpreter is
    not thread-safe; `distill cull` describes photos in a thread pool)."""

    def __init__(self, weights_dir: str | None = None):
        self.files = {name: weights.resolve(name, weights_dir)
                      for name in [d.weights for d in DETECTORS] + [MESH, IRIS]}
        self._local = threading.local()
        self._interpreters()  # a corrupt file fails here, once, naming itself

    def _interpreters(self) -> dict:
        if not hasattr(self._local, "models"):
            from ai_edge_litert.interpreter import Interpreter

            models = {}
            for name, (path, _) in self.files.items():
                try:
                    interpreter = Interpreter(model_path=str(path), num_threads=1)
                    interpreter.allocate_tensors()
                except (RuntimeError, ValueError) as exc:
                    raise WeightsMissingError(
                        f"weights {path.name} for teacher 'faces' cannot be loaded ({exc}); "
                        f"fetch it again with: distill weights fetch {name}") from None
                models[name] = interpreter
            self._local.models = models
        return self._local.models

    def _run(self, name: str, tensor: np.ndarray) -> list[np.ndarray]:
        interpreter = self._interpreters()[name]
        interpreter.set_tensor(interpreter.get_input_details()[0]["index"], tensor)
        interpreter.invoke()
        return [interpreter.get_tensor(d["index"]) for d in interpreter.get_output_details()]

    def provenance(self) -> list[dict]:
        return [weights_record(path, sha256) for path, sha256 in self.files.values()]

    def detect(self, image: Image.Image) -> list[tuple[np.ndarray, np.ndarray, float]]:
        """(box, keypoints, score) per face, in the image's pixels: box left, top, right,
        bottom; keypoints (6, 2), the subject's right eye first."""
        boxes, keypoints, scores = [], [], []
        for detector in DETECTORS:
            found = self._detect_with(detector, image)
            boxes.append(found[0])
            keypoints.append(found[1])
            scores.append(found[2])
        scores = np.concatenate(scores)
        if not len(scores):
            return []
        return weighted_nms(np.concatenate(boxes), np.concatenate(keypoints), scores)

    def _detect_with(self, detector: Detector, image: Image.Image) -> tuple[np.ndarray, ...]:
        """One model's detections above its threshold, in the image's pixels."""
        side = detector.side
        width, height = image.size
        scale = side / max(width, height)
        inner = (max(1, round(width * scale)), max(1, round(height * scale)))
        pad = ((side - inner[0]) // 2, (side - inner[1]) // 2)
        canvas = np.zeros((side, side, 3), dtype=np.float32)
        small = image.resize(inner, Image.Resampling.BILINEAR, reducing_gap=2.0)
        canvas[pad[1]:pad[1] + inner[1], pad[0]:pad[0] + inner[0]] = np.asarray(small)
        raw, logits = self._run(detector.weights, (canvas / 127.5 - 1.0)[None])
        logits = np.clip(logits[0, :, 0].astype(np.float64), -100, 100)
        scores = 1.0 / (1.0 + np.exp(-logits))
        chosen = np.flatnonzero(scores >= detector.min_score)
        values = raw[0, chosen] / side
        anchors = detector.anchors[chosen]
        centres = values[:, :2] + anchors
        boxes = np.concatenate([centres - values[:, 2:4] / 2, centres + values[:, 2:4] / 2], 1)
        keypoints = values[:, 4:16].reshape(-1, 6, 2) + anchors[:, None, :]
        offset = np.array(pad, dtype=np.float32) / side
        to_image = side / scale
        return ((boxes - np.tile(offset, 2)) * to_image, (keypoints - offset) * to_image,
                scores[chosen])

    def mesh(self, image: Image.Image, box: np.ndarray, keypoints: np.ndarray
             ) -> tuple[np.ndarray, float]:
        """468 landmarks (x, y in the image's pixels, z) and the face-presence score."""
        right_eye, left_eye = keypoints[0], keypoints[1]
        angle = math.atan2(left_eye[1] - right_eye[1], left_eye[0] - right_eye[0])
        half = max(box[2] - box[0], box[3] - box[1]) * ROI_SCALE / 2
        cropped = _square_crop(image, (box[:2] + box[2:]) / 2, half, angle, MESH_SIDE)
        if cropped is None:
            return np.zeros((468, 3), dtype=np.float32), 0.0
        crop, back = cropped
        landmarks, presence = self._run(MESH, crop[None])
        points = landmarks.reshape(-1, 3).copy()
        points[:, :2] = points[:, :2] @ back[:, :2].T + back[:, 2]
        return points, float(1.0 / (1.0 + math.exp(-float(presence.ravel()[0]))))

    def eyelids(self, image: Image.Image, points: np.ndarray, eye: str) -> np.ndarray | None:
        """The eye model's 16 eyelid points (image pixels) for one eye of the mesh, on a crop
        2.3 eye widths wide; the subject's left eye is mirrored, as the model expects."""
        (outer, inner), _, _ = EYES[eye]
        first, second = sorted((points[outer, :2], points[inner, :2]), key=lambda p: p[0])
        width = float(np.linalg.norm(second - first))
        if width < 2:
            return None
        angle = math.atan2(second[1] - first[1], second[0] - first[0])
        cropped = _square_crop(image, (first + second) / 2, width * IRIS_ROI_SCALE / 2, angle,
                               IRIS_SIDE, mirror=eye == "left")
        if cropped is None:
            return None
        crop, back = cropped
        contours, _ = self._run(IRIS, crop[None])
        lids = contours.reshape(-1, 3)[:16, :2]
        return lids @ back[:, :2].T + back[:, 2]

    def records(self, image: Image.Image) -> list[dict]:
        """`face_record` of every face of a decoded photo, boxes as fractions of its size."""
        size = image.info.get(ORIGINAL_SIZE_KEY, image.size)
        return [face_record(face, size) for face in self.faces(image, size)]

    def faces(self, image: Image.Image, original_size: tuple[int, int] | None = None
              ) -> list[Face]:
        """Every face of an RGB image, measured at the image's resolution; boxes are given in
        `original_size` pixels (the photo's size before any draft reduction)."""
        image = image if image.mode == "RGB" else image.convert("RGB")
        to_original = (original_size[0] / image.width) if original_size else 1.0
        pixels = None
        found = []
        for box, keypoints, score in self.detect(image):
            points, presence = self.mesh(image, box, keypoints)
            if presence < MIN_PRESENCE:
                continue
            if pixels is None:
                pixels = luma(image)
            lids = [self.eyelids(image, points, eye) for eye in ("right", "left")]
            ratios = tuple(eye_aspect_ratio(c) if c is not None else float("nan") for c in lids)
            found.append(Face(
                box=tuple(float(v) * to_original for v in box), score=score,
                eyes_open=ratios, sharpness=eyes_focus(pixels, points),
                exposure=_mean_in(pixels, box) / 255.0))
        return found


def face_record(face: Face, size: tuple[int, int]) -> dict:
    """A face as `distill cull` journals it: the box as fractions of the photo's width and
    height (left, top, right, bottom), the measures rounded, and the verdict on the eyes."""
    record = face.record()
    record["box"] = [round(v / side, 4) for v, side in zip(face.box, size * 2)]
    record["eyes_closed"] = face.eyes_closed
    return record


def _clamped(pixels: np.ndarray, box: Sequence[float]) -> tuple[int, int, int, int]:
    rows, cols = pixels.shape
    left, top, right, bottom = box
    return (int(np.clip(top, 0, rows)), int(np.clip(left, 0, cols)),
            int(np.clip(bottom, 0, rows)), int(np.clip(right, 0, cols)))


def _mean_in(pixels: np.ndarray, box: Sequence[float]) -> float:
    top, left, bottom, right = _clamped(pixels, box)
    region = pixels[top:bottom, left:right]
    return float(region.mean()) if region.size else float("nan")


def eyes_focus(pixels: np.ndarray, points: np.ndarray) -> float:
    """Focus on the eyes and brows: what a photographer zooms in on."""
    corners = [i for eye in EYES.values() for i in (*eye[0], *eye[1], *eye[2])]
    spots = points[corners + list(BROWS), :2]
    (left, top), (right, bottom) = spots.min(0), spots.max(0)
    margin = 0.15 * (right - left)
    return focus(pixels, [_clamped(pixels, (left - margin, top - margin,
                                            right + margin, bottom + margin))])


def summary(faces: Sequence[Face]) -> dict[str, float]:
    """Per photo: face count, faces with closed eyes, the least sharp face, the least open eye."""
    sharpness = [f.sharpness for f in faces if np.isfinite(f.sharpness)]
    return {
        "face_count": float(len(faces)),
        "face_eyes_closed": float(sum(f.eyes_closed for f in faces)),
        "face_min_sharpness": min(sharpness) if sharpness else float("nan"),
        "face_min_eyes_open": min((min(f.eyes_open) for f in faces), default=float("nan")),
        "face_exposure": float(np.mean([f.exposure for f in faces])) if faces else float("nan"),
    }


class FacesTeacher(Teacher):
    spec = TeacherSpec(
        "faces", higher_is_better=True, score_range=(0.0, 1.0), input_size=None,
        description="faces (MediaPipe BlazeFace + face mesh via LiteRT): share of faces with "
        "open eyes; 1 without faces; per-photo face measures as extras",
    )
    batch_size = 8
    per_process = True

    def __init__(self, weights_dir: str | None = None):
        self.models = FaceModels(weights_dir)

    def _score_batch(self, images: Sequence[Image.Image]) -> TeacherOutput:
        rows = [summary(self.models.faces(image)) for image in images]
        scores = [1.0 - r["face_eyes_closed"] / r["face_count"] if r["face_count"] else 1.0
                  for r in rows]
        extras = {key: np.array([r[key] for r in rows]) for key in rows[0]} if rows else {}
        return TeacherOutput(scores=np.asarray(scores, dtype=np.float64), extras=extras)

    def provenance(self) -> dict:
        return {"teacher": self.name, "weights": self.models.provenance(),
                "libraries": library_versions("ai-edge-litert", "numpy", "opencv-python-headless",
                                              "scikit-image"),
                "eyes_closed_below": EYES_CLOSED_BELOW,
                "min_detection_scores": {d.weights: d.min_score for d in DETECTORS}}


def create_faces(weights_dir: str | None = None) -> Teacher:
    """Faces, eyes open or closed, face sharpness; weights: face-detection-short-range,
    face-detection-full-range, face-landmark and iris-landmark (`distill weights fetch`, from the mediapipe 0.10.14 wheel)."""
    return FacesTeacher(weights_dir)
