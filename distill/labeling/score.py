"""Ad-hoc scoring (`distill score`): teachers over files and folders, one row per input.

Every input ends as exactly one row: scored, or carrying the stage and reason it failed.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field

from tqdm import tqdm

from distill.decode import DecodeError, decode_path, find_images
from distill.errors import ConfigError
from distill.names import as_text
from distill.scoring import expand_teacher_sets, parse_teacher_options
from distill.similar import read_embeddings
from distill.sources import packaged_photos
from teachers import Teacher, create_teachers

CHUNK = 32  # images decoded and held at once by `score_paths`


@dataclass
class ScoreResult:
    rows: list[dict] = field(default_factory=list)  # one per input, in input order
    provenance: list[dict] = field(default_factory=list)

    @property
    def errors(self) -> list[dict]:
        return [row for row in self.rows if row.get("error")]


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
            row = {"path": as_text(path)}
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


def score(paths: Sequence[str | os.PathLike] = (), *, teachers: str = "offline",
          options: Sequence[str] = (), embeddings: str | os.PathLike | None = None,
          embedding_column: str | None = None, draft_size: int | None = None,
          weights_dir: str | None = None, progress: bool = True) -> ScoreResult:
    """`distill score`: raw teacher scores of image files or folders (no paths: the sample
    photos installed packages ship), or of precomputed CLIP `embeddings` with clip_aesthetic.
    `teachers` names teachers or sets; `options` are TEACHER.KEY=VALUE strings."""
    names, teacher_options = expand_teacher_sets(teachers.split(","))
    for teacher, opts in parse_teacher_options(options).items():
        teacher_options.setdefault(teacher, {}).update(opts)
    if embeddings:
        if names != ["clip_aesthetic"]:
            raise ConfigError("--embeddings is scored by --teachers clip_aesthetic alone")
        teacher_options.setdefault("clip_aesthetic", {})["embeddings_only"] = True
        (teacher,) = build_teachers(names, teacher_options, weights_dir)
        ids, matrix = read_embeddings(embeddings, embedding_column)
        scores = teacher.score_embeddings(matrix).scores
        return ScoreResult(rows=[{"id": i, "score_clip_aesthetic": float(s)}
                                 for i, s in zip(ids, scores)],
                           provenance=[teacher.provenance()])
    teachers_built = build_teachers(names, teacher_options, weights_dir)
    return score_paths(list(paths) or packaged_photos(), teachers_built,
                       draft_size=draft_size, progress=progress)
