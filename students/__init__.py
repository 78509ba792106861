"""Compact keep/trash students: a registry and `create_student(name, **opts)`.

The backbones (mobilenetv3, efficientnet_b0, resnet18, a tiny CNN) register here with the
distillation issue; until then the registry is empty and says so.
"""

from __future__ import annotations

from distill.registry import Registry

STUDENTS: Registry = Registry("student")


def create_student(name: str, **opts):
    return STUDENTS.create(name, **opts)


def list_students() -> list[str]:
    return STUDENTS.names()
