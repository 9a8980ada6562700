"""The class of each model kind, registered under the kind's name in
:data:`workbench.core.config.MODEL_KINDS` (the one table of kinds, plain data that configs are
checked against without torch)."""
from __future__ import annotations

from typing import Callable

from ..core.config import MODEL_KINDS
from ..core.registry import Registry

# kind name -> the model class built for it (model_from_config); only names of MODEL_KINDS
MODEL_CLASSES: Registry[type] = Registry("model class", within=MODEL_KINDS)


def model_class(kind: str) -> Callable[[type], type]:
    """Decorator: ``@model_class("mae")`` registers the decorated class as model kind ``kind``;
    refused unless ``kind`` is in MODEL_KINDS and the class's ``has_fusion`` says what the table
    says (so the table and the classes cannot disagree)."""
    add = MODEL_CLASSES.register(kind)

    def check(cls: type) -> type:
        table = MODEL_KINDS.get(kind).has_fusion
        if getattr(cls, "has_fusion", None) != table:
            raise ValueError(f"model class {cls.__name__} has has_fusion="
                             f"{getattr(cls, 'has_fusion', None)!r} but MODEL_KINDS says model "
                             f"kind {kind!r} has has_fusion={table!r}")
        return add(cls)
    return check
