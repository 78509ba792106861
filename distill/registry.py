"""A name → factory registry shared by teachers and students (the timm / pyiqa pattern).

Factories are named as "module:function" and imported on first use, so that listing what
exists (`distill teachers`, `--help`) does not import torch, pyiqa and open_clip.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from distill.errors import ConfigError

T = TypeVar("T")


@dataclass(frozen=True)
class Entry:
    target: str  # "package.module:factory"
    description: str

    @property
    def module(self) -> str:
        return self.target.partition(":")[0]

    def load(self) -> Callable:
        return getattr(importlib.import_module(self.module), self.target.partition(":")[2])


class Registry(Generic[T]):
    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, Entry] = {}

    def add(self, name: str, target: str, description: str) -> None:
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        self._entries[name] = Entry(target, description)

    def names(self) -> list[str]:
        return sorted(self._entries)

    def _entry(self, name: str) -> Entry:
        if name not in self._entries:
            raise ConfigError(f"unknown {self.kind} {name!r}; known: {', '.join(self.names())}")
        return self._entries[name]

    def module(self, name: str) -> str:
        """The module that defines `name` (imported by whoever makes it)."""
        return self._entry(name).module

    def describe(self, name: str) -> str:
        return self._entry(name).description

    def accepts(self, name: str, option: str) -> bool:
        return option in inspect.signature(self._entry(name).load()).parameters

    def __contains__(self, name: str) -> bool:
        return name in self._entries

    def create(self, name: str, **opts) -> T:
        factory = self._entry(name).load()
        try:
            return factory(**opts)
        except TypeError as exc:
            # A misspelt option becomes a config error naming the key, not a traceback.
            if "unexpected keyword argument" in str(exc):
                bad = str(exc).split("'")[1] if "'" in str(exc) else str(exc)
                raise ConfigError(f"{self.kind} {name!r} has no option {bad!r}") from None
            raise
