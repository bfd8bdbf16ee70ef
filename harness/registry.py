"""One generic registry: decorator registration, lazy entries, "did you mean" errors."""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from harness.errors import HarnessError

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to objects. Entries may be registered lazily as "module:attribute" so heavy
    dependencies (torch, vllm, openai) load only when the entry is used."""

    def __init__(self, kind: str):
        self.kind = kind
        self._objects: dict[str, T] = {}
        self._lazy: dict[str, str] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def deco(obj: T) -> T:
            self.add(name, obj)
            return obj

        return deco

    def add(self, name: str, obj: T) -> None:
        if name in self._objects or name in self._lazy:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        self._objects[name] = obj

    def add_lazy(self, name: str, target: str) -> None:
        if name in self._objects or name in self._lazy:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        self._lazy[name] = target

    def names(self) -> list[str]:
        return sorted({*self._objects, *self._lazy})

    def __contains__(self, name: object) -> bool:
        return name in self._objects or name in self._lazy

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def get(self, name: str) -> T:
        if name in self._objects:
            return self._objects[name]
        if name in self._lazy:
            module_name, _, attr = self._lazy[name].partition(":")
            obj: T = getattr(importlib.import_module(module_name), attr)
            self._objects[name] = obj
            del self._lazy[name]
            return obj
        raise HarnessError(self.unknown_message(name))

    def unknown_message(self, name: str) -> str:
        close = difflib.get_close_matches(name, self.names(), n=3)
        hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        return f"unknown {self.kind} {name!r}{hint} (known: {', '.join(self.names())})"
