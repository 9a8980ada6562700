"""The gallery's captions: each figure set's caption (``analysis/figures.yaml``) and the n's of
its run in words, from the notebook's parameters (``papermill.inspect_notebook`` and the values
papermill injected) and from its ``claims.json``."""
from __future__ import annotations

import ast
import contextlib
import json
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = ROOT / "notebooks"
PARAMS_FILE = ROOT / "analysis" / "figures.yaml"
SINGULAR = {"images": "image", "seeds": "seed", "minibatches": "minibatch", "probes": "probe"}


def load_parameter_sets(path: Path) -> list[dict]:
    """``figures.yaml``: a list of {name, notebook, parameters}."""
    sets = yaml.safe_load(path.read_text())
    for s in sets:
        if not (NOTEBOOKS / s["notebook"]).exists():
            raise FileNotFoundError(f"{path}: notebook {s['notebook']} not found in {NOTEBOOKS}")
    return sets


def load_captions(path: Path = PARAMS_FILE) -> dict[str, str]:
    """Captions of the ``figures.yaml`` entries, by entry name and by notebook file (so a
    parameter set of its own, e.g. ``--params``, still gets its notebook's caption)."""
    try:
        sets = yaml.safe_load(path.read_text()) or []
    except OSError:
        return {}
    captions: dict[str, str] = {}
    for s in sets:
        if s.get("caption"):
            captions.setdefault(s["notebook"], s["caption"])
            captions[s["name"]] = s["caption"]
    return captions


def notebook_parameters(path: Path) -> dict:
    """The literal parameters of a notebook: the defaults of its ``parameters`` cell
    (``papermill.inspect_notebook``; a default that is not a literal is left out), then the
    values papermill ran it with (``metadata.papermill.parameters`` of an executed notebook,
    which win); {} when the notebook cannot be read."""
    import papermill as pm

    try:
        inferred = pm.inspect_notebook(str(path))
        injected = json.loads(path.read_text()).get("metadata", {}).get("papermill", {})
    except Exception:  # noqa: BLE001 - missing, unreadable, not a notebook: no parameters
        return {}
    values = {}
    for name, param in inferred.items():
        with contextlib.suppress(ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
            values[name] = ast.literal_eval(param["default"])
    return {**values, **(injected.get("parameters") or {})}


def figure_parameters(out: Path, record: dict) -> dict:
    """The parameters a figure set ran with: the executed notebook's (defaults included; the
    source notebook's when it is missing), then the record's."""
    found = notebook_parameters(out / record["executed"]) or \
        notebook_parameters(NOTEBOOKS / record["notebook"])
    return {**found, **record.get("parameters", {})}


def read_claims(folder: Path) -> list[dict]:
    """A notebook folder's ``claims.json`` (a list of Claim dicts), or []."""
    path = folder / "claims.json"
    return json.loads(path.read_text()) if path.exists() else []


def _count(n, noun: str) -> str:
    """'2 Lanczos probes', '1 Lanczos probe'."""
    if n == 1:
        head, _, last = noun.rpartition(" ")
        noun = f"{head} {SINGULAR.get(last, last)}".strip()
    return f"{n} {noun}"


def _ratios(values) -> str:
    return ", ".join(f"{float(v):g}" for v in values)


# parameter -> its n in words (None values are left out)
PARAMETER_COUNTS = (
    ("N_IMAGES", lambda n: _count(n, "images")),
    ("N_PROBE", lambda n: f"{n} probe training + {n} held-out images"),
    ("MASK_RATIO", lambda r: f"mask ratio {float(r):g}"),
    ("HIGH_RATIOS", lambda rs: f"also at {_ratios(rs)}"),
    ("RATIOS", lambda rs: f"{len(rs)} mask ratios ({_ratios(rs)})"),
    ("SWEEP_STEPS", lambda n: f"{n} training steps per ratio"),
    ("SUPERVISED_STEPS", lambda n: f"{n} supervised steps"),
    ("SUPERVISED_BATCH", lambda n: f"supervised minibatches of {n} images"),
    ("TOP_K", lambda k: f"top {k} eigenvalues per minibatch"),
    ("TRACE_SAMPLES", lambda n: _count(n, "Hutchinson probes")),
    ("DENSITY_PROBES", lambda n: _count(n, "Lanczos probes")),
    ("TUNE_BLOCKS", lambda ks: f"the last {', '.join(map(str, ks))} blocks tuned"),
    ("LABEL_FRACTIONS", lambda fs: "label shares " + ", ".join(f"{100 * f:g} %" for f in fs)),
    ("FT_STEPS", lambda n: f"{n} fine-tuning steps per run"),
    ("EVAL_IMAGES", lambda n: f"{n} held-out images"),
)


def parameter_counts(params: dict) -> list[str]:
    """The n's of a figure set's parameters, in words (those it has)."""
    counts = [say(params[key]) for key, say in PARAMETER_COUNTS
              if params.get(key) not in (None, [])]
    if params.get("BATCH_SIZE") is not None:
        batches, size = params.get("N_BATCHES"), params["BATCH_SIZE"]
        counts.insert(0, f"minibatches of {size} images" if batches is None
                      else f"{_count(batches, 'minibatches')} × {size} images")
    return counts


def claim_counts(claims: list[dict]) -> list[str]:
    """Each distinct sample behind the claims, from their ``sizes`` (else ``n``)."""
    seen: list[str] = []
    for c in claims:
        sizes = c.get("sizes") or {}
        text = ", ".join(_count(v, k) for k, v in sizes.items()) if sizes else \
            (f"n {c['n']}" if c.get("n") is not None else "")
        if text and text not in seen:
            seen.append(text)
    return [f"claim over {t}" for t in seen]


def accuracy_notes(folder: Path) -> list[str]:
    """What a figure set's classifiers reached, from the numbers saved beside its figures
    (``heldout_accuracy`` with ``num_classes``): 'supervised run: held-out accuracy 34.2 % over
    8 classes (chance 12.5 %), 600 steps' (``train_steps``)."""
    notes = []
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if not isinstance(data, dict) or data.get("heldout_accuracy") is None:
            continue
        name, acc = path.stem.replace("_", " "), 100 * data["heldout_accuracy"]
        text = f"{name}: held-out accuracy {acc:.1f} %"
        if data.get("num_classes"):
            k = data["num_classes"]
            text += f" over {k} classes (chance {100 / k:.1f} %)"
        if data.get("train_steps"):
            text += f", {data['train_steps']} steps"
        notes.append(text)
    return notes


def caption_counts(params: dict, claims: list[dict], folder: Path | None = None) -> str:
    """The run's n's for a caption: 'n: 4 minibatches × 16 images; ...; claim over 1 seed, ...',
    and what its classifiers reached (:func:`accuracy_notes` of ``folder``)."""
    counts = parameter_counts(params) + claim_counts(claims) + \
        (accuracy_notes(folder) if folder is not None else [])
    return "n: " + "; ".join(counts) if counts else ""
