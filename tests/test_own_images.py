"""Your own images (issue 33.3, 33.9): a file, a list, a flat or class folder or uploads are
looked at as the probes see them; the labelled-folder errors say what to use instead; the
explorers take uploads and save the picture they show."""
from __future__ import annotations

import datetime
import io
import os

import pytest
import torch
from PIL import Image

from workbench import build_model
from workbench.data import FolderImages, load_images, normalize
from workbench.widgets import AttentionExplorer, ReconstructionExplorer


def png(path=None, colour=(73, 73, 73), size=(50, 40)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, "PNG")
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(buf.getvalue())
    return buf.getvalue()


def test_any_source_of_images_is_taken_and_said(tmp_path):
    png(tmp_path / "flat" / "a.png", (200, 10, 10))
    png(tmp_path / "flat" / "b.png")
    (tmp_path / "flat" / "notes.png").write_text("not an image")
    png(tmp_path / "classes" / "cat" / "c.png")
    one = load_images(tmp_path / "flat" / "a.png", 32)
    assert one.images.shape == (1, 3, 32, 32) and one.names == ["a.png"]
    # the eval view of the whole image, as the probes use it: a uniform image keeps its colour
    want = normalize(torch.tensor([200, 10, 10], dtype=torch.uint8)[:, None, None]
                     .expand(3, 32, 32))
    assert torch.allclose(one.images[0], want, atol=1e-5)
    flat = load_images(tmp_path / "flat", 32)
    assert flat.names == ["a.png", "b.png"] and flat.skipped[0][0] == "notes.png"
    assert "2 image(s) (a.png, b.png) at 32 px; skipped 1: notes.png" in flat.summary()
    mixed = load_images([tmp_path / "classes", png(colour=(0, 0, 255))], 16, limit=5)
    assert mixed.names == ["c.png", "upload 2"] and mixed.images.shape == (2, 3, 16, 16)
    assert load_images(tmp_path / "flat", 32, limit=1).names == ["a.png"]
    with pytest.raises(ValueError, match="no readable image in .*notes"):
        load_images(tmp_path / "flat" / "notes.png", 32)
    with pytest.raises(FileNotFoundError, match="no image file or folder"):
        load_images(tmp_path / "missing", 32)


def test_the_labelled_folder_says_what_to_use_for_looking(tmp_path):
    png(tmp_path / "cat.png")
    with pytest.raises(NotADirectoryError, match="is a file.*load_images"):
        FolderImages(tmp_path / "cat.png", 32)
    with pytest.raises(ValueError, match="no class subfolders.*load_images"):
        FolderImages(tmp_path, 32)
    png(tmp_path / "one" / "dog" / "d.png")
    with pytest.raises(ValueError, match="every 10th file of each class.*load_images"):
        FolderImages(tmp_path / "one", 32, split="heldout")


def test_explorers_take_uploads_and_save_what_they_show(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    model = build_model("mae", "tiny").eval()
    imgs = torch.randn(3, 3, 32, 32)
    explorer = ReconstructionExplorer({"MAE": model}, imgs)
    explorer.index.value = 2
    explorer.upload.value = ({"name": "grey.png", "type": "image/png", "size": 1,
                              "content": memoryview(png()),
                              "last_modified": datetime.datetime.now(datetime.timezone.utc)},)
    assert explorer.imgs.shape == (1, 3, 32, 32) and explorer.index.value == 0
    assert "uploaded: 1 image(s) (grey.png)" in explorer.source.value
    explorer.use_uploads([{"name": "x.txt", "content": memoryview(b"text")}])
    assert "no readable image" in explorer.source.value and explorer.imgs.shape[0] == 1
    path = explorer.save.save()
    assert os.path.basename(path) == "reconstruction-ratio0.75-random-image0-seed0.png"
    assert (tmp_path / path).read_bytes() == bytes(explorer.image.value)
    attention = AttentionExplorer({"MAE": model}, imgs)
    assert f"{float(attention.weights.max()):.3f}" in attention.key_labels.value
    with Image.open(io.BytesIO(bytes(attention.key.value))) as key:
        assert key.size[0] == attention.scale * 32  # as wide as the picture
    saved = attention.save.save()
    assert "block5-headmean-query4x4" in saved and (tmp_path / saved).exists()
