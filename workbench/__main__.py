"""Command line: ``python -m workbench train ...``, ``info CHECKPOINT`` and ``settings``.

Only the commands import torch: ``--help`` and argument errors answer at once. ``train
--dry-run`` resolves the settings, prints the plan and the memory estimate
(:mod:`workbench.core.sizes`) and exits without training or writing anything."""
from __future__ import annotations

import argparse
import ast
import dataclasses
import json
import os
import sys
from pathlib import Path
from typing import Any

from .core.config import MODEL_KINDS, ModelConfig


def parse_value(text: str):
    """``--set`` values: JSON / Python literals (numbers, true/false, lists, null), else text."""
    for parse in (json.loads, ast.literal_eval):
        try:
            return parse(text)
        except (ValueError, SyntaxError):
            pass
    return text


def settings_fields() -> tuple[dict[str, Any], dict[str, Any]]:
    """The ``--set`` names with their defaults: (model fields, training fields), no torch."""
    from .training.settings import TrainConfig

    model = {f.name: f.default for f in dataclasses.fields(ModelConfig) if f.name != "kind"}
    train = {f.name: (f.default if f.default is not dataclasses.MISSING else f.default_factory())
             for f in dataclasses.fields(TrainConfig) if f.name != "model_overrides"}
    return model, train


def apply_settings(pairs: list[str], train_fields: dict, model_overrides: dict,
                   parser: argparse.ArgumentParser) -> None:
    """``key=value`` pairs onto TrainConfig fields or ModelConfig overrides."""
    model_names, train_names = (set(d) for d in settings_fields())
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
            parser.error(f"unknown setting {key!r} in --set (python -m workbench settings lists "
                         f"them); model settings: {', '.join(sorted(model_names))}; training "
                         f"settings: {', '.join(sorted(train_names))}")


TRAIN_EXAMPLES = """examples:
  python -m workbench train                                # tiny MFF-MAE into runs/mff-tiny
  python -m workbench train --model mae --steps 600        # tiny MAE, longer
  python -m workbench train --resume --out runs/mae-tiny   # continue (settings from the checkpoint)
  python -m workbench train --data ~/imagenet --preset vit-b --set mask_ratio=0.8
  python -m workbench train --preset vit-b --batch-size 64 --dry-run   # the plan and its memory
  torchrun --nproc-per-node 2 -m workbench train --model mae --preset gpu-small
  python -m workbench settings                             # every --set name with its default
"""


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Examples kept as written; options in a wide first column, one line each where they fit."""

    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=34, width=100)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m workbench", formatter_class=HelpFormatter,
                                description="Train MAE / MFF-MAE and inspect checkpoints.",
                                epilog="python -m workbench COMMAND --help: the command's "
                                       "options and examples")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    t = sub.add_parser("train", formatter_class=HelpFormatter, epilog=TRAIN_EXAMPLES,
                       help="train or resume a model (default: tiny MFF-MAE on the built-in "
                            "photos, into runs/mff-tiny)",
                       description="Train or resume a model. Without --resume a run directory "
                                   "that holds a checkpoint is refused.")
    a = t.add_argument
    a("--kind", "--model", dest="kind", choices=MODEL_KINDS.names(),  # no torch for --help
      help="model kind, TrainConfig.kind (default: mff; --resume: the checkpoint's; --model is "
           "the same option)")
    a("--preset", help="tiny, gpu-small, vit-s/b/l/h (default: tiny; --resume: the checkpoint's)")
    a("--data", help="builtin (photos), shapes, or a folder ROOT/<class>/ (default: builtin)")
    a("--steps", type=int, help="optimizer steps, the schedule's length (default: the preset's)")
    a("--batch-size", type=int, help="global batch size (default: the preset's)")
    a("--out", help="run directory (default: runs/<model>-<preset>)")
    a("--resume", action="store_true", help="continue the run in --out; unset options come "
      "from its checkpoint")
    a("--mask-ratio", type=float, help="fraction of patches masked (default: 0.75)")
    a("--device", default="auto", help="auto | cpu | cuda | cuda:N (default: auto)")
    a("--compile", action="store_true", help="torch.compile the model")
    a("--ckpt-every", type=int, help="checkpoint every N steps, 0: at the end (default: 200)")
    a("--log-every", type=int, help="log every N steps (default: 10)")
    a("--seed", type=int, help="seed of images, crops and masks (default: 0)")
    a("--knn-every", type=int, help="log held-out kNN accuracy every N steps, 0: off "
      "(default: the preset's, tiny 100)")
    a("--no-progress", action="store_true", help="no progress bar or log lines, only the result")
    a("--dry-run", action="store_true", help="print the resolved plan and its memory estimate, "
      "refuse what cannot fit, and exit without training or writing anything")
    a("--set", action="append", default=[], metavar="KEY=VALUE",
      help="any model or training setting, repeatable (`settings` lists them)")
    p.train_parser = t  # for error messages with the train usage
    add_finetune_parser(sub)
    i = sub.add_parser("info", formatter_class=HelpFormatter,
                       help="describe a checkpoint (any supported layout) or a run directory")
    i.add_argument("checkpoint", help="a checkpoint file or a run directory")
    i.add_argument("--json", action="store_true", help="print JSON")
    s = sub.add_parser("settings", formatter_class=HelpFormatter,
                       help="list every --set name with its default")
    s.add_argument("--preset", default="tiny", help="whose defaults to show (default: tiny)")
    s.add_argument("--finetune", action="store_true", help="the defaults of `finetune` (MAE's "
                   "fine-tuning recipe) instead of `train`'s")
    return p


FINETUNE_EXAMPLES = """examples:
  python -m workbench finetune weights/mae-tiny --data shapes --out runs/ft-mae   # ~1 min on a CPU
  python -m workbench finetune runs/mff-tiny --data shapes --tune-blocks 2        # last 2 blocks
  python -m workbench finetune weights/mae-tiny --data shapes --label-fraction 0.1
  python -m workbench finetune mae_pretrain_vit_base.pth --data ~/imagenet --set layer_decay=0.65 \\
      --batch-size 1024 --device cuda          # MAE's ViT-B recipe (its README: 100 epochs)
  python -m workbench finetune --resume --out runs/ft-mae    # continue exactly
"""


def add_finetune_parser(sub) -> None:
    """``finetune CHECKPOINT``: MAE's main_finetune.py recipe through the one training loop."""
    f = sub.add_parser("finetune", formatter_class=HelpFormatter, epilog=FINETUNE_EXAMPLES,
                       help="fine-tune a pretrained checkpoint into a classifier (MAE's recipe)",
                       description="Fine-tune a checkpoint's encoder (any layout `info` reads) "
                                   "as a timm ViT classifier: AdamW, layer-wise lr decay, drop "
                                   "path, label smoothing, mixup / cutmix, warmup + cosine. "
                                   "Writes the run directory train writes, plus model.safetensors "
                                   "(timm key names; workbench.load_classifier reads it).")
    a = f.add_argument
    a("checkpoint", nargs="?", help="the pretrained checkpoint or run directory (not needed "
      "with --resume)")
    a("--data", help="shapes, builtin or a folder ROOT/<class>/ (labelled; default: shapes)")
    a("--out", help="run directory (default: runs/finetune-<kind>)")
    a("--resume", action="store_true", help="continue the run in --out")
    a("--steps", type=int, help="optimizer steps (default: tiny 60; else 125k = MAE's 100 "
      "ImageNet epochs at batch 1024)")
    a("--batch-size", type=int, help="global batch (default: tiny 64, else 1024)")
    a("--tune-blocks", help="train the last K blocks (+ norm / fc_norm, head); 0: the head; "
      "all (default): end to end (MAE Fig. 9)")
    a("--label-fraction", type=float, help="class-balanced seeded share of the labelled images, "
      "e.g. 0.01 / 0.1 as MFF (default: 1)")
    a("--layer-decay", type=float, help="layer-wise lr decay (default 0.75 as main_finetune.py; "
      "MAE's ViT-B recipe and common reproductions use 0.65)")
    a("--drop-path", type=float, help="drop path rate (default: 0.1)")
    a("--mixup", type=float, help="mixup alpha, 0: off (default: 0.8)")
    a("--cutmix", type=float, help="cutmix alpha, 0: off (default: 1.0)")
    a("--smoothing", type=float, dest="label_smoothing", help="label smoothing (default: 0.1)")
    a("--global-pool", choices=("avg", "token"), help="head input: avg = mean patch token + "
      "fc_norm (default, official), token = cls token")
    a("--eval-every", type=int, help="held-out top-1 / top-5 every N steps (default: 0, the end)")
    a("--seed", type=int, help="seed (default: 0)")
    a("--device", default="auto", help="auto | cpu | cuda | cuda:N (default: auto)")
    a("--no-progress", action="store_true", help="no progress bar or log lines, only the result")
    a("--set", action="append", default=[], metavar="KEY=VALUE",
      help="any model or training setting, repeatable (`settings --finetune` lists them)")


FINETUNE_FLAGS = ("data", "steps", "batch_size", "tune_blocks", "label_fraction", "layer_decay",
                  "drop_path", "mixup", "cutmix", "label_smoothing", "global_pool", "eval_every",
                  "seed")


def cmd_finetune(args, parser) -> int:
    fields = {k: getattr(args, k) for k in FINETUNE_FLAGS if getattr(args, k) is not None}
    if "tune_blocks" in fields and fields["tune_blocks"] != "all":
        try:
            fields["tune_blocks"] = int(fields["tune_blocks"])
        except ValueError:
            parser.error(f"--tune-blocks takes a number of blocks or 'all', got "
                         f"{fields['tune_blocks']!r}")
    overrides: dict = {}
    apply_settings(args.set, fields, overrides, parser)
    if not args.resume and not args.checkpoint:
        parser.error("finetune needs a CHECKPOINT (or --resume --out DIR)")
    if args.resume and not args.out:
        parser.error("finetune --resume needs --out DIR (the run to continue)")
    session = dict(resume=args.resume, device=args.device, progress=not args.no_progress)
    if args.out:
        session["out"] = args.out
    from .checkpoints import CheckpointError
    from .experiments.finetune import finetune, finetune_config
    from .training import TrainConfig, TrainingDiverged
    from .training.run_dir import saved_train_config

    try:
        saved = saved_train_config(args.out) if args.resume else None
        if saved is not None:
            cfg = TrainConfig.from_dict(saved).continued(fields, overrides, **session)
        else:
            fields.setdefault("data", "shapes")
            cfg = finetune_config(args.checkpoint, **fields, **session,
                                  model_overrides=overrides)
        finetune(cfg)
    except (ValueError, TypeError, OSError, TrainingDiverged, CheckpointError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


def given_settings(args, parser) -> tuple[dict, dict]:
    """The training fields and model overrides the command line names explicitly."""
    fields = {name: getattr(args, name) for name in
              ("kind", "preset", "data", "steps", "batch_size", "ckpt_every", "log_every", "seed",
               "knn_every")
              if getattr(args, name) is not None}
    overrides = {} if args.mask_ratio is None else {"mask_ratio": args.mask_ratio}
    apply_settings(args.set, fields, overrides, getattr(parser, "train_parser", parser))
    return fields, overrides


def cmd_train(args, parser) -> int:
    fields, overrides = given_settings(args, parser)
    out = args.out or f"runs/{fields.get('kind', 'mff')}-{fields.get('preset', 'tiny')}"
    session = dict(out=out, resume=args.resume, device=args.device, compile=args.compile,
                   progress=not args.no_progress)
    from .training.settings import TrainConfig

    if not args.resume:  # a new run's settings are checked before torch is imported (~0.2 s)
        try:
            cfg = TrainConfig(**fields, **session, model_overrides=overrides)
            check_values(cfg)
        except (ValueError, TypeError, OSError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
    from .experiments.pretraining import train
    from .training import TrainingDiverged
    from .training.run_dir import saved_train_config

    try:
        saved = saved_train_config(out) if args.resume else None
        if saved is not None:  # the checkpoint's run, with what the command line changes
            cfg = TrainConfig.from_dict(saved).continued(fields, overrides, **session)
        else:
            cfg = TrainConfig(**fields, **session, model_overrides=overrides)
        if args.dry_run:
            print(dry_run(cfg, resumed=saved is not None))
            return 0
        train(cfg)
    # OSError: a full disk, a run directory that is locked, unwritable or already used, missing
    # data; every message names the problem (and, mid-run, the last good checkpoint)
    except (ValueError, TypeError, OSError, TrainingDiverged) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


def check_values(cfg) -> None:
    """What a run checks from the values alone -- every setting's range, the preset and model
    settings, that an image folder exists -- without torch, so that a typo answers at once
    (the run checks them again, and everything else, once torch is loaded)."""
    from .core.config import BUILTIN_SETS
    from .training.settings import build_model_config, resolve

    cfg = resolve(cfg)
    build_model_config(cfg)
    if str(cfg.data) not in BUILTIN_SETS and not Path(cfg.data).expanduser().is_dir():
        raise FileNotFoundError(f"image folder not found: {cfg.data} (--data takes "
                                f"{' or '.join(BUILTIN_SETS)} or a folder of images)")


def dry_run(cfg, resumed: bool = False) -> str:
    """What ``train`` would do with ``cfg``, checked as a run checks it (settings, batch split,
    masked patches, memory), without building a model, opening the data or writing anything;
    a setting that would fail raises as the run would (a ValueError naming it)."""
    from .core.io import run_files
    from .core.sizes import check_training_fits, device_memory, human_bytes
    from .training.distributed import Dist, pick_device
    from .training.loop import check_batch_split
    from .training.schedule import peak_lr, warmup_steps
    from .training.settings import build_model_config, check_mask_count, resolve, snapshot_schedule
    from .training.step import pick_precision

    cfg = resolve(cfg)
    mcfg = build_model_config(cfg)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    check_batch_split(cfg, Dist(world=world))
    check_mask_count(mcfg, cfg.preset)
    device = pick_device(cfg.device, int(os.environ.get("LOCAL_RANK", "0")))  # as the run would
    precision = pick_precision(cfg.precision, device)
    size = check_training_fits(mcfg, cfg.batch_size, world, cfg.accum_steps, device, precision)
    files = run_files(cfg.out)
    state = ("continues its checkpoint (--resume)" if resumed else
             "holds a checkpoint: without --resume the run is refused"
             if files.checkpoint.exists() else "new")
    stop = f", stopping at {cfg.stop_after}" if cfg.stop_after else ""
    fused = f", fusing layers {mcfg.fuse_layers}" if mcfg.kind == "mff" else ""
    lines = [
        "[dry-run] the plan; nothing is trained or written",
        f"run                {cfg.out} ({state})",
        f"model              {mcfg.kind}, preset {cfg.preset}: {mcfg.img_size} px images in "
        f"{mcfg.patch_size} px patches ({mcfg.num_patches}), encoder {mcfg.depth} x "
        f"{mcfg.embed_dim} ({mcfg.num_heads} heads), decoder {mcfg.decoder_depth} x "
        f"{mcfg.decoder_embed_dim}, mask_ratio {mcfg.mask_ratio}{fused}",
        f"data               {cfg.data} (augment {cfg.augment}; not opened by --dry-run)",
        f"steps              {cfg.steps}{stop}; warmup {warmup_steps(cfg)}, peak lr "
        f"{peak_lr(cfg):.3g}",
        f"batch              {cfg.batch_size} images a step = {world} rank(s) x "
        f"{cfg.accum_steps} micro-batch(es) x {size.micro_batch} images",
        f"device             {device}, {precision}",
        f"writes             checkpoint {every(cfg.ckpt_every, 'at the end')}, log "
        f"{every(cfg.log_every)}, pictures {every(cfg.picture_every)}, weight snapshots "
        f"{len(snapshot_schedule(cfg)) or 'none'}, kNN "
        f"{every(cfg.knn_every)}",
        *size.lines(),
        f"memory             fits: {device_memory(device).where} "
        f"(needs ~{human_bytes(size.total_bytes)})"]
    return "\n".join(lines)


def every(steps: int, otherwise: str = "never") -> str:
    """'every 200 steps', or ``otherwise`` for 0 (off)."""
    return f"every {steps} steps" if steps else otherwise


def cmd_settings(args) -> int:
    from .core.config import PRESETS
    from .training.settings import (FINETUNE_PAPER_RECIPE, FINETUNE_PRESET_DEFAULTS,
                                    FINETUNE_RECIPE, PAPER_RECIPE, PRESET_TRAIN_DEFAULTS)

    if args.preset not in PRESETS:
        print(f"error: unknown preset {args.preset!r}; choose one of {sorted(PRESETS)}",
              file=sys.stderr)
        return 1
    model, train = settings_fields()
    model.update(PRESETS[args.preset])
    if getattr(args, "finetune", False):  # the model settings then come from the checkpoint
        train.update(objective="finetune", **FINETUNE_RECIPE,
                     **FINETUNE_PRESET_DEFAULTS.get(args.preset, FINETUNE_PAPER_RECIPE))
    else:
        train.update(PRESET_TRAIN_DEFAULTS.get(args.preset, PAPER_RECIPE))
    what = "fine-tuning" if getattr(args, "finetune", False) else "training"
    for title, values in ((f"model settings (preset {args.preset})", model),
                          (f"{what} settings (preset {args.preset})", train)):
        print(f"{title}:")
        width = max(len(k) for k in values)
        for k, v in values.items():
            print(f"  {k:<{width}}  {v!r}")
    print("\nset any of them with --set KEY=VALUE (values in JSON / Python syntax)")
    return 0


def cmd_info(args) -> int:
    from .checkpoints import CheckpointError, load_checkpoint
    from .core.io import checkpoint_path
    from .core.sizes import training_size

    path = checkpoint_path(args.checkpoint)  # a run directory names its checkpoint
    try:  # the settings are checked against the weights and the memory before a model is built
        info = load_checkpoint(path).checkpoint_info
    except (CheckpointError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    summary = info.summary()
    size = training_size(info.config, micro_batch=1)
    estimate = {**size.model.summary(), "training_state_bytes": size.state_bytes,
                "activation_bytes_per_image": size.activation_bytes}
    if args.json:
        print(json.dumps({**summary, **estimate}, indent=2))
        return 0
    width = max(len(k) for k in summary)
    for k, v in summary.items():
        print(f"{k:<{width}}  {v}")
    print("\n".join(size.lines()[:-1]))  # from the settings; activations scale with the batch
    return 0


def check_set_syntax(argv: list[str], parser: argparse.ArgumentParser) -> None:
    """``--set depth 4`` (a space for the '='): argparse would only say "unrecognized arguments:
    4"; name the form instead."""
    for flag, value in zip(argv, argv[1:]):
        if flag == "--set" and "=" not in value:
            parser.error(f"--set takes KEY=VALUE, e.g. --set {value}=...; got --set {value!r}")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    check_set_syntax(sys.argv[1:] if argv is None else list(argv), parser)
    args = parser.parse_args(argv)
    if args.command == "train":
        return cmd_train(args, parser)
    if args.command == "settings":
        return cmd_settings(args)
    if args.command == "finetune":
        return cmd_finetune(args, parser)
    return cmd_info(args)


if __name__ == "__main__":
    sys.exit(main())
