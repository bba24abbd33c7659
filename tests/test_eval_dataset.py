"""Image sets for the evaluate tool: class folders (WordNet ids, indices), label files, unlabelled, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from resnext_triton.client.dataset import (
    IMAGE_FOLDER,
    LABEL_FILE,
    UNLABELLED,
    DatasetError,
    class_index,
    load_dataset,
)
from resnext_triton.spec import ModelSpec

LABELS = ModelSpec().labels()


def touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"not decoded by these tests")
    return path


def test_wnid_folders_map_through_the_label_list(tmp_path: Path) -> None:
    touch(tmp_path / "n01440764" / "a.JPEG")
    touch(tmp_path / "n01440764" / "sub" / "b.png")
    touch(tmp_path / "n01443537" / "c.jpg")
    touch(tmp_path / "n01443537" / "notes.txt")  # not an image extension: not listed
    touch(tmp_path / ".hidden" / "d.jpg")
    data = load_dataset(tmp_path, LABELS)
    assert data.layout == IMAGE_FOLDER and data.labelled
    assert [(p.path.relative_to(tmp_path).as_posix(), p.label) for p in data.images] == [
        ("n01440764/a.JPEG", 0),
        ("n01440764/sub/b.png", 0),
        ("n01443537/c.jpg", 1),
    ]
    assert data.classes == 2 and len(data) == 3
    assert data.describe() == f"{tmp_path} (image folder): 3 images in 2 classes"


def test_index_folders_and_mixed_names(tmp_path: Path) -> None:
    touch(tmp_path / "0" / "a.jpg")
    touch(tmp_path / "17" / "b.jpg")
    touch(tmp_path / "n09835506" / "c.jpg")  # ballplayer, class 981
    data = load_dataset(tmp_path, LABELS)
    assert sorted(i.label for i in data.images) == [0, 17, 981]
    assert class_index(["cat", "dog"]) == {"cat": 0, "dog": 1}  # labels without WordNet ids: the whole label


def test_unknown_wnid_is_a_clear_error(tmp_path: Path) -> None:
    touch(tmp_path / "n01440764" / "a.jpg")
    touch(tmp_path / "n99999999" / "b.jpg")
    with pytest.raises(DatasetError, match=r"class folder .*n99999999: WordNet id 'n99999999' is not in the model's"):
        load_dataset(tmp_path, LABELS)
    assert load_dataset(tmp_path, LABELS, unlabelled=True).layout == UNLABELLED


def test_out_of_range_index_and_stray_folder_names(tmp_path: Path) -> None:
    touch(tmp_path / "1000" / "a.jpg")
    with pytest.raises(DatasetError, match="class index 1000 is out of range: the model has 1000 classes"):
        load_dataset(tmp_path, LABELS)
    (tmp_path / "1000" / "a.jpg").unlink()
    (tmp_path / "1000").rmdir()
    touch(tmp_path / "holiday" / "a.jpg")
    with pytest.raises(DatasetError, match=r"class name 'holiday'.*--unlabelled"):
        load_dataset(tmp_path, LABELS)


def test_empty_folders_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="no image files under"):
        load_dataset(tmp_path, LABELS)
    (tmp_path / "n01440764").mkdir()
    touch(tmp_path / "n01440764" / "readme.txt")
    with pytest.raises(DatasetError, match="no image files in the class folders"):
        load_dataset(tmp_path, LABELS)
    with pytest.raises(DatasetError, match="not a directory"):
        load_dataset(tmp_path / "missing", LABELS)


def test_flat_folder_is_unlabelled(tmp_path: Path) -> None:
    touch(tmp_path / "b.jpg")
    touch(tmp_path / "a.png")
    data = load_dataset(tmp_path, LABELS)
    assert data.layout == UNLABELLED and not data.labelled and data.classes == 0
    assert [i.path.name for i in data.images] == ["a.png", "b.jpg"] and all(i.label is None for i in data.images)


def test_label_file_as_imagenet_validation_list(tmp_path: Path) -> None:
    for name in ("ILSVRC2012_val_00000001.JPEG", "ILSVRC2012_val_00000002.JPEG", "with space.png"):
        touch(tmp_path / "val" / name)
    listing = tmp_path / "val.txt"
    listing.write_text(
        "# ImageNet validation labels\n"
        "ILSVRC2012_val_00000001.JPEG 65\n"
        "\n"
        "ILSVRC2012_val_00000002.JPEG n01443537\n"
        "with space.png 970\n"
        "missing.JPEG 3\n"  # a listed file that is missing fails alone when classified
    )
    data = load_dataset(tmp_path / "val", LABELS, label_file=listing)
    assert data.layout == LABEL_FILE
    assert [(i.path.name, i.label) for i in data.images] == [
        ("ILSVRC2012_val_00000001.JPEG", 65),
        ("ILSVRC2012_val_00000002.JPEG", 1),
        ("with space.png", 970),
        ("missing.JPEG", 3),
    ]
    assert data.images[0].path == tmp_path / "val" / "ILSVRC2012_val_00000001.JPEG"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a.jpg 1\nb.jpg\n", r"val.txt:2: expected 'filename class', got 'b.jpg'"),
        ("a.jpg 1\na.jpg 2\n", r"val.txt:2: a.jpg is listed twice \(first on line 1\)"),
        ("a.jpg n00000000\n", r"val.txt:1: WordNet id 'n00000000' is not in the model's label list"),
        ("a.jpg 1000\n", r"val.txt:1: class index 1000 is out of range"),
        ("# nothing\n\n", r"lists no images"),
        ("x.jpg 1\ny.jpg 2\n", r"none of the 2 files listed in .*val.txt exists under"),
    ],
)
def test_bad_label_files(tmp_path: Path, text: str, message: str) -> None:
    touch(tmp_path / "a.jpg")
    (tmp_path / "val.txt").write_text(text)
    with pytest.raises(DatasetError, match=message):
        load_dataset(tmp_path, LABELS, label_file=tmp_path / "val.txt")
