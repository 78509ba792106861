"""XMP sidecars for culling decisions: xmp:Rating 1–5 and digiKam's pick label, written and
merged by exiv2, the library digiKam itself reads them with.

digiKam reads `Xmp.xmp.Rating` and `Xmp.digiKam.PickLabel` (0 none, 1 rejected, 2 pending,
3 accepted) from a sidecar named `photo.jpg.xmp` (its default) or `photo.xmp` (Lightroom's and
darktable's habit). An existing sidecar is merged: only those two properties and our own
`distill/…` keywords change. exiv2 parses a packet with any number of `rdf:Description`
blocks (exiftool writes one per namespace) into one property set, so a merge never leaves a
second, stale rating behind.

A sidecar is untrusted input, and the user's: it is changed only when the change is proven
safe. It is read only when it is a regular file of sane size (never a link, FIFO, device or
directory), parsed by defusedxml, which refuses DTDs, entity expansion (billion laughs) and
external references (XXE), and merged by exiv2 in memory. The merged packet is then read
back through defusedxml's tree (a second reader, independent of exiv2's parser) and every
property the old sidecar had must be there with the same value (and, where exiftool is
installed, exiftool must read the same from both): exiv2 silently drops what it cannot parse
(an `rdf:parseType="Literal"` property, a struct nested hundreds deep, …), and a sidecar it
would lose anything of is left byte for byte and reported as an XmpError. The
merged bytes replace the sidecar through a temporary file with the old one's permissions and
owner, and only if the sidecar was not changed meanwhile. A read-only sidecar (no owner write
bit: 0444) is refused, as digiKam and Lightroom refuse it.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

import defusedxml.ElementTree as SafeET
import exiv2
from defusedxml import DefusedXmlException

from distill.decode import DecodeError, read_bytes
from distill.errors import DistillError
from distill.safefs import fits, partial_path

exiv2.LogMsg.setLevel(exiv2.LogMsg.Level.mute)  # failures reach the user as XmpError instead

RATING = "Xmp.xmp.Rating"
PICK_LABEL = "Xmp.digiKam.PickLabel"
KEYWORDS = "Xmp.dc.subject"  # the keywords digiKam, darktable and Lightroom all show
KEYWORD_PREFIX = "distill/"  # ours: replaced on every write, the user's own are kept
# The sidecar agrees with the folder a photo was put in: the decision sets the pick label.
PICK_LABELS = {"trash": 1, "pending": 2, "keep": 3}  # digiKam: rejected, pending, accepted
MAX_SIDECAR_BYTES = 16 << 20  # real sidecars are kilobytes; beyond this it is not one
MAX_DEPTH = 256  # element levels: deeper than any real packet, far from recursion's end

RDF = "http://www.w3.org/1999/02/22-rdf-syntax-ns#"
XML_LANG = "{http://www.w3.org/XML/1998/namespace}lang"
NAMESPACES = {"http://ns.adobe.com/xap/1.0/": "xmp", "http://www.digikam.org/ns/1.0/": "digiKam",
              "http://purl.org/dc/elements/1.1/": "dc", "http://ns.adobe.com/xap/1.0/mm/": "xmpMM",
              "http://ns.adobe.com/camera-raw-settings/1.0/": "crs",
              "http://ns.adobe.com/xap/1.0/sType/ResourceRef#": "stRef"}
_NS = {prefix: uri for uri, prefix in NAMESPACES.items()}
OURS = {(_NS["xmp"], "Rating"), (_NS["digiKam"], "PickLabel")}  # what a write sets
SUBJECT = (_NS["dc"], "subject")  # where a write replaces only our keywords


class XmpError(DistillError):
    """A sidecar that cannot be read or written safely; it was left as it was."""


def rating_from_quality(quality: float) -> int:
    """1–10 quality onto 1–5 stars, evenly."""
    return int(min(5, max(1, round(1 + (quality - 1) * 4 / 9))))


# ---------------------------------------------------------------- names

def sidecar_candidates(photo: Path) -> tuple[Path, ...]:
    """digiKam's `photo.jpg.xmp`, then Lightroom's and darktable's `photo.xmp`; a name the file
    system cannot hold (a photo named with 252–255 bytes) is not one."""
    return tuple(c for c in (photo.with_name(photo.name + ".xmp"), photo.with_suffix(".xmp"))
                 if fits(c))


def long_form(photo: Path) -> Path:
    return photo.with_name(photo.name + ".xmp")


def sidecar_for(photo: Path) -> Path:
    """An existing `photo.jpg.xmp` or `photo.xmp`, else the first name that fits."""
    candidates = sidecar_candidates(photo)
    return next((c for c in candidates if os.path.lexists(c)), candidates[0])


def sidecar_after_move(sidecar: Path, photo: Path, target: Path) -> Path:
    """Where `photo`'s sidecar goes when the photo moves to `target`: the same naming form."""
    if sidecar == long_form(photo) and fits(long_form(target)):
        return long_form(target)
    return target.with_suffix(".xmp")


# ---------------------------------------------------------------- reading untrusted packets

def read_untrusted(path: Path) -> bytes:
    """The bytes of a sidecar that is a regular file of sane size (a link is not followed)."""
    try:
        return read_bytes(path, follow_symlinks=False, max_bytes=MAX_SIDECAR_BYTES)
    except DecodeError as exc:
        raise XmpError(f"{path}: {exc}; left untouched") from None


def _parse(data: bytes, path: Path) -> ET.Element:
    try:
        return SafeET.fromstring(data, forbid_dtd=True, forbid_entities=True,
                                 forbid_external=True)
    except DefusedXmlException as exc:
        raise XmpError(f"{path}: refused ({type(exc).__name__}: DTDs, entities and external "
                       "references are not allowed in a sidecar); left untouched") from None
    except SafeET.ParseError as exc:
        raise XmpError(f"{path}: not valid XML ({exc}); left untouched") from None


def check_untrusted(path: Path) -> bytes:
    """The sidecar's bytes, once defusedxml has parsed them with every attack refused."""
    data = read_untrusted(path)
    _parse(data, path)
    return data


def properties(root: ET.Element, path: Path) -> dict[tuple[str, str], tuple]:
    """Every top-level property of an XMP packet as {(namespace, name): value}, read from
    defusedxml's tree, in a form that does not depend on how the packet spells it (attribute
    or element, one rdf:Description or several, nested Description or parseType="Resource")."""
    blocks = [d for rdf in root.iter(f"{{{RDF}}}RDF") for d in rdf
              if d.tag == f"{{{RDF}}}Description"]
    if not blocks:
        raise XmpError(f"{path}: not an XMP packet (no rdf:RDF/rdf:Description); left untouched")
    found: dict[tuple[str, str], tuple] = {}
    for block in blocks:
        for key, value in _fields(block, path, 0):
            if key in found:
                raise XmpError(f"{path}: {_name(key)} is given twice; left untouched")
            found[key] = value
    return found


def _key(tag: str) -> tuple[str, str]:
    namespace, _, name = tag[1:].partition("}") if tag.startswith("{") else ("", "", tag)
    return namespace, name


def _name(key: tuple[str, str]) -> str:
    return f"{NAMESPACES.get(key[0], key[0])}:{key[1]}"


def _fields(node: ET.Element, path: Path, depth: int) -> list[tuple[tuple[str, str], tuple]]:
    """The properties of a node element (or a parseType="Resource" property): its attributes
    outside rdf: and xml:, then its child elements."""
    if depth > MAX_DEPTH:
        raise XmpError(f"{path}: nested more than {MAX_DEPTH} levels deep; left untouched")
    fields = [(_key(k), ("text", v, "")) for k, v in node.attrib.items()
              if not k.startswith((f"{{{RDF}}}", "{http://www.w3.org/XML/1998/namespace}"))]
    return fields + [(_key(child.tag), _value(child, path, depth + 1)) for child in node]


def _value(element: ET.Element, path: Path, depth: int) -> tuple:
    if depth > MAX_DEPTH:
        raise XmpError(f"{path}: nested more than {MAX_DEPTH} levels deep; left untouched")
    parse_type = element.get(f"{{{RDF}}}parseType")
    lang = element.get(XML_LANG, "")
    if parse_type == "Literal":
        inner = (element.text or "") + "".join(ET.tostring(c, encoding="unicode") for c in element)
        return ("literal", inner, lang)
    if f"{{{RDF}}}resource" in element.attrib:
        return ("uri", element.get(f"{{{RDF}}}resource"), lang)
    children = list(element)
    if parse_type == "Resource" or (children and children[0].tag != f"{{{RDF}}}Description"
                                    and _key(children[0].tag)[0] != RDF):
        return ("struct", tuple(sorted(_fields(element, path, depth))), lang)
    if not children:
        fields = _fields(element, path, depth)
        return ("struct", tuple(sorted(fields)), lang) if fields else (
            "text", element.text or "", lang)
    container = children[0]
    if container.tag == f"{{{RDF}}}Description":
        return ("struct", tuple(sorted(_fields(container, path, depth + 1))), lang)
    items = tuple(_value(li, path, depth + 2) for li in container if li.tag == f"{{{RDF}}}li")
    return (_key(container.tag)[1], items, lang)


def _texts(value: tuple | None) -> list[str]:
    """The strings of a simple value or an array (dc:subject's keywords)."""
    if value is None:
        return []
    if value[0] in ("Bag", "Seq", "Alt"):
        return [item[1] for item in value[1] if item[0] == "text"]
    return [value[1]] if value[0] == "text" else [repr(value)]


def named_photos(sidecar: Path) -> set[str]:
    """The file names a sidecar says it belongs to: `crs:RawFileName` (Lightroom, Camera Raw)
    and `xmpMM:DerivedFrom`'s file path; empty when it names none or cannot be read."""
    try:
        found = properties(_parse(read_untrusted(sidecar), sidecar), sidecar)
    except XmpError:
        return set()
    names = _texts(found.get((_NS["crs"], "RawFileName")))
    derived = found.get((_NS["xmpMM"], "DerivedFrom"))
    if derived and derived[0] == "struct":
        names += _texts(dict(derived[1]).get((_NS["stRef"], "filePath")))
    elif derived:
        names += _texts(derived)
    return {Path(name.replace("\\", "/")).name for name in names if name}


# ---------------------------------------------------------------- writing

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


def _merged(data: bytes | None, sidecar: Path, rating: int, pick_label: int,
            keywords: list[str]) -> bytes:
    """exiv2's packet: `data` (or a new one) with our properties set, built in memory."""
    try:
        if data is None:
            image = exiv2.ImageFactory.create(exiv2.ImageType.xmp)
        else:
            image = exiv2.ImageFactory.open(data)  # exactly the bytes defusedxml checked
            image.readMetadata()
            if image.mimeType() != "application/rdf+xml":
                raise XmpError(f"{sidecar}: not an XMP packet ({image.mimeType()}); left untouched")
        values = image.xmpData()
        values[RATING] = str(int(rating))
        values[PICK_LABEL] = str(int(pick_label))
        _set_keywords(values, keywords)
        image.setXmpData(values)
        image.writeMetadata()
        return bytes(image.io().data())
    except exiv2.Exiv2Error as exc:
        raise XmpError(f"{sidecar}: exiv2 could not merge it ({exc}); left untouched") from None


def _user_keywords(props: dict) -> list[str]:
    return [k for k in _texts(props.get(SUBJECT)) if not k.startswith(KEYWORD_PREFIX)]


def _prove_kept(before: dict, after: dict, sidecar: Path, rating: int, pick_label: int) -> None:
    """Every property of the old sidecar is in the new one, unchanged (the user's keywords
    among ours), nothing else was added, and ours read back as written."""
    differ = [key for key in (before.keys() | after.keys()) - OURS - {SUBJECT}
              if before.get(key) != after.get(key)]
    if _user_keywords(before) != _user_keywords(after):
        differ.append(SUBJECT)
    written = {key: _texts(after.get(key)) for key in OURS}
    if differ or written != {(_NS["xmp"], "Rating"): [str(int(rating))],
                             (_NS["digiKam"], "PickLabel"): [str(int(pick_label))]}:
        names = ", ".join(sorted(_name(k) for k in differ)) or "the rating it was given"
        raise XmpError(f"{sidecar}: exiv2 would not keep {names} as it was (a property its "
                       "parser cannot read?); left untouched")


# exiftool's names for what a write changes, and for what is no property
EXIFTOOL_OURS = {"SourceFile", "XMP-x:XMPToolkit", "XMP-xmp:Rating", "XMP-digiKam:PickLabel"}


def _exiftool_agrees(before: bytes, after: bytes, sidecar: Path) -> None:
    """Where exiftool is installed, a second, independent reader: every XMP tag it reads in
    the old packet reads the same in the new one (the user's keywords among ours)."""
    exiftool = shutil.which("exiftool")
    if exiftool is None:
        return
    with tempfile.TemporaryDirectory(prefix="distill-xmp-") as folder:
        files = [Path(folder, "old.xmp"), Path(folder, "new.xmp")]
        for path, data in zip(files, (before, after)):
            path.write_bytes(data)
        try:
            done = subprocess.run([exiftool, "-j", "-struct", "-G1", "-n", "-XMP:all", *files],
                                  capture_output=True, timeout=120, check=False)
            old, new = json.loads(done.stdout or b"[]")
        except (ValueError, OSError, subprocess.SubprocessError):
            raise XmpError(f"{sidecar}: exiftool could not compare the merge with it; left "
                           "untouched") from None

    def keywords(tags: dict) -> list[str]:
        words = tags.pop("XMP-dc:Subject", [])
        return [str(w) for w in (words if isinstance(words, list) else [words])
                if not str(w).startswith(KEYWORD_PREFIX)]

    old = {k: v for k, v in old.items() if k not in EXIFTOOL_OURS}
    new = {k: v for k, v in new.items() if k not in EXIFTOOL_OURS}
    same_keywords = keywords(old) == keywords(new)  # takes XMP-dc:Subject out of both
    differ = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
    if not same_keywords or differ:
        raise XmpError(f"{sidecar}: exiftool reads {', '.join(differ) or 'XMP-dc:Subject'} "
                       "differently after exiv2's merge; left untouched")


def _replace(sidecar: Path, data: bytes, status: os.stat_result | None) -> None:
    """`data` takes the sidecar's name through a temporary file that has the old sidecar's
    permissions and owner; a sidecar changed since it was read is left to its writer."""
    partial = partial_path(sidecar)
    partial.unlink(missing_ok=True)  # ours, from a write a kill interrupted
    try:
        descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC,
                             0o600 if status else 0o666)
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
            handle.flush()
            if status:
                os.fchmod(descriptor, stat.S_IMODE(status.st_mode))
                if (status.st_uid, status.st_gid) != (os.geteuid(), os.getegid()):
                    try:
                        os.fchown(descriptor, status.st_uid, status.st_gid)
                    except PermissionError:
                        raise XmpError(f"{sidecar}: owned by another user; left untouched") from None
            os.fsync(descriptor)
        if status:
            now = os.lstat(sidecar)
            if (now.st_ino, now.st_size, now.st_mtime_ns) != (
                    status.st_ino, status.st_size, status.st_mtime_ns):
                raise XmpError(f"{sidecar}: changed by another program while it was merged; "
                               "left as that program wrote it")
        elif os.path.lexists(sidecar):
            raise XmpError(f"{sidecar}: appeared while it was written; left as it is")
        os.replace(partial, sidecar)
    finally:
        partial.unlink(missing_ok=True)


def write_sidecar(sidecar: Path, rating: int, pick_label: int,
                  keywords: list[str] = ()) -> Path:
    """Set the rating, pick label and our keywords (e.g. `distill/blurry`) in `sidecar`,
    creating it, or merging into it when every property it has is proven kept."""
    sidecar = Path(sidecar)
    try:
        status = os.lstat(sidecar)
    except FileNotFoundError:
        status = None
    except OSError as exc:
        raise XmpError(f"{sidecar}: {exc.strerror or exc}; left untouched") from None
    if status is not None and stat.S_ISREG(status.st_mode) and not status.st_mode & stat.S_IWUSR:
        # digiKam and Lightroom do not write a read-only sidecar either: the user's "keep out"
        raise XmpError(f"{sidecar}: read-only (mode {stat.S_IMODE(status.st_mode):04o}); left "
                       "untouched (make it writable for --xmp to rate it)")
    data, before = None, {}
    if status is not None:
        data = read_untrusted(sidecar)
        before = properties(_parse(data, sidecar), sidecar)
    merged = _merged(data, sidecar, rating, pick_label, list(keywords))
    _prove_kept(before, properties(_parse(merged, sidecar), sidecar), sidecar, rating,
                pick_label)
    if data is not None:
        _exiftool_agrees(data, merged, sidecar)
    try:
        _replace(sidecar, merged, status)
    except OSError as exc:
        raise XmpError(f"{sidecar}: could not be written ({exc.strerror or exc}); "
                       "left as it was") from None
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
