"""One generic registry: decorator registration, lazy entries, "did you mean" errors.

Task families (harness.protocols.*: formats, adapters, protocols, metrics) register their
objects where they are defined. A registry made with `families=True` imports every module of
the FAMILY_PACKAGES on its first lookup, so adding a family touches its module and a YAML,
nothing central. (The packages are named as strings: this ground-floor module never imports the
layers above it at import time.)"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable, Iterator, Mapping
from typing import Generic, TypeVar

from harness.errors import HarnessError

T = TypeVar("T")

FAMILY_PACKAGES = ("harness.scoring", "harness.protocols")
_families_loaded = False


def load_families() -> None:
    """Import every module of the family packages once (each registers what it defines)."""
    global _families_loaded
    if _families_loaded:
        return
    _families_loaded = True  # first: a family module may look names up while it loads
    import pkgutil

    for package_name in FAMILY_PACKAGES:
        package = importlib.import_module(package_name)
        for info in pkgutil.iter_modules(package.__path__):
            importlib.import_module(f"{package_name}.{info.name}")


class Registry(Generic[T]):
    """Maps names to objects. Entries may be registered lazily as "module:attribute" so heavy
    dependencies (torch, vllm, openai) load only when the entry is used."""

    def __init__(self, kind: str, *, families: bool = False):
        self.kind = kind
        self.families = families  # look in the family modules before the first lookup
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

    def _discover(self) -> None:
        if self.families:
            load_families()

    def names(self) -> list[str]:
        self._discover()
        return sorted({*self._objects, *self._lazy})

    def __contains__(self, name: object) -> bool:
        self._discover()
        return name in self._objects or name in self._lazy

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def get(self, name: str) -> T:
        self._discover()
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


def lazy_exports(package: str, exports: Mapping[str, str]) -> Callable[[str], object]:
    """A package's module-level __getattr__ that imports each public name (name -> module) on
    first use, so importing the package stays light (no torch, scipy or sqlalchemy)."""

    def __getattr__(name: str) -> object:
        if name in exports:
            return getattr(importlib.import_module(exports[name]), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__
