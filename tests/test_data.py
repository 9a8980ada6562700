"""Data: the built-in photo set, image folders, transforms and the training order."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from workbench.data import (IMAGENET_MEAN, IMAGENET_STD, BuiltinPhotos, BuiltinShapes,
                            FolderImages, StepBatches, build_dataset, heldout_batch, normalize,
                            photo_tiles, plain_view_seed, to_rgb_uint8, unnormalize)

S = 16


@pytest.fixture(scope="module")
def train_ds():
    return BuiltinPhotos(S, "train")


@pytest.fixture(scope="module")
def heldout_ds():
    return BuiltinPhotos(S, "heldout", train_transform=False)


def overlap(a, b) -> bool:
    return (a.top < b.top + b.size and b.top < a.top + a.size
            and a.left < b.left + b.size and b.left < a.left + a.size)


# ----------------------------------------------------------------------------- built-in photos
def test_builtin_has_the_shipped_photos(train_ds):
    assert {"astronaut", "coffee", "chelsea", "camera", "china", "flower"} <= set(train_ds.classes)
    assert len(train_ds.classes) >= 12
    # every photo gives training and held-out tiles
    assert set(train_ds.labels) == set(range(len(train_ds.classes)))
    assert set(BuiltinPhotos(S, "heldout").labels) == set(range(len(train_ds.classes)))
    # camera is grayscale in skimage: converted to RGB (3 equal channels)
    cam = train_ds.images[train_ds.classes.index("camera")]
    assert cam.shape[0] == 3 and torch.equal(cam[0], cam[1]) and cam.dtype == torch.uint8


def test_builtin_is_deterministic(train_ds):
    other = BuiltinPhotos(S, "train")
    for key in [(0, 1), (17, 5), (len(train_ds) - 1, 123)]:
        x1, y1 = train_ds[key]
        x2, y2 = other[key]
        assert torch.equal(x1, x2) and y1 == y2
    assert not torch.equal(train_ds[(3, 1)][0], train_ds[(3, 2)][0])  # seed changes the view
    a, b = heldout_batch(S, 16, seed=0), heldout_batch(S, 16, seed=0)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(heldout_batch(S, 16, seed=1)[1], a[1])


def test_plain_indexing_is_a_function_of_the_dataset_seed_and_draws_nothing_global():
    """``ds[i]`` with the training transform is the view of the seed derived from the dataset's
    seed and i: the same every time, and the global generator is left as it was."""
    ds = BuiltinPhotos(S, "train")
    state = torch.get_rng_state()
    a = ds[7][0]
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(a, ds[7][0]) and torch.equal(a, ds[(7, plain_view_seed(0, 7))][0])
    other = BuiltinPhotos(S, "train", seed=1)
    assert not torch.equal(a, other[7][0])
    assert torch.equal(other[7][0], build_dataset("builtin", S, "train", seed=1)[7][0])
    shapes = BuiltinShapes(S, "train")
    flips = [shapes[i][0] for i in range(8)]
    assert torch.equal(torch.get_rng_state(), state)
    assert all(torch.equal(x, shapes[i][0]) for i, x in enumerate(flips))


def test_augment_is_a_constructor_argument_of_every_dataset(tmp_path):
    """A dataset built directly takes ``augment`` as build_dataset does; nothing is set on it
    afterwards."""
    root = tmp_path / "f"
    (root / "a").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for k in range(3):
        pixels = rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(root / f"a/{k}.png")
    photos = [BuiltinPhotos(32, "train", augment=a) for a in ("resize-crop", "mae")]
    folders = [FolderImages(root, 32, "train", augment=a) for a in ("resize-crop", "mae")]
    for (direct, plain), name in ((photos, "builtin"), (folders, root)):
        built = build_dataset(name, 32, "train", augment="resize-crop")
        assert direct.augment == "resize-crop" and plain.augment == "mae"
        assert torch.equal(direct[(1, 5)][0], built[(1, 5)][0])
        assert not torch.equal(direct[(1, 5)][0], plain[(1, 5)][0])
    for make in (lambda a: BuiltinPhotos(S, augment=a), lambda a: FolderImages(root, S, augment=a),
                 lambda a: BuiltinShapes(S, augment=a)):
        with pytest.raises(ValueError, match="augment must be one of"):
            make("randaugment")
    with pytest.raises(ValueError, match="shapes"):
        BuiltinShapes(S, augment="resize-crop")


def test_heldout_tiles_never_overlap_training_regions(train_ds, heldout_ds):
    assert len(heldout_ds) >= 3 * len(train_ds.classes)
    for h in heldout_ds.tiles:
        same_photo = [t for t in train_ds.tiles if t.photo == h.photo]
        assert same_photo and not any(overlap(h, t) for t in same_photo)
    for t in train_ds.tiles:  # tiles lie inside their photo
        img = train_ds.images[t.photo]
        assert t.top + t.size <= img.shape[1] and t.left + t.size <= img.shape[2]


def test_photo_tiles_portrait_and_landscape():
    for h, w in [(90, 150), (150, 90), (96, 96)]:
        tr, he = photo_tiles(h, w, 0, "train"), photo_tiles(h, w, 0, "heldout")
        assert tr and he
        assert not any(overlap(a, b) for a in tr for b in he)


def test_labels_are_the_source_photo(train_ds, heldout_ds):
    for ds in (train_ds, heldout_ds):
        for i in range(0, len(ds), 37):
            img, _ = ds.region(i)
            assert ds.label(i) == ds.tiles[i].photo
            assert img is ds.images[ds.label(i)]
            assert ds[(i, 0)][1] == ds.tiles[i].photo


def test_shapes_and_normalisation(train_ds, heldout_ds):
    x, y = train_ds[(5, 0)]
    assert x.shape == (3, S, S) and x.dtype == torch.float32 and isinstance(y, int)
    white = normalize(torch.full((3, 2, 2), 255, dtype=torch.uint8))
    expected = (1 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    assert torch.allclose(white[:, 0, 0], expected)
    assert torch.allclose(unnormalize(white), torch.ones(3, 2, 2), atol=1e-6)
    # the eval view of a tile is its central 87.5 % resized: a uniform tile stays uniform
    imgs, labels = heldout_batch(S, 32)
    assert imgs.shape == (32, 3, S, S) and labels.dtype == torch.long
    assert -2.2 < float(imgs.min()) and float(imgs.max()) < 2.7
    assert 0.3 < float(imgs.std()) < 1.7


# ----------------------------------------------------------------------------- image folders
@pytest.fixture
def folder(tmp_path):
    root = tmp_path / "imgs"
    (root / "cats").mkdir(parents=True)
    (root / "dogs").mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (40, 50), dtype=np.uint8), "L").save(root / "cats/gray.png")
    Image.fromarray(rng.integers(0, 255, (30, 30, 4), dtype=np.uint8), "RGBA").save(
        root / "cats/rgba.png")
    deep = np.full((24, 24), 65535, dtype=np.uint16)
    deep[:, :12] = 32896  # 50 % grey in 16 bit
    Image.fromarray(deep).save(root / "cats/deep16.png")
    Image.fromarray(rng.integers(0, 255, (64, 48, 3), dtype=np.uint8)).save(root / "dogs/good.jpg")
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(root / "dogs/cut.jpg")
    data = (root / "dogs/cut.jpg").read_bytes()
    (root / "dogs/cut.jpg").write_bytes(data[: len(data) // 3])  # truncated
    (root / "dogs/notes.txt").write_text("not an image")
    return root


def test_image_folder_skips_bad_files_and_converts(folder):
    with pytest.warns(UserWarning, match="skipped 2 unreadable"):
        ds = FolderImages(folder, S, "train")
    assert ds.classes == ["cats", "dogs"]
    assert len(ds) == 4 and len(ds.skipped) == 2
    assert {p.split("/")[-1] for p, _ in ds.skipped} == {"cut.jpg", "notes.txt"}
    assert sorted(ds.labels) == [0, 0, 0, 1]
    for i in range(len(ds)):
        x, y = ds[(i, i)]
        assert x.shape == (3, S, S) and torch.isfinite(x).all()
    # 16-bit is scaled to 8 bit (not clipped), gray becomes 3 equal channels, alpha is dropped
    with Image.open(folder / "cats/deep16.png") as im:
        a = to_rgb_uint8(im)
    assert a.shape == (24, 24, 3) and a.dtype == np.uint8
    assert a[0, 0].tolist() == [128, 128, 128] and a[0, -1].tolist() == [255, 255, 255]
    with Image.open(folder / "cats/gray.png") as im:
        g = to_rgb_uint8(im)
    assert (g[..., 0] == g[..., 2]).all()
    with Image.open(folder / "cats/rgba.png") as im:
        assert to_rgb_uint8(im).shape == (30, 30, 3)


def test_image_folder_lazy_skip_at_load_time(folder):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = FolderImages(folder, S, "train", train_transform=False, verify=False)
    assert len(ds) == 5 and len(ds.skipped) == 1  # notes.txt has no image extension: checked
    cut = [i for i, (p, _) in enumerate(ds.samples) if p.name == "cut.jpg"][0]
    with pytest.warns(UserWarning, match="cut.jpg"):
        x, y = ds[cut]  # replaced by the next readable image, never a crash
    assert x.shape == (3, S, S) and len(ds.skipped) + ds.skipped_while_loading == 2
    assert "1 more failed to decode while loading" in ds.report()


def test_image_folder_counts_files_that_fail_in_loader_workers(folder):
    """A file that fails to decode inside a DataLoader worker still counts in the main process."""
    from torch.utils.data import DataLoader

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = FolderImages(folder, S, "train", train_transform=False, verify=False)
        batches = list(DataLoader(ds, batch_size=len(ds), num_workers=1))
    assert batches[0][0].shape[0] == len(ds)
    assert ds.skipped_while_loading == 1 and len(ds.skipped) == 1


def test_image_folder_heldout_split(tmp_path):
    root = tmp_path / "f"
    (root / "a").mkdir(parents=True)
    for k in range(20):
        Image.new("RGB", (20, 20), (k * 10, 0, 0)).save(root / f"a/{k:02d}.png")
    tr, he = FolderImages(root, S, "train"), FolderImages(root, S, "heldout")
    assert len(tr) == 18 and len(he) == 2
    assert not {p for p, _ in tr.samples} & {p for p, _ in he.samples}


# ----------------------------------------------------------------------------- training order
def test_step_batches_split_over_ranks_and_micro_batches():
    single = StepBatches(50, 8, seed=3)
    for step in (0, 6, 7):  # 8 * 7 = 56 > 50: crosses an epoch
        whole = single.keys(step, 0)
        parts = [StepBatches(50, 8, 3, accum=2, rank=r, world=2).keys(step, m)
                 for m in range(2) for r in range(2)]
        assert [k for p in parts for k in p] == whole
        seeds = [s for m in range(2) for r in range(2)
                 for s in StepBatches(50, 8, 3, accum=2, rank=r, world=2).mask_seeds(step, m)]
        assert seeds == single.mask_seeds(step, 0)
    epoch0 = [i for s in range(6) for i, _ in single.keys(s, 0)] + \
        [i for i, _ in single.keys(6, 0)][:2]
    assert sorted(epoch0) == list(range(50))  # one epoch = one permutation
    resumed = list(StepBatches(50, 8, 3, start_step=4, steps=6))
    assert resumed == [single.keys(4, 0), single.keys(5, 0)]
    with pytest.raises(ValueError, match="not divisible"):
        StepBatches(50, 6, accum=4)


def test_resize_crop_augmentation_is_a_reflect_padded_crop_of_the_resized_region():
    """mmpretrain's MFF pipeline (resize, RandomCrop padding 4 reflect, flip), checked against
    every crop offset and flip of an independently resized and padded region."""
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms.v2 import functional as TF

    from workbench.data import normalize
    from workbench.training import TrainConfig, resolve

    ds = build_dataset("builtin", 32, "train", augment="resize-crop")
    img, (top, left, h, w) = ds.region(3)
    base = TF.resized_crop(img, top, left, h, w, [32, 32],
                           interpolation=InterpolationMode.BICUBIC, antialias=True)
    padded = TF.pad(base, [4], padding_mode="reflect")
    crops = [normalize(TF.crop(padded, i, j, 32, 32)) for i in range(9) for j in range(9)]
    crops += [TF.horizontal_flip(c) for c in crops]
    offsets = set()
    for seed in range(12):
        x, _ = ds[(3, seed)]
        hits = [k for k, c in enumerate(crops) if torch.equal(x, c)]
        assert hits, seed
        offsets.add(hits[0])
    assert len(offsets) > 3  # the offset and flip follow the seed
    assert not torch.equal(ds[(3, 0)][0], build_dataset("builtin", 32, "train")[(3, 0)][0])
    with pytest.raises(ValueError, match="shapes"):
        build_dataset("shapes", 32, "train", augment="resize-crop")
    with pytest.raises(ValueError, match="augment must be one of"):
        resolve(TrainConfig(augment="randaugment"))
