"""The teacher zoo: pretrained image-quality and aesthetic models behind one interface.

    >>> from teachers import create_teacher
    >>> brisque = create_teacher("brisque")
    >>> brisque.score([pil_image]).scores
"""

from __future__ import annotations

from distill.scoring import OFFLINE_TEACHERS  # teachers that need no download
from teachers.base import Teacher, TeacherOutput, TeacherSpec
from teachers.registry import TEACHERS


def create_teacher(name: str, **opts) -> Teacher:
    return TEACHERS.create(name, **opts)


def create_teachers(specs: dict[str, dict], weights_dir: str | None = None,
                    device: str | None = None) -> list[Teacher]:
    """Build several teachers; `weights_dir` and `device` go to those that take them."""
    teachers = []
    for name, opts in specs.items():
        opts = dict(opts)
        for option, value in (("weights_dir", weights_dir), ("device", device)):
            if value and TEACHERS.accepts(name, option):
                opts.setdefault(option, value)
        teachers.append(TEACHERS.create(name, **opts))
    return teachers


def list_teachers() -> list[str]:
    return TEACHERS.names()


__all__ = ["OFFLINE_TEACHERS", "TEACHERS", "Teacher", "TeacherOutput", "TeacherSpec",
           "create_teacher", "list_teachers"]
