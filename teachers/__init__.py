"""The teacher zoo: pretrained image-quality and aesthetic models behind one interface.

    >>> from teachers import create_teacher
    >>> brisque = create_teacher("brisque")
    >>> brisque.score([pil_image]).scores
"""

from __future__ import annotations

from teachers.base import Teacher, TeacherOutput, TeacherSpec
from teachers.registry import TEACHERS

# Teachers that need no download: what the offline defaults use.
OFFLINE_TEACHERS = ("brisque", "piqe", "technical")


def create_teacher(name: str, **opts) -> Teacher:
    return TEACHERS.create(name, **opts)


def list_teachers() -> list[str]:
    return TEACHERS.names()


__all__ = ["OFFLINE_TEACHERS", "TEACHERS", "Teacher", "TeacherOutput", "TeacherSpec",
           "create_teacher", "list_teachers"]
