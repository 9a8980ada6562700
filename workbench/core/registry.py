"""A name -> object table for the workbench's extension points (model kinds, masking strategies,
checkpoint layouts), in the spirit of timm's model registry.

    MODEL_KINDS = Registry("model kind")

    @MODEL_KINDS.register("mae")
    class MaskedAutoencoder(nn.Module): ...

    MODEL_KINDS.get("mae")   # the class; an unknown name is a ValueError listing the valid ones

A new entry is one decorated function or class beside its definition; every user of the
registry (config validation, command-line choices, widgets) sees it at once.
"""
from __future__ import annotations

import importlib
from typing import Callable, Generic, Iterator, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """Named objects of one kind, in registration order."""

    def __init__(self, what: str, source: str | None = None):
        self.what = what  # the kind of thing, as an error message names it: "model kind"
        self.source = source  # the module whose import registers the built-in entries
        self._entries: dict[str, T] = {}

    @property
    def entries(self) -> dict[str, T]:
        """Every entry, the built-in ones imported from ``source`` on the first lookup (so that
        reading a config does not import what defines its entries, e.g. torch)."""
        if self.source is not None:
            source, self.source = self.source, None
            importlib.import_module(source)
        return self._entries

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: ``@REGISTRY.register("name")`` adds the decorated object under ``name``."""
        def add(obj: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.what} {name!r} is already registered")
            self._entries[name] = obj
            return obj
        return add

    def unregister(self, name: str) -> T:
        """Remove ``name`` and return what it held (for tests that register a throwaway entry)."""
        self.get(name)
        return self.entries.pop(name)

    def get(self, name: str) -> T:
        """The object registered as ``name``; ValueError naming the valid choices otherwise."""
        if name not in self:
            raise ValueError(f"{self.what} must be one of {self.names()}, got {name!r}")
        return self.entries[name]

    def names(self) -> tuple[str, ...]:
        return tuple(self.entries)

    def __contains__(self, name: object) -> bool:
        try:
            return name in self.entries
        except TypeError:  # unhashable: certainly not a registered name
            return False

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self.entries)

    def __repr__(self) -> str:
        return f"Registry({self.what!r}, {list(self.entries)})"
