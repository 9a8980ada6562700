"""Images for training and probing: the built-in photo set and ImageNet-style folders.

Every dataset item is ``(img [3, S, S] float, ImageNet-normalised, label int)``. Items are looked up
by ``(index, seed)``: the seed fixes the random crop and flip, so the training loop can make
augmentation a function of (run seed, step, sample) only -- the same on any number of ranks or
workers. A plain index ``ds[i]`` takes the seed derived from the dataset's own ``seed`` (a
constructor argument, 0 by default) and ``i``: the same view every time, no global generator
drawn from.

* ``builtin``: square tiles of the photographs that scikit-image and scikit-learn ship (no
  download). Each photo keeps a band (its last third along the long side) for held-out tiles;
  training tiles come only from the rest. The label is the index of the source photo.
* ``shapes``: eight shape classes drawn at random position, size, rotation and colour over
  crops of those photos (:mod:`workbench.data.shapes`): a label that is semantic, not photo identity.
  Unlimited and deterministic; held-out items use only the photos' held-out bands.
* a folder ``ROOT/<class>/<image>`` (ImageNet layout, :class:`FolderImages`): ``ROOT/train``
  and ``ROOT/val`` are used as the splits when both exist, else every 10th file of each class is
  held out. Unreadable files are skipped with a warning and counted (``dataset.skipped``);
  grayscale, palette, RGBA and 16-bit images are converted to 8-bit RGB, images smaller than the
  crop are upscaled by the crop's resize, and both are counted (``dataset.converted``,
  ``dataset.report()``).

The MAE transform is RandomResizedCrop(S, scale=(0.2, 1), bicubic) + horizontal flip + ImageNet
normalisation; the eval transform is resize (shorter side S / 0.875) + center crop S + normalise.

The modules, each importing only those before it (and ``core.seeds``' :func:`derive_seed`):
:mod:`.views` (constants, normalisation, crops, :class:`ViewDataset`), :mod:`.photos` (the
built-in photos and their tiles), :mod:`.folders` (image folders), :mod:`.shapes`,
:mod:`.sets` (:func:`build_dataset` and the fixed and augmented batches), :mod:`.order`
(:class:`StepBatches`), :mod:`.subsets` (few-shot: :func:`balanced_subset`,
:class:`LabelSubset`). This package only re-exports their names.
"""
from __future__ import annotations

from ..core.seeds import derive_seed
from .folders import IMAGE_EXTENSIONS, FolderImages, conversions, to_rgb_uint8
from .order import StepBatches
from .photos import (BUILTIN_SOURCES, BuiltinPhotos, Tile, array_to_rgb, builtin_photos,
                     builtin_photos_raw, photo_tiles)
from .sets import BUILTIN_SETS, augmented_batches, build_dataset, fixed_batch, heldout_batch
from .shapes import SHAPE_CLASSES, BuiltinShapes
from .subsets import LabelSubset, balanced_subset
from .viewing import ViewedImages, image_files, load_images
from .views import (AUGMENTATIONS, CROP_PADDING, CROP_RATIO, CROP_SCALE, EVAL_CROP, PLAIN_VIEW,
                    IMAGENET_MEAN, IMAGENET_STD, SPLITS, ViewDataset, center_box, check_augment,
                    check_split, normalize, padded_random_crop, plain_view_seed,
                    random_resized_box, unnormalize, view)

__all__ = ["build_dataset", "fixed_batch", "augmented_batches", "heldout_batch", "StepBatches",
           "balanced_subset", "LabelSubset",
           "load_images", "image_files", "ViewedImages",
           "ViewDataset", "BuiltinPhotos", "BuiltinShapes", "FolderImages", "Tile",
           "photo_tiles", "builtin_photos", "builtin_photos_raw", "derive_seed",
           "plain_view_seed", "normalize", "unnormalize", "view", "random_resized_box",
           "center_box", "padded_random_crop", "to_rgb_uint8", "array_to_rgb", "conversions",
           "check_split", "check_augment", "IMAGENET_MEAN", "IMAGENET_STD", "CROP_SCALE",
           "CROP_RATIO", "EVAL_CROP", "CROP_PADDING", "AUGMENTATIONS", "SPLITS",
           "IMAGE_EXTENSIONS", "BUILTIN_SETS", "BUILTIN_SOURCES", "SHAPE_CLASSES", "PLAIN_VIEW"]
