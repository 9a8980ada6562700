"""Checkpoint files on disk: read a PyTorch pickle safely or a ``.safetensors`` file, write
``.safetensors``; nothing here knows a layout or a model.

PyTorch files are read with ``torch.load(weights_only=True)`` (``argparse.Namespace`` allowed for
the official ``args``): a file that would run code when unpickled is refused, never executed;
``.safetensors`` files hold tensors only.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import struct
from pathlib import Path

import torch

from ..core.io import atomic_write

FORMAT = "mim-workbench"
FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint file that cannot be read or does not fit the model; the message says why."""


def read_file(path: Path, map_location: str | torch.device = "cpu", mmap: bool = False) -> dict:
    """One checkpoint file: ``.safetensors``, or a PyTorch pickle read weights-only (its tensors
    memory-mapped with ``mmap``)."""
    check_map_location(map_location)
    if path.stat().st_size == 0:
        raise CheckpointError(f"checkpoint {path} is empty (0 bytes): was it still being written?")
    if (kind := not_a_checkpoint(path)) is not None:
        raise CheckpointError(f"{path} is {kind}, not a checkpoint: pass a checkpoint file "
                              f"(checkpoint.pt, model.safetensors, an official .pth) or the run or "
                              f"Hugging Face folder that holds one")
    if path.suffix == ".safetensors":
        return read_safetensors(path, map_location)
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            obj = torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except Exception as e:  # noqa: BLE001 - re-raised with the reason
        text = str(e)
        detail = _loader_detail(text)
        if re.search(r"\bGLOBAL\b|Unsupported global", detail):
            raise CheckpointError(
                f"refused to load {path}: it contains pickled objects other than tensors and "
                f"plain containers, which could run code when unpickled; only weights-only "
                f"files are accepted ({detail})") from e
        raise CheckpointError(f"{path} is not a readable PyTorch checkpoint (truncated or "
                              f"corrupt?): {type(e).__name__}: {detail}") from e
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path} holds a {type(obj).__name__}, not a checkpoint dict")
    return obj


def check_map_location(map_location: str | torch.device) -> None:
    """A ``map_location`` this machine has, or a CheckpointError that names it and the fix
    (not torch's deserialisation error, which reads like a corrupt file)."""
    try:
        device = torch.device(map_location)
    except (RuntimeError, TypeError) as e:
        raise CheckpointError(f"map_location={map_location!r} is not a torch device "
                              f"(e.g. 'cpu', 'cuda', 'cuda:1'): {e}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise CheckpointError(f"map_location={map_location!r} but CUDA is not available on this "
                              f"machine: load with map_location='cpu' (the default)")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise CheckpointError(f"map_location={map_location!r} but this machine has "
                              f"{torch.cuda.device_count()} CUDA device(s)")


def not_a_checkpoint(path: Path) -> str | None:
    """What ``path`` plainly is when it cannot be a checkpoint ("a JSON file", "a text file"),
    from its first bytes; None for a zip (PyTorch), pickle, safetensors or unknown binary."""
    with open(path, "rb") as f:
        head = f.read(512)
    if head.startswith((b"PK\x03\x04", b"\x80")) or path.suffix == ".safetensors":
        return None
    text = head.lstrip()
    if text[:1] in (b"{", b"["):
        return "a JSON file (a config.json?)"
    return "a text file" if all(c >= 32 or c in b"\t\n\r" for c in head) else None


def read_safetensors(path: Path, map_location: str | torch.device = "cpu") -> dict:
    """A ``.safetensors`` file (tensors only, nothing to unpickle) as a state dict; one of ours
    (:func:`save_weights`: the config in its metadata) as a checkpoint dict of our layout."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    device = map_location if isinstance(map_location, str) else str(torch.device(map_location))
    try:
        sd = load_file(path, device=device)
        with safe_open(path, framework="pt") as f:
            meta = f.metadata() or {}
    except Exception as e:  # noqa: BLE001 - re-raised with the reason
        raise CheckpointError(f"{path} is not a readable safetensors file (truncated or "
                              f"corrupt?): {type(e).__name__}: {e}") from e
    if meta.get("format") != FORMAT:
        return sd
    try:
        return {"format": FORMAT, "version": int(meta["version"]), "model": sd,
                "config": json.loads(meta["config"]), "has_decoder": meta["has_decoder"] == "1",
                "step": int(meta["step"]) if meta.get("step", "") != "" else None}
    except (KeyError, ValueError) as e:
        raise CheckpointError(f"{path} says it is a {FORMAT} file but its metadata is incomplete "
                              f"({type(e).__name__}: {e}); keys found: {sorted(meta)}") from e


def write_safetensors(tensors: dict[str, torch.Tensor], path: str | os.PathLike,
                      metadata: dict[str, str] | None = None) -> None:
    """``tensors`` as a ``.safetensors`` file (contiguous CPU copies, PyTorch metadata as the
    hub's files have, plus ``metadata``), written atomically."""
    from safetensors.torch import save

    data = save({k: v.contiguous().cpu() for k, v in tensors.items()},
                metadata={"format": "pt", **(metadata or {})})
    data = canonical_header(data)
    atomic_write(path, lambda f: f.write(data))


def canonical_header(data: bytes) -> bytes:
    """A ``.safetensors`` file's bytes with its JSON header's keys sorted: safetensors writes the
    metadata in hash order, which changes from process to process, so the same weights would
    give different files (a resumed run's snapshots must equal a straight run's bit for bit).
    The tensor bytes and their offsets are untouched; the header is padded to 8 bytes."""
    n = struct.unpack("<Q", data[:8])[0]
    header = json.dumps(json.loads(data[8:8 + n]), sort_keys=True,
                        separators=(",", ":")).encode()
    header += b" " * (-len(header) % 8)
    return struct.pack("<Q", len(header)) + header + data[8 + n:]


def _loader_detail(text: str) -> str:
    """The informative paragraph of torch.load's error, without its generic advice."""
    skip = ("Weights only load failed", "Check the documentation", "Please file an issue")
    parts = [p.strip() for p in text.split("\n\n") if p.strip()]
    kept = [p for p in parts if not p.startswith(skip)]
    return " ".join(kept) or (parts[0] if parts else "")
