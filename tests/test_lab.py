"""``make lab`` leaves the repository clean: the tracked notebooks carry no outputs, and the lab
it starts (a real Jupyter server with lab/'s settings) saves notebooks without outputs and shows
no news pop-up."""
from __future__ import annotations

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

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_committed_notebooks_carry_no_outputs(path):
    nb = json.loads(path.read_text())
    run = [i for i, c in enumerate(nb["cells"]) if c["cell_type"] == "code"
           and (c.get("outputs") or c.get("execution_count") is not None)]
    assert not run, f"{path.name}: cells {run} have outputs (clear them before committing)"
    assert "widgets" not in nb.get("metadata", {}), f"{path.name} holds widget state"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def started_lab(port: int, home: Path) -> tuple[subprocess.Popen, str]:
    """``make lab`` on ``port`` with this interpreter, its token read from what it prints."""
    env = {**os.environ, "JUPYTER_RUNTIME_DIR": str(home / "runtime"),
           "JUPYTER_DATA_DIR": str(home / "data"), "HOME": str(home)}
    proc = subprocess.Popen(["make", "-s", "-o", ".venv/.installed", f"PY={sys.executable}",
                             f"LAB_PORT={port}", "lab"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    deadline = time.monotonic() + 30
    for line in proc.stdout:
        if m := re.search(r"token=(\w+)", line):
            return proc, m.group(1)
        assert time.monotonic() < deadline, "make lab printed no URL"
    pytest.fail(f"make lab exited with {proc.wait()}")


def api(base: str, token: str, path: str, method: str = "GET", body: dict | None = None):
    req = urllib.request.Request(f"{base}{path}", method=method,
                                 data=None if body is None else json.dumps(body).encode(),
                                 headers={"Authorization": f"token {token}",
                                          "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return r.read().decode()


def wait_until_up(base: str, token: str, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"the lab exited with {proc.returncode}"
        try:
            api(base, token, "/api/status")
            return
        except OSError:
            time.sleep(0.5)
    pytest.fail("the lab did not answer within 120 s")


def test_make_lab_saves_notebooks_without_outputs_and_shows_no_news(tmp_path):
    name = f"lab-test-{secrets.token_hex(4)}.ipynb"  # a scratch file in notebooks/, removed below
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    proc, token = started_lab(port, tmp_path)
    try:
        wait_until_up(base, token, proc)
        cell = {"cell_type": "code", "id": "c1", "metadata": {}, "source": "1 + 1",
                "execution_count": 3,
                "outputs": [{"output_type": "execute_result", "execution_count": 3,
                             "data": {"text/plain": "2"}, "metadata": {}}]}
        notebook = {"nbformat": 4, "nbformat_minor": 5, "cells": [cell],
                    "metadata": {"widgets": {"application/vnd.jupyter.widget-state+json": {}}}}
        api(base, token, f"/api/contents/{name}", "PUT",
            {"type": "notebook", "format": "json", "content": notebook})
        saved = json.loads((ROOT / "notebooks" / name).read_text())
        assert saved["cells"][0]["outputs"] == [] and saved["cells"][0]["execution_count"] is None
        assert "".join(saved["cells"][0]["source"]) == "1 + 1" and "widgets" not in saved["metadata"]
        page = api(base, token, "/lab")
        config = json.loads(re.search(r'id="jupyter-config-data"[^>]*>\s*(.*?)\s*</script>', page,
                                      re.S).group(1))
        assert "@jupyterlab/apputils-extension:announcements" in config["disabledExtensions"]
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
        (ROOT / "notebooks" / name).unlink(missing_ok=True)
