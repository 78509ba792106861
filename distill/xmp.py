"""XMP sidecars for culling decisions: xmp:Rating 1–5 and digiKam's pick label.

digiKam reads `Xmp.xmp.Rating` and `Xmp.digiKam.PickLabel` (0 none, 1 rejected, 2 pending,
3 accepted) from a sidecar named `photo.jpg.xmp` (its default) or `photo.xmp`. An existing
sidecar is merged: only those two properties change, everything else is kept.
"""

from __future__ import annotations

import os
import re
import xml.etree.ElementTree as ET
from pathlib import Path

NS = {
    "x": "adobe:ns:meta/",
    "rdf": "http://www.w3.org/1999/02/22-rdf-syntax-ns#",
    "xmp": "http://ns.adobe.com/xap/1.0/",
    "digiKam": "http://www.digikam.org/ns/1.0/",
}
PICK_LABELS = {0: 1, 1: 2, 2: 3}  # tier → digiKam PickLabel (rejected, pending, accepted)
_XPACKET = re.compile(r"<\?xpacket[^>]*\?>")


def rating_from_quality(quality: float) -> int:
    """1–10 quality onto 1–5 stars, evenly."""
    return int(min(5, max(1, round(1 + (quality - 1) * 4 / 9))))


def sidecar_for(photo: Path) -> Path:
    """An existing `photo.jpg.xmp` or `photo.xmp`, else digiKam's default name."""
    for candidate in (photo.with_name(photo.name + ".xmp"), photo.with_suffix(".xmp")):
        if candidate.exists():
            return candidate
    return photo.with_name(photo.name + ".xmp")


def _register_namespaces(text: str) -> None:
    for prefix, uri in {**NS, **dict(re.findall(r'xmlns:([\w.-]+)="([^"]+)"', text))}.items():
        ET.register_namespace(prefix, uri)


def _description(root: ET.Element) -> ET.Element:
    rdf = root if root.tag == f"{{{NS['rdf']}}}RDF" else root.find(f"{{{NS['rdf']}}}RDF")
    if rdf is None:
        rdf = ET.SubElement(root, f"{{{NS['rdf']}}}RDF")
    description = rdf.find(f"{{{NS['rdf']}}}Description")
    if description is None:
        description = ET.SubElement(rdf, f"{{{NS['rdf']}}}Description", {f"{{{NS['rdf']}}}about": ""})
    return description


def _set(description: ET.Element, prefix: str, name: str, value: str) -> None:
    """Set a simple property, whether the file wrote it as an attribute or as an element."""
    tag = f"{{{NS[prefix]}}}{name}"
    element = description.find(tag)
    if element is not None:
        element.text = value
        description.attrib.pop(tag, None)
    else:
        description.set(tag, value)


def write_sidecar(photo: Path, quality: float, tier: int) -> Path:
    sidecar = sidecar_for(photo)
    original = sidecar.read_text(encoding="utf-8") if sidecar.exists() else ""
    _register_namespaces(original)
    root = ET.fromstring(original) if original.strip() else ET.Element(f"{{{NS['x']}}}xmpmeta")
    description = _description(root)
    _set(description, "xmp", "Rating", str(rating_from_quality(quality)))
    _set(description, "digiKam", "PickLabel", str(PICK_LABELS[int(tier)]))
    body = ET.tostring(root, encoding="unicode")
    packets = _XPACKET.findall(original)
    if len(packets) == 2:  # keep the xpacket wrapper that tools write around the packet
        body = f"{packets[0]}\n{body}\n{packets[1]}"
    partial = sidecar.with_name(f".{sidecar.name}.partial")
    partial.write_text(body + "\n", encoding="utf-8")
    os.replace(partial, sidecar)
    return sidecar


def read_sidecar(sidecar: Path) -> dict[str, str]:
    """The simple properties of a sidecar's first rdf:Description, as {"prefix:name": value}."""
    root = ET.fromstring(sidecar.read_text(encoding="utf-8"))
    description = _description(root)
    uri_to_prefix = {uri: prefix for prefix, uri in NS.items()}
    values = {}
    for key, value in description.attrib.items():
        uri, _, name = key[1:].partition("}")
        values[f"{uri_to_prefix.get(uri, uri)}:{name}"] = value
    for child in description:
        uri, _, name = child.tag[1:].partition("}")
        if child.text and child.text.strip():
            values[f"{uri_to_prefix.get(uri, uri)}:{name}"] = child.text.strip()
    return values
