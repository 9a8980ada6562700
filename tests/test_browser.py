"""The notebooks in a real JupyterLab, driven by a real browser (headless Chromium via Playwright).

A JupyterLab server is started on 127.0.0.1 with a random token over a temporary folder laid out
like ``make figures`` output (``<name>/<notebook>`` with OUTPUT_DIR = that folder), and each
notebook is opened, run with JupyterLab's "Run All Cells", and checked: no error output, every
widget rendered (no "Loading widget...", no ``VBox(children=...)`` text fallback). Then the
reconstruction explorer's mask-ratio slider is moved with the keyboard (the rendered image and the
masked-patch count must change), the fusion-weights plotly figure is hovered (a hover label must
appear), and the gallery ``index.html`` (a caption under each figure set) and ``findings.html``
written from those folders with analysis/make_figures.py's own writers are opened and checked.
After Run All the explorer's slider must read the notebook's MASK_RATIO again (the last cell's
latency check moves it and puts it back). In a notebook written here (TEST_NOTEBOOKS) a PNG is
uploaded to the reconstruction explorer through its file chooser (the originals shown must be that
PNG, and the explorer must say so), its "save PNG" button must write the picture shown, byte for
byte, under a name of its settings into the folder given, and the attention explorer must be at
most 650 px wide, its picture at its own size with the colour key (dark to bright, 0 to the
largest weight) under it. Screenshots go to test-output/browser/.

    make test-browser          # installs the `browser` extra (playwright) if missing

Chromium is the system one (Debian: ``apt-get install chromium``; MIM_CHROMIUM=/path overrides);
Playwright never downloads a browser. MIM_BROWSER_MAE / MIM_BROWSER_MFF point the notebooks at
your own checkpoints (their folders are the run dirs) instead of the tiny ones trained here.
"""
from __future__ import annotations

import base64
import contextlib
import io
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
SHOTS = ROOT / "test-output" / "browser"
CHROMIUM = os.environ.get("MIM_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
# 32-pixel images in 4-pixel patches (64 per image): small enough to train in seconds
SMALL = dict(img_size=32, patch_size=4, embed_dim=32, depth=3, num_heads=2,
             decoder_embed_dim=32, decoder_depth=1, decoder_num_heads=2)
# tiny settings, as in tests/test_notebooks.py (parameters a notebook does not declare are harmless)
NOTEBOOK_PARAMS = {"reconstruction": {"N_IMAGES": 3, "MASK_RATIO": 0.75, "HIGH_RATIOS": [0.9]},
                   "fusion_weights": {"SUPERVISED_STEPS": 3, "SUPERVISED_BATCH": 16}}
# notebooks the tests write (their cells; the parameters above are injected before them): the
# explorers of issue 33 on the tiny checkpoints, saving into SAVED under OUTPUT_DIR
SAVED = "saved"
TEST_NOTEBOOKS = {"widgets": [
    "from pathlib import Path\n"
    "from workbench.checkpoints import load_models\n"
    "from workbench.data import fixed_batch\n"
    "from workbench.widgets import AttentionExplorer, ReconstructionExplorer\n"
    "models = load_models({'MAE': MAE_CHECKPOINT, 'MFF-MAE': MFF_CHECKPOINT})\n"
    "imgs, _ = fixed_batch('builtin', models['MAE'].cfg.img_size, 3, 'heldout', 0)",
    "explorer = ReconstructionExplorer(models, imgs, mask_ratio=0.75,\n"
    f"                                  save_folder=Path(OUTPUT_DIR) / {SAVED!r})\n"
    "explorer",
    "AttentionExplorer(models, imgs)"]}
KERNEL_START_S = 120  # a kernel on a loaded 2-core machine can take 30+ s
RUN_ALL_S = 240
RENDERERS = {"application/vnd.jupyter.widget-view+json": ".jupyter-widgets",
             "application/vnd.plotly.v1+json": ".js-plotly-plot"}
UNRENDERED = ("Loading widget...", "Error displaying widget", "could not be displayed",
              "VBox(children=", "HBox(children=", "FloatSlider(", "Model not found")

if not Path(CHROMIUM).exists():
    pytest.skip(f"no Chromium at {CHROMIUM}: apt-get install chromium (or set MIM_CHROMIUM)",
                allow_module_level=True)
sync_api = pytest.importorskip(
    "playwright.sync_api", reason="pip install -e '.[browser]' (or make test-browser)")
from workbench.experiments import figures as make_figures  # noqa: E402

from workbench.core.io import atomic_write_text  # noqa: E402


# ----------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    given = {k: os.environ.get(f"MIM_BROWSER_{k.upper()}") for k in ("mae", "mff")}
    if all(given.values()):
        return {k: Path(v).resolve() for k, v in given.items()}
    from workbench import TrainConfig, train

    base = tmp_path_factory.mktemp("browser-runs")
    return {kind: Path(train(TrainConfig(
        kind=kind, preset="tiny", model_overrides=SMALL, steps=16, batch_size=16, log_every=2,
        out=str(base / kind), ckpt_every=0, picture_every=0, eval_images=16,
        progress=False)).checkpoint) for kind in ("mae", "mff")}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Lab:
    """A JupyterLab server over ``root`` (a make_figures-style gallery folder) and one browser."""

    def __init__(self, root: Path, home: Path, checkpoints: dict[str, Path]):
        self.root, self.home, self.checkpoints = root, home, checkpoints
        self.token = secrets.token_hex(16)
        self.port = _free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = home / "jupyter.log"
        self.proc: subprocess.Popen | None = None
        self.log_file = None
        self.pages: dict[str, object] = {}   # notebook name -> page with the run notebook
        self.records: dict[str, dict] = {}  # notebook name -> gallery record
        self.failed: dict[str, str] = {}    # notebook name -> why (not run twice)

    # -- server
    def start(self) -> None:
        cfg = self.home / "config"
        (cfg / "labconfig").mkdir(parents=True)
        # no "news" toast over the notebook
        (cfg / "labconfig" / "page_config.json").write_text(json.dumps(
            {"disabledExtensions": {"@jupyterlab/apputils-extension:announcements": True}}))
        # every cell stays in the DOM (no windowing), so every output can be checked
        tracker = self.home / "settings" / "@jupyterlab" / "notebook-extension"
        tracker.mkdir(parents=True)
        (tracker / "tracker.jupyterlab-settings").write_text(json.dumps({"windowingMode": "none"}))
        env = {**os.environ, "JUPYTER_CONFIG_DIR": str(cfg),
               "JUPYTER_RUNTIME_DIR": str(self.home / "runtime"),
               "IPYTHONDIR": str(self.home / "ipython"),
               # this venv's python3 kernel (it imports workbench) before any user-wide one
               "JUPYTER_PREFER_ENV_PATH": "1",
               "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
        cmd = [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--allow-root",
               "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={self.port}",
               "--ServerApp.port_retries=0", f"--IdentityProvider.token={self.token}",
               f"--ServerApp.root_dir={self.root}", "--LabApp.expose_app_in_browser=True",
               f"--LabApp.workspaces_dir={self.home / 'workspaces'}",
               f"--LabApp.user_settings_dir={self.home / 'settings'}",
               "--LabApp.extension_manager=readonly",
               "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"]
        self.log_file = open(self.log, "wb")
        self.proc = subprocess.Popen(cmd, env=env, cwd=self.root, stdout=self.log_file,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"JupyterLab exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.base}/api/status?token={self.token}",
                                            timeout=5) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.5)
        pytest.fail(f"JupyterLab did not answer on {self.base} within 90 s:\n{self.log_tail()}")

    def log_tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            if self.log_file:
                self.log_file.close()
            return
        self.proc.terminate()  # the server shuts its kernels down on SIGTERM
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass
        try:  # kernels left behind, if any: they are in the server's own session
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.proc.wait(timeout=10)
        self.log_file.close()

    # -- notebooks
    def prepare(self, name: str) -> Path:
        """Copy notebooks/<name>.ipynb into <root>/<name>/, outputs cleared, with papermill's
        injected-parameters cell after the tagged `parameters` cell."""
        import nbformat
        from papermill.iorw import load_notebook_node, write_ipynb
        from papermill.parameterize import parameterize_notebook

        folder = self.root / name
        folder.mkdir(parents=True, exist_ok=True)
        if name in TEST_NOTEBOOKS:  # written here: the parameters go in before its first cell
            nb = nbformat.v4.new_notebook(
                cells=[nbformat.v4.new_code_cell(src, metadata={"tags": []})
                       for src in TEST_NOTEBOOKS[name]],
                metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                         "language": "python"},
                          "language_info": {"name": "python"}, "papermill": {}})
        else:
            nb = load_notebook_node(str(NOTEBOOKS / f"{name}.ipynb"))
        for cell in nb.cells:
            if cell.cell_type == "code":
                cell.outputs, cell.execution_count = [], None
        ck = self.checkpoints
        params = {"MAE_CHECKPOINT": str(ck["mae"]), "MFF_CHECKPOINT": str(ck["mff"]),
                  "MAE_RUN_DIR": str(ck["mae"].parent), "MFF_RUN_DIR": str(ck["mff"].parent),
                  "OUTPUT_DIR": str(folder), **NOTEBOOK_PARAMS.get(name, {})}
        nb = parameterize_notebook(nb, params, kernel_name="python3", language="python")
        write_ipynb(nb, str(folder / f"{name}.ipynb"))
        self.records[name] = {"name": name, "notebook": f"{name}.ipynb", "parameters": params,
                              "executed": f"{name}/{name}.ipynb", "status": "failed",
                              "seconds": 0.0, "files": []}
        return folder

    def run(self, browser, name: str):
        """Open <name> in JupyterLab (its own workspace), Run All Cells, check the outputs;
        returns (page, panel id). Cached: each notebook runs once per module."""
        if name in self.pages:
            return self.pages[name]
        if name in self.failed:
            pytest.fail(f"{name} already failed in JupyterLab: {self.failed[name]}")
        self.failed[name] = "interrupted"
        folder = self.prepare(name)
        path = f"{name}/{name}.ipynb"
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(60_000)
        console: list[str] = []
        page.on("pageerror", lambda e: console.append(f"pageerror: {e}"))
        page.on("console", lambda m: console.append(f"{m.type}: {m.text}")
                if m.type == "error" else None)
        page.goto(f"{self.base}/lab/workspaces/{name}/tree/{path}?token={self.token}")
        start = time.perf_counter()
        panel_id = page.wait_for_function(
            """path => {
                const app = window.jupyterapp;
                if (!app) return null;
                const w = Array.from(app.shell.widgets('main')).find(
                    w => w.context && w.context.path === path);
                const k = w && w.sessionContext.session && w.sessionContext.session.kernel;
                return k && k.status === 'idle' && w.context.isReady ? w.id : null;
            }""", arg=path, timeout=KERNEL_START_S * 1000, polling=500).json_value()
        # JupyterLab's own "Run All Cells"; its promise settles when the last cell has run
        page.evaluate("""id => {
            const app = window.jupyterapp;
            app.shell.activateById(id);
            window.__runAll = undefined;
            app.commands.execute('notebook:run-all-cells').then(
                ok => { window.__runAll = ok ? 'ok' : 'failed'; },
                err => { window.__runAll = 'error: ' + err; });
        }""", panel_id)
        try:
            page.wait_for_function("() => window.__runAll !== undefined",
                                   timeout=RUN_ALL_S * 1000, polling=500)
        finally:
            page.screenshot(path=str(SHOTS / f"{name}-notebook.png"))
        seconds = time.perf_counter() - start
        outcome = page.evaluate("() => window.__runAll")
        problems = notebook_problems(page, panel_id)
        if outcome != "ok" or problems:
            self.failed[name] = f"Run All Cells -> {outcome}; problems: {problems}"
        assert outcome == "ok" and not problems, (
            f"{name}: Run All Cells -> {outcome}; problems: {problems}\n"
            f"browser console: {console[-10:]}\nserver log:\n{self.log_tail(15)}")
        # save the executed notebook, as make_figures keeps it next to its figures
        page.evaluate("id => window.jupyterapp.commands.execute('docmanager:save')", panel_id)
        page.wait_for_function(
            """id => { const w = Array.from(window.jupyterapp.shell.widgets('main'))
                .find(w => w.id === id); return w && !w.context.model.dirty; }""",
            arg=panel_id, timeout=60_000)
        self.records[name].update(status="ok", seconds=round(seconds, 2), files=sorted(
            str(p.relative_to(self.root)) for p in folder.rglob("*")
            if p.suffix in make_figures.FIGURE_SUFFIXES + (".json",)))
        self.pages[name] = (page, panel_id)
        del self.failed[name]
        return self.pages[name]


def notebook_problems(page, panel_id: str, settle_s: float = 20) -> list[str]:
    """Errors and unrendered widgets in the panel's outputs, after widgets had time to render."""
    script = """([id, unrendered, renderers]) => {
        const app = window.jupyterapp;
        const w = Array.from(app.shell.widgets('main')).find(w => w.id === id);
        const problems = [];
        const cells = w.content.model.cells;
        for (let i = 0; i < cells.length; i++) {
            const cell = cells.get(i);
            if (cell.type !== 'code') continue;
            if (cell.executionCount === null) problems.push(`cell ${i} did not run`);
            const view = w.content.widgets[i];
            for (let j = 0; j < cell.outputs.length; j++) {
                const o = cell.outputs.get(j).toJSON();
                if (o.output_type === 'error') problems.push(`cell ${i}: ${o.ename}: ${o.evalue}`);
                // a widget / plotly output must be drawn by its renderer, not a text fallback
                for (const [mime, selector] of Object.entries(renderers)) {
                    if (!o.data || !(mime in o.data)) continue;
                    const area = view.outputArea.widgets[j];
                    const node = area ? area.node : view.node;
                    if (!node.querySelector(selector))
                        problems.push(`cell ${i}: ${mime} output not rendered (shows `
                                      + JSON.stringify(node.textContent.slice(0, 120)) + ')');
                }
            }
        }
        const panel = document.getElementById(id);
        for (const out of panel.querySelectorAll('.jp-OutputArea-output')) {
            const mime = out.getAttribute('data-mime-type') || '';
            const text = out.textContent || '';
            if (mime === 'application/vnd.jupyter.stderr' && /Traceback|^\\w+Error\\b/m.test(text))
                problems.push('stderr: ' + text.slice(0, 400));
            if (mime.includes('widget-view') && !out.querySelector('.jupyter-widgets'))
                problems.push('widget not rendered: ' + text.slice(0, 200));
            for (const u of unrendered)
                if (text.includes(u))
                    problems.push(`unrendered widget (${u}): ` + text.slice(0, 200));
        }
        return problems;
    }"""
    deadline = time.monotonic() + settle_s
    while True:
        problems = page.evaluate(script, [panel_id, list(UNRENDERED), RENDERERS])
        if not problems or time.monotonic() > deadline:
            return problems
        time.sleep(1)


@pytest.fixture(scope="module")
def lab(tmp_path_factory, checkpoints):
    SHOTS.mkdir(parents=True, exist_ok=True)
    home = tmp_path_factory.mktemp("lab-home")
    server = Lab(tmp_path_factory.mktemp("gallery"), home, checkpoints)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield b
        finally:
            b.close()


# ----------------------------------------------------------------------------- tests
def _explorer_state(app) -> dict:
    img = app.locator("img").first
    return {"status": app.locator(".widget-html", has_text="patches masked").inner_text(),
            "readout": app.locator(".widget-hslider", has_text="mask ratio")
                          .locator(".widget-readout").inner_text(),
            "src": img.get_attribute("src"),
            "loaded": img.evaluate("i => i.complete && i.naturalWidth > 0"),
            "png": img.screenshot()}


def _masked(status: str) -> tuple[int, int]:
    count, total = status.split(" patches masked")[0].split("/")
    return int(count), int(total)


def test_reconstruction_slider_reads_mask_ratio_after_run_all(lab, browser):
    """The last cell's explorer.latency() moves the slider over 0.05..0.95 and puts it back: after
    Run All the browser shows the notebook's MASK_RATIO, in the readout and the masked count."""
    page, panel = lab.run(browser, "reconstruction")
    explorer = page.locator(f"#{panel} .jp-OutputArea-output .widget-vbox").first
    explorer.scroll_into_view_if_needed()
    wanted = NOTEBOOK_PARAMS["reconstruction"]["MASK_RATIO"]
    with contextlib.suppress(sync_api.TimeoutError):  # the last widget messages may still arrive
        page.wait_for_function(
            """([id, wanted]) => [...document.querySelectorAll('#' + id + ' .widget-hslider')]
                .some(s => s.textContent.includes('mask ratio') && Math.abs(parseFloat(
                    s.querySelector('.widget-readout').textContent) - wanted) < 1e-9)""",
            arg=[panel, wanted], timeout=10_000)
    state = _explorer_state(explorer)
    explorer.screenshot(path=str(SHOTS / "reconstruction-widget-after-run-all.png"))
    masked, total = _masked(state["status"])
    assert float(state["readout"]) == pytest.approx(wanted), (
        f"slider shows {state['readout']!r} ({state['status']!r}), MASK_RATIO is {wanted}")
    assert masked == total - int(total * (1 - wanted)), state["status"]


def test_reconstruction_slider_changes_image_and_count(lab, browser):
    page, panel = lab.run(browser, "reconstruction")
    explorer = page.locator(f"#{panel} .jp-OutputArea-output .widget-vbox").first
    explorer.scroll_into_view_if_needed()
    slider = explorer.locator(".widget-hslider", has_text="mask ratio")
    assert slider.count() == 1 and explorer.locator(".widget-dropdown").count() == 1
    before = _explorer_state(explorer)
    assert before["loaded"], "reconstruction image did not load"
    explorer.screenshot(path=str(SHOTS / "reconstruction-widget-before.png"))

    ratio = float(before["readout"])
    key, presses = ("ArrowLeft" if ratio > 0.5 else "ArrowRight"), 4
    slider.locator(".noUi-handle").focus()
    for _ in range(presses):
        page.keyboard.press(key)
        time.sleep(0.2)
    target = f"{ratio + (-0.05 if key == 'ArrowLeft' else 0.05) * presses:.2f}"
    # the readout moves at once; the kernel answers with a new image and count
    page.wait_for_function(
        """([id, target]) => {
            const app = document.querySelector('#' + id + ' .jp-OutputArea-output .widget-vbox');
            const s = [...app.querySelectorAll('.widget-hslider')]
                .find(e => e.textContent.includes('mask ratio'));
            const status = [...app.querySelectorAll('.widget-html')]
                .find(e => e.textContent.includes('patches masked'));
            return s.querySelector('.widget-readout').textContent.trim() === target && status;
        }""", arg=[panel, target], timeout=30_000)
    page.wait_for_function(
        """([id, old]) => [...document.querySelectorAll('#' + id + ' .widget-html')]
            .some(e => e.textContent.includes('patches masked') && e.textContent !== old)""",
        arg=[panel, before["status"]], timeout=60_000)
    time.sleep(1.5)  # let the last of the key presses' updates arrive
    page.wait_for_function(
        """id => { const w = Array.from(window.jupyterapp.shell.widgets('main'))
            .find(w => w.id === id); return w.sessionContext.session.kernel.status === 'idle'; }""",
        arg=panel, timeout=60_000)
    after = _explorer_state(explorer)
    explorer.screenshot(path=str(SHOTS / "reconstruction-widget.png"))

    assert after["readout"] == target
    n_before, total = _masked(before["status"])
    n_after, _ = _masked(after["status"])
    expected = total - int(total * (1 - float(target)))
    assert n_after != n_before and abs(n_after - expected) <= 1, (before["status"], after["status"])
    assert (n_after < n_before) == (key == "ArrowLeft")
    assert after["loaded"] and after["src"] != before["src"], "the image widget was not updated"
    assert after["png"] != before["png"], "the rendered reconstruction did not change"
    assert not notebook_problems(page, panel, settle_s=0)


def test_fusion_weights_plotly_renders_and_hovers(lab, browser):
    page, panel = lab.run(browser, "fusion_weights")
    plot = page.locator(f"#{panel} .js-plotly-plot").first
    plot.wait_for(state="visible", timeout=30_000)
    plot.scroll_into_view_if_needed()
    n_traces = plot.evaluate("gd => gd._fullData.length")
    assert n_traces >= 2 and plot.locator(".scatterlayer .trace").count() == n_traces
    # the pixel of a logged point of the first curve, from plotly's own axes
    point = plot.evaluate("""gd => {
        const fl = gd._fullLayout, xa = fl.xaxis, ya = fl.yaxis, tr = gd._fullData[0];
        const i = Math.floor(tr.x.length / 2), r = gd.getBoundingClientRect();
        return {x: r.left + xa._offset + xa.l2p(tr.x[i]), y: r.top + ya._offset + ya.l2p(tr.y[i])};
    }""")
    assert not plot.locator(".hoverlayer").text_content().strip()
    page.mouse.move(point["x"] - 40, point["y"] + 20)
    page.mouse.move(point["x"], point["y"], steps=8)
    hover = page.locator(f"#{panel} .js-plotly-plot .hoverlayer .hovertext")
    hover.first.wait_for(state="attached", timeout=10_000)
    text = plot.locator(".hoverlayer").text_content()
    plot.screenshot(path=str(SHOTS / "fusion-weights-plot.png"))
    assert "step" in text and "weight" in text and "block" in text, text


def test_gallery_renders(lab, browser):
    for name in NOTEBOOK_PARAMS:
        lab.run(browser, name)
    records = [lab.records[name] for name in NOTEBOOK_PARAMS]
    meta = {"git_commit": make_figures.git_commit(), "versions": make_figures.versions()}
    atomic_write_text(lab.root / "manifest.json", json.dumps({**meta, "figures": records}, indent=2))
    make_figures.write_index(lab.root, records, meta)
    make_figures.write_findings(lab.root, records)
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    page.goto((lab.root / "index.html").as_uri())
    page.wait_for_load_state("load")
    images = page.evaluate("() => [...document.images].map(i => [i.getAttribute('src'), "
                           "i.complete && i.naturalWidth > 0])")
    page.screenshot(path=str(SHOTS / "gallery.png"), full_page=True)
    assert len(images) >= 3 and all(ok for _, ok in images), images
    text = page.inner_text("body")
    assert "FAILED" not in text and all(n in text for n in NOTEBOOK_PARAMS)
    # a caption under each figure set: what it shows, the paper's figure, the run's n's
    captions = page.evaluate("""() => [...document.querySelectorAll('section')].map(s => {
        const c = s.querySelector('figure > figcaption'), f = s.querySelector('figure .figures');
        return [s.id, c ? c.innerText : null,
                !!c && !!f && c.getBoundingClientRect().top >= f.getBoundingClientRect().bottom];
    })""")
    assert [name for name, _, _ in captions] == list(NOTEBOOK_PARAMS), captions
    for name, caption, below in captions:
        assert caption and "Paper:" in caption and "n: " in caption and below, (name, caption)
    assert "MAE Figs. 2–4" in captions[0][1] and "3 images; mask ratio 0.75" in captions[0][1]
    assert "MFF §3" in captions[1][1] and "3 supervised steps" in captions[1][1]
    links = page.evaluate(
        "() => [...document.querySelectorAll('a')].map(a => a.getAttribute('href'))")
    for link in links:
        assert (lab.root / link).exists(), f"gallery link {link} does not resolve"
    # the interactive figure linked from the gallery renders on its own page too
    html = next(link for link in links if link.endswith(".html") and "/" in link)
    page.goto((lab.root / html).as_uri())
    page.locator(".js-plotly-plot").first.wait_for(state="visible", timeout=30_000)
    # the findings page: the claims as an HTML table, the forest plot under it
    page.goto((lab.root / "findings.html").as_uri())
    page.wait_for_load_state("load")
    page.screenshot(path=str(SHOTS / "findings.png"), full_page=True)
    assert page.locator("table tbody tr").count() >= 1
    assert page.evaluate("() => [...document.images].every(i => i.complete && i.naturalWidth > 0)")
    assert page.locator("img[src='forest.png']").count() == 1
    page.close()


# ----------------------------------------------------------------------------- explorers
# issue 33's widget points (uploads, "save PNG", the attention explorer's width and colour key),
# in the notebook written here (TEST_NOTEBOOKS["widgets"])
UPLOAD_RGB = (30, 190, 90)  # a green no built-in image is filled with


def _app(page, panel: str, text: str):
    """The outermost widget box of the output that shows ``text``."""
    app = page.locator(f"#{panel} .jp-OutputArea-output").filter(has_text=text) \
        .locator(".widget-vbox").first
    app.scroll_into_view_if_needed()
    return app


def _shown(img) -> tuple[bytes, tuple[int, int]]:
    """The bytes of the picture an <img> shows (fetched from its src, a blob URL) and its
    natural size."""
    got = img.evaluate("""async i => {
        const bytes = new Uint8Array(await (await fetch(i.src)).arrayBuffer());
        let s = '';
        for (const b of bytes) s += String.fromCharCode(b);
        return {b64: btoa(s), size: [i.naturalWidth, i.naturalHeight]};
    }""")
    return base64.b64decode(got["b64"]), tuple(got["size"])


def _pixels(png: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(png)) as im:
        return np.asarray(im.convert("RGB")).astype(int)


def _wait_idle(page, panel: str) -> None:
    page.wait_for_function(
        """id => { const w = Array.from(window.jupyterapp.shell.widgets('main'))
            .find(w => w.id === id); return w.sessionContext.session.kernel.status === 'idle'; }""",
        arg=panel, timeout=60_000)


def test_reconstruction_explorer_shows_an_uploaded_image(lab, browser, tmp_path):
    page, panel = lab.run(browser, "widgets")
    explorer = _app(page, panel, "patches masked")
    img = explorer.locator("img").first
    status = explorer.locator(".widget-html", has_text="patches masked")
    before, before_src = _shown(img)[0], img.get_attribute("src")
    before_status = status.inner_text()
    upload = tmp_path / "green.png"
    Image.new("RGB", (40, 48), UPLOAD_RGB).save(upload)  # not square: resized and cropped

    # the upload button opens a file chooser (its <input type=file> is not in the page)
    button = explorer.locator(".widget-upload, .jupyter-widget-upload")
    with page.expect_file_chooser() as chooser:
        button.click()
    assert chooser.value.is_multiple()
    chooser.value.set_files(str(upload))
    source = explorer.locator(".widget-html", has_text="uploaded:")
    source.wait_for(state="visible", timeout=60_000)
    page.wait_for_function("([i, old]) => i.src !== old && i.complete && i.naturalWidth > 0",
                           arg=[img.element_handle(), before_src], timeout=60_000)
    _wait_idle(page, panel)
    after, (width, height) = _shown(img)
    explorer.screenshot(path=str(SHOTS / "reconstruction-widget-upload.png"))

    assert re.fullmatch(r"uploaded: 1 image\(s\) \(green\.png\) at \d+ px",
                        source.inner_text().strip()), source.inner_text()
    assert button.inner_text().strip() == "your images (1)"
    assert explorer.locator(".widget-hslider", has_text="image") \
        .locator(".widget-readout").inner_text().strip() == "0"
    assert after != before and status.inner_text() != before_status
    # two rows (MAE, MFF-MAE) of four panels: width 4p + 3g, height 2p + g
    gap = width - 2 * height
    side = (height - gap) // 2
    assert gap > 0 and 4 * side + 3 * gap == width, (width, height)
    pixels = _pixels(after)
    for top in (0, side + gap):  # each row's original: the upload, as the probes see it
        original = pixels[top:top + side, :side]
        assert np.abs(original - UPLOAD_RGB).max() <= 3, (top, original.reshape(-1, 3)[:3])
    assert np.abs(_pixels(before)[:side, :side] - UPLOAD_RGB).max() > 3
    assert not notebook_problems(page, panel, settle_s=0)


def test_save_png_writes_the_shown_picture(lab, browser):
    page, panel = lab.run(browser, "widgets")
    explorer = _app(page, panel, "patches masked")
    status = explorer.locator(".widget-html", has_text="patches masked")
    seed = explorer.locator(".widget-text", has_text="seed").locator("input")
    old_status, old_text = status.inner_text(), status.evaluate("s => s.textContent")
    seed.fill("7")  # a setting of its own, so the name is not the defaults'
    seed.press("Enter")
    page.wait_for_function("([s, old]) => s.textContent !== old",
                           arg=[status.element_handle(), old_text], timeout=60_000)
    _wait_idle(page, panel)
    assert status.inner_text() != old_status
    ratio = explorer.locator(".widget-hslider", has_text="mask ratio") \
        .locator(".widget-readout").inner_text().strip()
    strategy = explorer.locator(".widget-dropdown select") \
        .evaluate("s => s.options[s.selectedIndex].textContent").strip()
    index = explorer.locator(".widget-hslider", has_text="image") \
        .locator(".widget-readout").inner_text().strip()
    name = f"reconstruction-ratio{ratio}-{strategy}-image{index}-seed7.png"
    path = lab.root / "widgets" / SAVED / name  # the folder given, not the notebook's
    assert not path.exists()

    explorer.get_by_role("button", name="save PNG").click()
    note = explorer.locator(".widget-html", has_text="saved ")
    note.wait_for(state="visible", timeout=30_000)
    shown, size = _shown(explorer.locator("img").first)

    assert note.inner_text().strip() == f"saved {path}"
    assert path.read_bytes() == shown  # the picture as it is shown, byte for byte
    with Image.open(path) as saved:
        assert saved.format == "PNG" and saved.size == size
        saved.verify()
    assert size[0] > 100 and size[1] > 100


def test_attention_explorer_is_narrow_with_a_colour_key(lab, browser):
    page, panel = lab.run(browser, "widgets")
    app = _app(page, panel, "query row")
    app.screenshot(path=str(SHOTS / "attention-widget.png"))
    box = app.bounding_box()
    # what it draws, including anything spilling out of the box
    right = app.evaluate("a => Math.max(...[a, ...a.querySelectorAll('*')].map("
                         "e => e.getBoundingClientRect().right))")
    assert 300 < box["width"] <= 650 and right - box["x"] <= 650, (box, right)

    picture, key = app.locator("img").nth(0), app.locator("img").nth(1)
    key.wait_for(state="visible")
    pic_box, key_box = picture.bounding_box(), key.bounding_box()
    _, (side, _) = _shown(picture)  # the picture at its own size, not stretched to the output
    assert pic_box["width"] == pytest.approx(side, abs=1), (pic_box, side)
    assert key_box["y"] >= pic_box["y"] + pic_box["height"] - 1  # under the picture
    assert abs(key_box["width"] - pic_box["width"]) <= 1 and 4 <= key_box["height"] <= 40
    # dark at 0 (left), bright at the largest weight (right), getting brighter all the way
    bar, _ = _shown(key)
    brightness = _pixels(bar).mean(axis=(0, 2))
    assert brightness[0] < 40 and brightness[-1] > 200, brightness[[0, -1]]
    assert np.all(np.diff(brightness) >= -1)
    labels = app.locator(".widget-html", has_text="attention weight")
    assert labels.is_visible()
    low, name, high = [s.strip() for s in labels.locator("span").all_inner_texts()]
    largest = re.search(r"largest weight (\d\.\d+)",
                        app.locator(".widget-html", has_text="largest weight").inner_text())
    assert (low, name) == ("0", "attention weight") and largest and high == largest.group(1)
    labels_box = labels.bounding_box()
    assert labels_box["y"] >= key_box["y"] + key_box["height"] - 1
