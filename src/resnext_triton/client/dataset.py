"""Labelled image sets for accuracy evaluation: an ImageFolder tree, a label file, or no labels.

Three layouts (:func:`load_dataset`):

* an **ImageFolder tree**: one folder per class under the root, named by the class's WordNet id
  (``n01440764/``, matched against the first word of the model's label lines such as
  ``n01440764 tench, Tinca tinca``), by the whole label, or by the class index (``0/``, ``17/``);
  the image files under each folder (recursively) belong to that class;
* a **label file** (``--label-file``): ``filename class`` lines, as ImageNet's validation list
  (``ILSVRC2012_val_00000001.JPEG 65``); filenames are relative to the root, the class is an
  index or a WordNet id; blank lines and ``#`` comments are skipped;
* **unlabelled**: every image file under the root, for agreement between models only.

A problem with the set itself (an unknown class name, a malformed line, no images) raises
:class:`DatasetError` before anything is sent; a single unreadable image is not the set's problem:
it fails alone when it is classified.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from resnext_triton.client.errors import ClientError
from resnext_triton.client.inputs import image_extensions, walk_images

logger = logging.getLogger(__name__)

WNID = re.compile(r"n\d{8}")
"""A WordNet id as ImageNet names its classes."""

IMAGE_FOLDER = "image folder"
LABEL_FILE = "label file"
UNLABELLED = "unlabelled"


class DatasetError(ClientError):
    """The image set cannot be used: no images, an unknown class name, a malformed label file."""


@dataclass(frozen=True)
class LabelledImage:
    """One image of the set and its class index (None when the set is unlabelled)."""

    path: Path
    label: int | None


@dataclass(frozen=True)
class Dataset:
    """An image set in a fixed order, with where it came from."""

    root: Path
    layout: str
    images: tuple[LabelledImage, ...]

    def __len__(self) -> int:
        return len(self.images)

    @property
    def labelled(self) -> bool:
        """Whether every image has a class."""
        return self.layout != UNLABELLED

    @property
    def classes(self) -> int:
        """How many distinct classes the images have (0 when unlabelled)."""
        return len({i.label for i in self.images if i.label is not None})

    def describe(self) -> str:
        """One line: the root, the layout and the counts."""
        counts = f"{len(self):,} images" + (f" in {self.classes:,} classes" if self.labelled else "")
        return f"{self.root} ({self.layout}): {counts}"


def class_index(labels: Sequence[str]) -> dict[str, int]:
    """Class names to indices: each label's WordNet id (its first word) and the whole label."""
    index: dict[str, int] = {}
    for i, label in enumerate(labels):
        index.setdefault(label, i)
        first = label.split(maxsplit=1)[0] if label.split() else ""
        if WNID.fullmatch(first):
            index.setdefault(first, i)
    return index


def parse_class(name: str, index: dict[str, int], num_classes: int) -> int:
    """The class index a folder name or label-file entry names: a class index or a class name.

    Raises:
        DatasetError: if it is neither a class index below ``num_classes`` nor a known name.
    """
    if name.isdigit():
        value = int(name)
        if value >= num_classes:
            raise DatasetError(
                f"class index {value} is out of range: the model has {num_classes} classes (0-{num_classes - 1})"
            )
        return value
    if name in index:
        return index[name]
    kind = "WordNet id" if WNID.fullmatch(name) else "class name"
    raise DatasetError(f"{kind} {name!r} is not in the model's label list (nor a class index 0-{num_classes - 1})")


def load_dataset(
    root: str | os.PathLike[str],
    labels: Sequence[str],
    *,
    label_file: str | os.PathLike[str] | None = None,
    unlabelled: bool = False,
) -> Dataset:
    """Read an image set: a label file if given, an ImageFolder tree if the root has folders, else unlabelled.

    Args:
        root: the directory of images.
        labels: the model's class labels (their WordNet ids name the class folders).
        label_file: ``filename class`` lines, filenames relative to ``root``.
        unlabelled: take every image under ``root`` without labels, whatever its folders.

    Raises:
        DatasetError: if ``root`` is not a directory, holds no images, or names unknown classes.
    """
    base = Path(root)
    if not base.is_dir():
        raise DatasetError(f"not a directory: {base}")
    if label_file is not None:
        return from_label_file(base, label_file, labels)
    if not unlabelled and _class_folders(base):
        return from_image_folder(base, labels)
    images = tuple(LabelledImage(path, None) for path in walk_images(base))
    if not images:
        raise DatasetError(f"no image files under {base}")
    return Dataset(base, UNLABELLED, images)


def _class_folders(root: Path) -> list[os.DirEntry[str]]:
    return sorted(
        (e for e in os.scandir(root) if e.is_dir() and not e.name.startswith(".")),
        key=lambda e: e.name,
    )


def from_image_folder(root: Path, labels: Sequence[str]) -> Dataset:
    """An ImageFolder tree: each folder under ``root`` is a class (WordNet id, label or index).

    Raises:
        DatasetError: if a folder names no class of the model, or no folder holds an image.
    """
    index = class_index(labels)
    images: list[LabelledImage] = []
    for entry in _class_folders(root):
        try:
            label = parse_class(entry.name, index, len(labels))
        except DatasetError as exc:
            raise DatasetError(
                f"class folder {entry.path}: {exc}; name class folders by WordNet id (n01440764) or class index, "
                "or pass --unlabelled to compare models without labels"
            ) from exc
        images += (LabelledImage(path, label) for path in walk_images(entry.path))
    if not images:
        raise DatasetError(f"no image files in the class folders under {root}")
    extensions = image_extensions()
    loose = [e.name for e in os.scandir(root) if e.is_file() and os.path.splitext(e.name)[1].lower() in extensions]
    if loose:
        logger.warning("%d image files directly under %s are in no class folder: ignored", len(loose), root)
    return Dataset(root, IMAGE_FOLDER, tuple(images))


def from_label_file(root: Path, label_file: str | os.PathLike[str], labels: Sequence[str]) -> Dataset:
    """The images a ``filename class`` file lists, in its order (filenames relative to ``root``).

    Raises:
        DatasetError: if the file cannot be read, a line is malformed or names an unknown class,
            a file is listed twice, it lists nothing, or none of its files exists.
    """
    try:
        text = Path(label_file).read_text("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"cannot read the label file {label_file}: {exc}") from exc
    index = class_index(labels)
    seen: dict[str, int] = {}
    images: list[LabelledImage] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.rsplit(maxsplit=1)  # the filename may hold spaces; the class is the last word
        if len(parts) != 2:
            raise DatasetError(f"{label_file}:{number}: expected 'filename class', got {line!r}")
        name, cls = parts
        if name in seen:
            raise DatasetError(f"{label_file}:{number}: {name} is listed twice (first on line {seen[name]})")
        seen[name] = number
        try:
            label = parse_class(cls, index, len(labels))
        except DatasetError as exc:
            raise DatasetError(f"{label_file}:{number}: {exc}") from exc
        images.append(LabelledImage(root / name, label))
    if not images:
        raise DatasetError(f"the label file {label_file} lists no images")
    if not any(image.path.exists() for image in images):
        raise DatasetError(f"none of the {len(images):,} files listed in {label_file} exists under {root}")
    return Dataset(root, LABEL_FILE, tuple(images))
