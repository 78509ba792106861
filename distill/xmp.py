"""XMP sidecars for culling decisions: xmp:Rating 1–5 and digiKam's pick label, written and
merged by exiv2, the library digiKam itself reads them with.

digiKam reads `Xmp.xmp.Rating` and `Xmp.digiKam.PickLabel` (0 none, 1 rejected, 2 pending,
3 accepted) from a sidecar named `photo.jpg.xmp` (its default) or `photo.xmp` (Lightroom's and
darktable's habit). An existing sidecar is merged: only those two properties change. exiv2
parses a packet with any number of `rdf:Description` blocks (exiftool writes one per
namespace) into one property set, so a merge never leaves a second, stale rating behind.

A sidecar is untrusted input: it is first parsed by defusedxml, which refuses DTDs, entity
expansion (billion laughs) and external references (XXE), and a sidecar that fails any check
is left untouched and reported as that photo's XMP error. Writes go to a temporary copy that
replaces the sidecar only once exiv2 has written it whole.
"""

from __future__ import annotations

import os
from pathlib import Path

import defusedxml.ElementTree as SafeET
import exiv2
from defusedxml import DefusedXmlException

from distill.errors import DistillError
from distill.safefs import partial_path

exiv2.LogMsg.setLevel(exiv2.LogMsg.Level.mute)  # failures reach the user as XmpError instead

RATING = "Xmp.xmp.Rating"
PICK_LABEL = "Xmp.digiKam.PickLabel"
KEYWORDS = "Xmp.dc.subject"  # the keywords digiKam, darktable and Lightroom all show
KEYWORD_PREFIX = "distill/"  # ours: replaced on every write, the user's own are kept
# The sidecar agrees with the folder a photo was put in: the decision sets the pick label.
PICK_LABELS = {"trash": 1, "pending": 2, "keep": 3}  # digiKam: rejected, pending, accepted
MAX_SIDECAR_BYTES = 16 << 20  # real sidecars are kilobytes; beyond this it is not one


class XmpError(DistillError):
    """A sidecar that cannot be read or written safely; it was left as it was."""


def rating_from_quality(quality: float) -> int:
    """1–10 quality onto 1–5 stars, evenly."""
    return int(min(5, max(1, round(1 + (quality - 1) * 4 / 9))))


def sidecar_candidates(photo: Path) -> tuple[Path, Path]:
    """digiKam's `photo.jpg.xmp`, then Lightroom's and darktable's `photo.xmp`."""
    return photo.with_name(photo.name + ".xmp"), photo.with_suffix(".xmp")


def sidecar_for(photo: Path) -> Path:
    """An existing `photo.jpg.xmp` or `photo.xmp`, else digiKam's default name."""
    for candidate in sidecar_candidates(photo):
        if candidate.exists():
            return candidate
    return sidecar_candidates(photo)[0]


def sidecar_after_move(sidecar: Path, photo: Path, target: Path) -> Path:
    """Where `photo`'s sidecar goes when the photo moves to `target`: the same naming form."""
    long_form, _ = sidecar_candidates(photo)
    return sidecar_candidates(target)[0 if sidecar == long_form else 1]


def check_untrusted(path: Path) -> bytes:
    """The sidecar's bytes, once defusedxml has parsed them with every attack refused."""
    try:
        size = path.stat().st_size
        if size > MAX_SIDECAR_BYTES:
            raise XmpError(f"{path}: {size} bytes is too large for a sidecar; left untouched")
        data = path.read_bytes()
        SafeET.fromstring(data, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except DefusedXmlException as exc:
        raise XmpError(f"{path}: refused ({type(exc).__name__}: DTDs, entities and external "
                       "references are not allowed in a sidecar); left untouched") from None
    except SafeET.ParseError as exc:
        raise XmpError(f"{path}: not valid XML ({exc}); left untouched") from None
    except OSError as exc:
        raise XmpError(f"{path}: unreadable ({exc.strerror or exc}); left untouched") from None
    return data


def _open(path: Path):
    image = exiv2.ImageFactory.open(str(path))
    image.readMetadata()
    return image


def _set_keywords(data, keywords: list[str]) -> None:
    """Replace our `distill/…` keywords in dc:subject, keeping every keyword of the user's."""
    key = exiv2.XmpKey(KEYWORDS)
    found = data.findKey(key)
    existing = []
    if found != data.end():
        value = found.value()
        existing = [value.toString(i) for i in range(value.count())]
        data.erase(found)
    kept = [k for k in existing if not k.startswith(KEYWORD_PREFIX)]
    wanted = kept + [f"{KEYWORD_PREFIX}{k}" for k in keywords]
    if wanted:
        bag = exiv2.XmpArrayValue(exiv2.TypeId.xmpBag)
        for keyword in wanted:
            bag.read(keyword)
        data.add(key, bag)


def write_sidecar(sidecar: Path, rating: int, pick_label: int,
                  keywords: list[str] = ()) -> Path:
    """Set the rating, pick label and our keywords (e.g. `distill/blurry`) in `sidecar`,
    creating it or merging into it."""
    sidecar = Path(sidecar)
    partial = partial_path(sidecar)
    try:
        if sidecar.exists():
            # exiv2 merges into exactly the bytes defusedxml checked, read once
            partial.write_bytes(check_untrusted(sidecar))
            image = _open(partial)
            if image.mimeType() != "application/rdf+xml":
                raise XmpError(f"{sidecar}: not an XMP packet ({image.mimeType()}); left untouched")
        else:
            image = exiv2.ImageFactory.create(exiv2.ImageType.xmp, str(partial))
        data = image.xmpData()
        data[RATING] = str(int(rating))
        data[PICK_LABEL] = str(int(pick_label))
        _set_keywords(data, list(keywords))
        image.setXmpData(data)
        image.writeMetadata()
        del image  # exiv2 holds the file open until the image is gone
        os.replace(partial, sidecar)
    except exiv2.Exiv2Error as exc:
        raise XmpError(f"{sidecar}: exiv2 could not merge it ({exc}); left untouched") from None
    finally:
        partial.unlink(missing_ok=True)
    return sidecar


def read_sidecar(sidecar: Path) -> dict[str, str]:
    """Every XMP property of a sidecar, as {"Xmp.prefix.Name": value} (exiv2's keys)."""
    data = check_untrusted(Path(sidecar))
    try:
        image = exiv2.ImageFactory.open(data)  # the checked bytes, not the file again
        image.readMetadata()
        return {datum.key(): datum.toString() for datum in image.xmpData()}
    except exiv2.Exiv2Error as exc:
        raise XmpError(f"{sidecar}: exiv2 cannot read it ({exc})") from None
