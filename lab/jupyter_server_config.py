"""JupyterLab settings for ``make lab`` (read through JUPYTER_CONFIG_PATH=lab, beside the user's
own ~/.jupyter): notebooks are saved without outputs, so running the tracked notebooks by hand
leaves the repository clean (``git status`` shows only edits to cells). What a run shows stays on
screen until the notebook is closed; ``make figures`` keeps every executed notebook with its
outputs under figures/.
"""


def strip_outputs(model, path, contents_manager, **kwargs):
    """A ``pre_save_hook``: drop every code cell's outputs and execution count, and the
    widget state, before a notebook reaches the disk."""
    if model.get("type") != "notebook" or not isinstance(model.get("content"), dict):
        return
    notebook = model["content"]
    for cell in notebook.get("cells", []):
        if cell.get("cell_type") == "code":
            cell["outputs"] = []
            cell["execution_count"] = None
    notebook.get("metadata", {}).pop("widgets", None)


c = get_config()  # noqa: F821 (defined by Jupyter when it reads this file)
c.FileContentsManager.pre_save_hook = strip_outputs
