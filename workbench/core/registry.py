"""A name -> object table for the workbench's extension points (model kinds, masking strategies,
checkpoint layouts), in the spirit of timm's model registry.

    LAYOUTS = Registry("checkpoint layout")

    @LAYOUTS.register("timm")
    def convert_timm(obj, overrides): ...

    LAYOUTS.get("timm")   # the converter; an unknown name is a ValueError listing the valid ones

A registry holds exactly what was registered into it, when the registering module was imported:
nothing is imported behind the caller's back. Where a name must be known before the code behind
it is importable (a config read without torch), the table of names is plain data in a lower layer
and the code registers into a second registry whose names must be ones of that table
(``within``): ``Registry("model class", within=MODEL_KINDS)``.
"""
from __future__ import annotations

from typing import Any, Callable, Generic, Iterator, Mapping, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """Named objects of one kind, in registration order. ``entries``: the first ones, as a table
    written in one place; ``within``: a registry whose names are the only ones allowed here."""

    def __init__(self, what: str, entries: Mapping[str, T] | None = None,
                 within: Registry[Any] | None = None):
        self.what = what  # the kind of thing, as an error message names it: "model kind"
        self.within = within
        self._entries: dict[str, T] = {}
        for name, obj in (entries or {}).items():
            self.register(name)(obj)

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: ``@REGISTRY.register("name")`` adds the decorated object under ``name``."""
        if name in self._entries:
            raise ValueError(f"{self.what} {name!r} is already registered")
        if self.within is not None and name not in self.within:
            raise ValueError(f"{self.what} {name!r} is not a {self.within.what} (one of "
                             f"{self.within.names()}): name it there first")

        def add(obj: T) -> T:
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
