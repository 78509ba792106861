"""Static HTML contact sheets: thumbnails beside their scores, for people to review labels.

One self-contained folder (index.html + thumbs/), no JavaScript, no external assets, so it
opens from a file:// URL on any machine, offline.
"""

from __future__ import annotations

import html
from pathlib import Path

from PIL import ImageDraw

from distill.decode import DecodeError, decode_path
from distill.names import as_path

THUMB_SIDE = 256
BOX_COLOUR = (255, 214, 0)  # face boxes on a review thumbnail
STYLE = """
body { font: 14px system-ui, sans-serif; margin: 1.5em; background: #fafafa; color: #222; }
h1 { font-size: 1.4em; } h2 { font-size: 1.1em; margin-top: 2em; }
.grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(230px, 1fr)); gap: 12px; }
figure { margin: 0; background: #fff; border: 1px solid #ddd; border-radius: 6px; padding: 8px; }
figure img { width: 100%; height: 170px; object-fit: contain; background: #eee; }
figcaption { font-size: 12px; line-height: 1.4; word-break: break-all; }
.keep { color: #11772d; font-weight: 600; } .trash { color: #b3261e; font-weight: 600; }
.pending { color: #8a5a00; font-weight: 600; } .badge { background: #11772d; color: #fff;
  border-radius: 4px; padding: 0 4px; font-size: 11px; }
table { border-collapse: collapse; } td { padding: 0 6px 0 0; vertical-align: top; }
td:first-child { white-space: nowrap; color: #555; }
"""


def thumbnail(path: str, folder: Path, name: str, boxes=()) -> str | None:
    """Write a JPEG thumbnail, with `boxes` (left, top, right, bottom as fractions of the
    photo) drawn on it; returns its path relative to the sheet, None if undecodable."""
    target = folder / "thumbs" / f"{name}.jpg"
    if not target.exists():
        try:
            image = decode_path(as_path(path), draft_size=THUMB_SIDE, max_side=THUMB_SIDE).image
        except DecodeError:
            return None
        draw = ImageDraw.Draw(image)
        for box in boxes:
            draw.rectangle([v * side for v, side in zip(box, image.size * 2)],
                           outline=BOX_COLOUR, width=2)
        target.parent.mkdir(parents=True, exist_ok=True)
        image.save(target, quality=85)
    return f"thumbs/{name}.jpg"


def _format(value) -> str:
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def card(row: dict, folder: Path, fields: list[str]) -> str:
    src = thumbnail(row["path"], folder, row["image_id"], row.get("boxes") or ())
    image = (f'<img src="{html.escape(src)}" alt="{html.escape(row["image_id"])}" loading="lazy">'
             if src else "<p>(cannot decode)</p>")
    label = row.get("label", "")
    cells = "".join(f"<tr><td>{html.escape(f)}</td><td>{html.escape(_format(row[f]))}</td></tr>"
                    for f in fields if f in row and row[f] is not None)
    badge = f' <span class=badge>{html.escape(row["badge"])}</span>' if row.get("badge") else ""
    return (f'<figure>{image}<figcaption><span class="{html.escape(str(label))}">'
            f"{html.escape(str(label))}</span>{badge} {html.escape(Path(row['path']).name)}"
            f"<table>{cells}</table></figcaption></figure>")


def write_sheet(folder: Path, title: str, sections: list[tuple[str, list[dict]]],
                fields: list[str], intro: str = "") -> Path:
    """sections: (heading, rows); each row needs image_id and path. Returns index.html."""
    folder.mkdir(parents=True, exist_ok=True)
    parts = [(f"<!doctype html><html lang=en><head><meta charset=utf-8>"
              f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>"),
             f"<h1>{html.escape(title)}</h1>", f"<p>{html.escape(intro)}</p>" if intro else ""]
    for heading, rows in sections:
        parts.append(f"<h2>{html.escape(heading)} ({len(rows)})</h2><div class=grid>")
        parts.extend(card(row, folder, fields) for row in rows)
        parts.append("</div>")
    parts.append("</body></html>")
    index = folder / "index.html"
    index.write_text("\n".join(parts), encoding="utf-8")
    return index
