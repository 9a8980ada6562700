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

from typing import Callable, Generic, Iterator, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """Named objects of one kind, in registration order."""

    def __init__(self, what: str):
        self.what = what  # the kind of thing, as an error message names it: "model kind"
        self._entries: dict[str, T] = {}

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
        return self._entries.pop(name)

    def get(self, name: str) -> T:
        """The object registered as ``name``; ValueError naming the valid choices otherwise."""
        if name not in self:
            raise ValueError(f"{self.what} must be one of {self.names()}, got {name!r}")
        return self._entries[name]

    def names(self) -> tuple[str, ...]:
        return tuple(self._entries)

    def __contains__(self, name: object) -> bool:
        try:
            return name in self._entries
        except TypeError:  # unhashable: certainly not a registered name
            return False

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.what!r}, {list(self._entries)})"
