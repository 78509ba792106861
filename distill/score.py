"""Ad-hoc scoring (`distill score`): teachers over files and folders, one row per input.

Every input ends as exactly one row: scored, or carrying the stage and reason it failed.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from distill.decode import DecodeError, decode_path, find_images
from distill.errors import ConfigError
from teachers import Teacher, create_teachers

CHUNK = 32  # images decoded and held at once by `score_paths`


@dataclass
class ScoreResult:
    rows: list[dict] = field(default_factory=list)  # one per input, in input order
    provenance: list[dict] = field(default_factory=list)

    @property
    def errors(self) -> list[dict]:
        return [row for row in self.rows if row.get("error")]


def parse_teacher_options(options: Iterable[str]) -> dict[str, dict[str, object]]:
    """`nima.backbone=vgg16` → {"nima": {"backbone": "vgg16"}}; values parse as YAML scalars."""
    import yaml

    parsed: dict[str, dict[str, object]] = {}
    for option in options:
        key, sep, value = option.partition("=")
        teacher, dot, name = key.partition(".")
        if not (sep and dot and teacher and name):
            raise ConfigError(f"bad teacher option {option!r}; expected TEACHER.KEY=VALUE")
        parsed.setdefault(teacher, {})[name] = yaml.safe_load(value)
    return parsed


TEACHER_SETS = Path(__file__).resolve().parents[1] / "configs" / "teachers.yaml"


def expand_teacher_sets(names: Sequence[str], sets_file: Path = TEACHER_SETS
                        ) -> tuple[list[str], dict[str, dict]]:
    """Replace a named set from configs/teachers.yaml (e.g. `offline`) by its teachers."""
    import yaml

    sets = yaml.safe_load(sets_file.read_text()) if sets_file.is_file() else {}
    expanded: dict[str, dict] = {}
    for name in names:
        members = sets.get(name) or {name: {}}
        for teacher, opts in members.items():
            expanded.setdefault(teacher, {}).update(opts or {})
    return list(expanded), {k: v for k, v in expanded.items() if v}


def build_teachers(names: Sequence[str], options: dict[str, dict] | None = None,
                   weights_dir: str | None = None) -> list[Teacher]:
    options = options or {}
    unknown = set(options) - set(names)
    if unknown:
        raise ConfigError(f"options given for teachers not in use: {', '.join(sorted(unknown))}")
    return create_teachers({name: options.get(name, {}) for name in names}, weights_dir)


def score_paths(paths: Sequence[str | os.PathLike], teachers: Sequence[Teacher], *,
                draft_size: int | None = None, progress: bool = True) -> ScoreResult:
    files = find_images(list(paths))
    result = ScoreResult(provenance=[t.provenance() for t in teachers])
    bar = tqdm(total=len(files), unit="img", disable=not progress, desc="scoring")
    for start in range(0, len(files), CHUNK):
        chunk = files[start : start + CHUNK]
        rows, decoded = [], []
        for path in chunk:
            row = {"path": str(path)}
            try:
                item = decode_path(path, draft_size=draft_size)
            except DecodeError as exc:
                row.update(stage="decode", error=str(exc))
            else:
                row.update(width=item.width, height=item.height, sha1=item.sha1, notes=item.notes)
                decoded.append((row, item.image))
            rows.append(row)
        images = [image for _, image in decoded]
        for teacher in teachers:
            output = teacher.score(images) if images else None
            for index, (row, _) in enumerate(decoded):
                row[f"score_{teacher.name}"] = float(output.scores[index])
                if index in output.errors and "error" not in row:
                    row.update(stage=f"teacher:{teacher.name}", error=output.errors[index])
        result.rows.extend(rows)
        bar.update(len(chunk))
    bar.close()
    return result


def read_embeddings(path: str | os.PathLike, column: str | None = None) -> tuple[list[str], np.ndarray]:
    """Load CLIP embeddings from .npy (N, D) or parquet, as clip-retrieval and LAION dumps hold them.

    Parquet: the vector column is `column`, else the first of embedding/img_emb/emb/clip_emb;
    ids come from key/image_path/url/path when present, else the row number.
    """
    path = Path(path)
    if path.suffix == ".npy":
        matrix = np.load(path)
        return [str(i) for i in range(len(matrix))], np.asarray(matrix, dtype=np.float32)
    if path.suffix != ".parquet":
        raise ConfigError(f"{path}: embeddings must be .npy or .parquet")
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    names = table.column_names
    column = column or next((c for c in ("embedding", "img_emb", "emb", "clip_emb") if c in names), None)
    if column not in names:
        raise ConfigError(f"{path}: no embedding column (have {', '.join(names)}); use --embedding-column")
    matrix = np.asarray(table.column(column).to_pylist(), dtype=np.float32)
    id_column = next((c for c in ("key", "image_path", "url", "path") if c in names), None)
    ids = [str(v) for v in table.column(id_column).to_pylist()] if id_column else [
        str(i) for i in range(len(matrix))]
    return ids, matrix
