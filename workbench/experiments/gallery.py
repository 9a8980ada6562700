"""The gallery's pages, from Jinja2 templates (``templates/``, autoescaped): ``index.html``, every
figure set with its figures and caption, and ``findings.html`` / ``findings.md`` / ``forest.png``,
the claims of every notebook as one report."""
from __future__ import annotations

import functools
from pathlib import Path

from workbench.experiments.captions import (caption_counts, figure_parameters, load_captions,
                                            read_claims)

QUICK_PROFILE = ("One training seed per model (the tiny MAE and MFF-MAE runs), so claims about "
                 "training (fusion movement, supervised fusion) stay inconclusive, and every other "
                 "interval covers only the images or minibatches drawn inside that one run, not "
                 "training randomness (a permutation test over 5 or fewer minibatches cannot "
                 "reject at all, so such a claim stays inconclusive). The claims of every "
                 "notebook form one Holm family. `make evidence` runs the seeds "
                 "(`analysis/evidence.py`).")


@functools.cache
def templates():
    """The gallery's Jinja2 environment: the package's ``templates/``, HTML escaped."""
    import jinja2

    return jinja2.Environment(loader=jinja2.PackageLoader("workbench.experiments", "templates"),
                              autoescape=True, trim_blocks=True, lstrip_blocks=True,
                              undefined=jinja2.StrictUndefined)


def image_size(path: Path) -> tuple[int, int] | None:
    """(width, height) of an image file (Pillow reads only its header), or None."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            return im.size
    except OSError:  # missing, or not an image Pillow knows (UnidentifiedImageError)
        return None


def figure_item(out: Path, name: str) -> dict:
    """One figure file in the grid: a PNG (spanning both columns when wide; a click opens it at
    full size) or a link to an interactive HTML figure."""
    if name.endswith(".html"):
        return {"interactive": True, "link": name, "label": Path(name).name}
    size = image_size(out / name)
    return {"interactive": False, "link": name, "label": Path(name).name,
            "wide": size is not None and size[0] >= 1.6 * size[1]}


def figure_section(out: Path, record: dict, caption: str) -> dict:
    """One figure set: heading, notebook and run time, the figures, the caption under them."""
    return {"name": record["name"], "notebook": record["notebook"],
            "executed": record["executed"], "seconds": record["seconds"],
            "error": None if record["status"] == "ok" else record.get("error", ""),
            "figures": [figure_item(out, f) for f in record["files"]
                        if f.endswith((".png", ".html"))],
            "caption": caption,
            "counts": caption_counts(figure_parameters(out, record),
                                     read_claims(out / record["name"]), out / record["name"])}


def index_page(out: Path, records: list[dict], meta: dict, captions: dict[str, str]) -> str:
    models = f" {meta['models']}" if meta.get("models") else ""  # every caption says which
    sections = [figure_section(out, r, captions.get(r["name"], captions.get(r["notebook"], ""))
                               + models) for r in records]
    return templates().get_template("index.html.j2").render(
        commit=str(meta["git_commit"]), models=meta.get("models", ""), sections=sections)


def write_index(out: Path, records: list[dict], meta: dict,
                captions: dict[str, str] | None = None) -> None:
    """``index.html``: every figure set with its caption (``captions`` by entry name or notebook;
    default: those in ``analysis/figures.yaml``) and the run's n's."""
    from workbench.core.io import atomic_write_text

    captions = load_captions() if captions is None else captions
    atomic_write_text(out / "index.html", index_page(out, records, meta, captions))


def markdown_html(text: str) -> str:
    """Markdown -> HTML with mistune (a jupyterlab dependency, through nbconvert): tables as
    <table>, any raw HTML in the text escaped."""
    import mistune

    return mistune.create_markdown(escape=True, plugins=["table"])(text)


def findings_page(markdown: str, forest: bool) -> str:
    """``findings.html``: the findings markdown as a page, with the forest plot under it."""
    from markupsafe import Markup

    return templates().get_template("findings.html.j2").render(
        findings=Markup(markdown_html(markdown)), forest=forest)  # mistune escaped its raw HTML


def write_findings(out: Path, records: list[dict]) -> None:
    """``findings.md``, ``findings.html`` and ``forest.png`` from every notebook's
    ``claims.json``. The claims of all notebooks are one report, so one family: their verdicts
    are Holm-adjusted over it (``workbench.experiments.findings.adjust_family``)."""
    from workbench import plots
    from workbench.core.io import atomic_write_text
    from workbench.experiments.findings import Claim, adjust_family, findings_markdown

    claims = adjust_family([Claim.from_dict(c) for r in records
                            for c in read_claims(out / r["name"])])
    markdown = findings_markdown(claims, "quick", QUICK_PROFILE)
    atomic_write_text(out / "findings.md", markdown)
    if claims:
        plots.save_figure(plots.forest_figure(claims, "quick profile (one seed): effect ± 95% "
                                              "interval"), out, "forest")
    atomic_write_text(out / "findings.html", findings_page(markdown, forest=bool(claims)))
