"""Command line: ``python -m workbench train ...`` and ``python -m workbench info CHECKPOINT``."""
from __future__ import annotations

import argparse
import ast
import dataclasses
import json
import sys

from .config import MODEL_KINDS, PRESETS, ModelConfig


def parse_value(text: str):
    """``--set`` values: JSON / Python literals (numbers, true/false, lists, null), else text."""
    for parse in (json.loads, ast.literal_eval):
        try:
            return parse(text)
        except (ValueError, SyntaxError):
            pass
    return text


def apply_settings(pairs: list[str], train_fields: dict, model_overrides: dict,
                   parser: argparse.ArgumentParser) -> None:
    """``key=value`` pairs onto TrainConfig fields or ModelConfig overrides."""
    from .training import TrainConfig

    train_names = {f.name for f in dataclasses.fields(TrainConfig)} - {"model_overrides"}
    model_names = {f.name for f in dataclasses.fields(ModelConfig)} - {"kind"}
    for pair in pairs:
        key, eq, text = pair.partition("=")
        key = key.strip().replace("-", "_")
        if not eq or not key:
            parser.error(f"--set expects key=value, got {pair!r}")
        if key in model_names:
            model_overrides[key] = parse_value(text)
        elif key in train_names:
            train_fields[key] = parse_value(text)
        else:
            parser.error(f"unknown setting {key!r} in --set; model settings: "
                         f"{', '.join(sorted(model_names))}; training settings: "
                         f"{', '.join(sorted(train_names))}")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m workbench",
                                description="Train MAE / MFF-MAE and inspect checkpoints.")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train or resume a model (default: tiny MFF-MAE, built-in "
                                     "photos, into runs/mff-tiny)")
    t.add_argument("--model", dest="kind", choices=sorted(MODEL_KINDS), default="mff",
                   help="model kind")
    t.add_argument("--preset", choices=sorted(PRESETS), default="tiny")
    t.add_argument("--data", default="builtin", help="'builtin' (photo tiles), 'shapes' (labelled "
                   "shapes) or an image folder ROOT/<class>/")
    t.add_argument("--steps", type=int, help="optimizer steps (default: the preset's)")
    t.add_argument("--batch-size", type=int, help="global batch size (default: the preset's)")
    t.add_argument("--out", help="run directory (default: runs/<model>-<preset>)")
    t.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    t.add_argument("--mask-ratio", type=float)
    t.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    t.add_argument("--compile", action="store_true", help="torch.compile the model")
    t.add_argument("--ckpt-every", type=int)
    t.add_argument("--log-every", type=int)
    t.add_argument("--seed", type=int)
    t.add_argument("--no-progress", action="store_true", help="no progress bar")
    t.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="any ModelConfig or TrainConfig field, e.g. --set depth=4 "
                        "--set base_lr=1e-3 --set fuse_layers=[0,2,5] (repeatable)")

    p.train_parser = t  # for error messages with the train usage
    i = sub.add_parser("info", help="describe a checkpoint (any supported layout)")
    i.add_argument("checkpoint")
    i.add_argument("--json", action="store_true", help="print JSON")
    return p


def cmd_train(args, parser) -> int:
    from .training import TrainConfig, TrainingDiverged, train

    fields: dict = dict(kind=args.kind, preset=args.preset, data=args.data, device=args.device,
                        compile=args.compile, resume=args.resume,
                        out=args.out or f"runs/{args.kind}-{args.preset}",
                        progress=not args.no_progress)
    for name in ("steps", "batch_size", "ckpt_every", "log_every", "seed"):
        if getattr(args, name) is not None:
            fields[name] = getattr(args, name)
    overrides: dict = {}
    if args.mask_ratio is not None:
        overrides["mask_ratio"] = args.mask_ratio
    apply_settings(args.set, fields, overrides, getattr(parser, "train_parser", parser))
    try:
        cfg = TrainConfig(**fields, model_overrides=overrides)
        train(cfg)
    # OSError: a full disk, a run directory that is locked, unwritable or already used, missing
    # data; every message names the problem (and, mid-run, the last good checkpoint)
    except (ValueError, TypeError, OSError, TrainingDiverged) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


def cmd_info(args) -> int:
    from .checkpoints import CheckpointError, load_checkpoint
    from .io import checkpoint_path

    path = checkpoint_path(args.checkpoint)  # a run directory names its checkpoint
    try:
        summary = load_checkpoint(path).checkpoint_info.summary()
    except (CheckpointError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        width = max(len(k) for k in summary)
        for k, v in summary.items():
            print(f"{k:<{width}}  {v}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "train":
        return cmd_train(args, parser)
    return cmd_info(args)


if __name__ == "__main__":
    sys.exit(main())
