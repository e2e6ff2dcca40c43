"""gpuaug.data.directory: class discovery, file order, subsets, targets, bad input."""

from __future__ import annotations

import os
import pickle
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import textured_image
from PIL import Image
from torch.utils.data import DataLoader

from gpuaug.data.directory import (
    DirectoryDataset,
    collate_skip,
    encode_targets,
    find_classes,
    has_image_extension,
    list_image_files,
    make_dataset,
)
from gpuaug.data.image import KERAS_IMAGE_EXTENSIONS, ImageLoadError


def _png(path: Path, seed: int = 0, size: tuple[int, int] = (8, 10)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(textured_image(np.random.default_rng(seed), *size)).save(path, format="PNG")
    return path


def _names(samples, root: Path) -> list[str]:
    return [os.path.relpath(p, root) for p, _ in samples]


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


# --- find_classes ------------------------------------------------------------------------


def test_find_classes_sorts_sub_folders(tmp_path):
    for name in ["zebra", "Apple", "cat", "10", "9"]:
        (tmp_path / name).mkdir()
    classes, class_to_idx = find_classes(tmp_path)
    assert classes == ["10", "9", "Apple", "cat", "zebra"]
    assert class_to_idx == {"10": 0, "9": 1, "Apple": 2, "cat": 3, "zebra": 4}


def test_find_classes_ignores_files_directly_under_root(tmp_path):
    (tmp_path / "a").mkdir()
    _png(tmp_path / "loose.png")
    assert find_classes(tmp_path)[0] == ["a"]


def test_find_classes_keeps_the_order_of_an_explicit_list(tmp_path):
    for name in ["a", "b", "c"]:
        (tmp_path / name).mkdir()
    assert find_classes(tmp_path, ["c", "a"]) == (["c", "a"], {"c": 0, "a": 1})


def test_find_classes_treats_an_empty_list_as_all_folders(tmp_path):
    (tmp_path / "a").mkdir()
    assert find_classes(tmp_path, [])[0] == ["a"]


def test_find_classes_counts_linked_folders(tmp_path):
    (tmp_path / "real").mkdir()
    (tmp_path / "root").mkdir()
    (tmp_path / "root" / "linked").symlink_to(tmp_path / "real", target_is_directory=True)
    assert find_classes(tmp_path / "root")[0] == ["linked"]


def test_find_classes_missing_root_raises_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        find_classes(tmp_path / "nowhere")


def test_find_classes_root_that_is_a_file_raises(tmp_path):
    with pytest.raises(NotADirectoryError, match="is not a folder"):
        find_classes(_png(tmp_path / "x.png"))


def test_find_classes_root_without_sub_folders_raises(tmp_path):
    with pytest.raises(ValueError, match="Found no class sub-folder in .*one sub-folder per class"):
        find_classes(tmp_path)


def test_find_classes_points_out_loose_images_under_root(tmp_path):
    _png(tmp_path / "a.png")
    _png(tmp_path / "b.jpg")
    with pytest.raises(ValueError, match="Found 2 image file\\(s\\) directly under it"):
        find_classes(tmp_path)


def test_find_classes_unknown_class_is_named(tmp_path):
    (tmp_path / "cats").mkdir()
    with pytest.raises(ValueError, match="Unknown class.*dogs.*found sub-folders: cats"):
        find_classes(tmp_path, ["cats", "dogs"])


def test_find_classes_rejects_a_class_named_twice(tmp_path):
    (tmp_path / "cats").mkdir()
    with pytest.raises(ValueError, match="same class twice: cats"):
        find_classes(tmp_path, ["cats", "cats"])


def test_find_classes_rejects_a_path_as_class_name(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    with pytest.raises(ValueError, match="not paths; got 'a/b'"):
        find_classes(tmp_path, ["a/b"])


def test_find_classes_rejects_a_string_for_classes(tmp_path):
    (tmp_path / "cats").mkdir()
    with pytest.raises(TypeError, match="`classes` must be a list"):
        find_classes(tmp_path, "cats")


# --- file listing ------------------------------------------------------------------------


def test_has_image_extension_ignores_case():
    assert has_image_extension("A.JpEg")
    assert has_image_extension("x.WEBP")
    assert not has_image_extension("x.txt")


def test_has_image_extension_needs_the_dot():
    # Keras matches "imagepng" too (endswith without a dot); we do not.
    assert not has_image_extension("imagepng")


def test_list_image_files_sorts_the_walk_by_folder_path_then_names(tmp_path):
    for rel in ["b.png", "a.png", "sub/z.png", "sub-1/y.png", "sub/deeper/x.png", "Sub/w.png"]:
        _png(tmp_path / "c" / rel)
    got = [os.path.relpath(p, tmp_path / "c") for p in list_image_files(tmp_path / "c")]
    # sorted(os.walk) by dirpath: "c" < "c/Sub" < "c/sub" < "c/sub-1" < "c/sub/deeper"
    assert got == ["a.png", "b.png", "Sub/w.png", "sub/z.png", "sub-1/y.png", "sub/deeper/x.png"]


def test_list_image_files_keeps_supported_extensions_in_any_case(tmp_path):
    for name in ["a.PNG", "b.JpG", "c.jpeg", "d.txt", "e.json", "f.Tiff", "g.gif", "h.webp"]:
        (tmp_path / name).write_bytes(b"")
    got = [os.path.basename(p) for p in list_image_files(tmp_path)]
    assert got == ["a.PNG", "b.JpG", "c.jpeg", "f.Tiff", "g.gif", "h.webp"]


def test_list_image_files_with_keras_extensions_drops_gif_and_webp(tmp_path):
    for name in ["a.png", "g.gif", "h.webp"]:
        (tmp_path / name).write_bytes(b"")
    got = list_image_files(tmp_path, KERAS_IMAGE_EXTENSIONS)
    assert [os.path.basename(p) for p in got] == ["a.png"]


def test_list_image_files_includes_hidden_files_as_keras_does(tmp_path):
    (tmp_path / ".hidden.png").write_bytes(b"")
    assert [os.path.basename(p) for p in list_image_files(tmp_path)] == [".hidden.png"]


def test_list_image_files_skips_linked_folders_by_default(tmp_path):
    _png(tmp_path / "elsewhere" / "x.png")
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "link").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    assert list_image_files(tmp_path / "c") == []


def test_list_image_files_follows_linked_folders_when_asked(tmp_path):
    _png(tmp_path / "elsewhere" / "x.png")
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "link").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    got = list_image_files(tmp_path / "c", follow_links=True)
    assert got == [os.path.join(str(tmp_path / "c"), "link", "x.png")]


def test_list_image_files_cuts_link_cycles(tmp_path):
    _png(tmp_path / "c" / "sub" / "x.png")
    (tmp_path / "c" / "sub" / "loop").symlink_to(tmp_path / "c", target_is_directory=True)
    got = list_image_files(tmp_path / "c", follow_links=True)
    assert [os.path.relpath(p, tmp_path / "c") for p in got] == ["sub/x.png"]


def test_list_image_files_includes_linked_files(tmp_path):
    target = _png(tmp_path / "elsewhere" / "x.png")
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "x.png").symlink_to(target)
    assert len(list_image_files(tmp_path / "c")) == 1


# --- make_dataset ------------------------------------------------------------------------


def test_make_dataset_concatenates_classes_in_index_order(make_tree):
    root = make_tree({"a": 2, "b": 3})
    samples = make_dataset(root, {"b": 0, "a": 1})
    assert _names(samples, root) == [
        "b/img_000.png",
        "b/img_001.png",
        "b/img_002.png",
        "a/img_000.png",
        "a/img_001.png",
    ]
    assert [idx for _, idx in samples] == [0, 0, 0, 1, 1]


def test_make_dataset_paths_join_the_given_root(make_tree):
    root = make_tree({"a": 1})
    assert make_dataset(str(root), {"a": 0})[0][0] == os.path.join(str(root), "a", "img_000.png")


def test_make_dataset_split_takes_int_fraction_of_each_class(make_tree):
    root = make_tree({"a": 10, "b": 7})
    validation = make_dataset(root, {"a": 0, "b": 1}, split=(0.0, 0.3))
    training = make_dataset(root, {"a": 0, "b": 1}, split=(0.3, 1.0))
    assert _names(validation, root) == ["a/img_000.png", "a/img_001.png", "a/img_002.png"] + [
        "b/img_000.png",
        "b/img_001.png",
    ]
    assert len(training) == 7 + 5


def test_make_dataset_raises_on_an_empty_class_folder(make_tree):
    root = make_tree({"a": 2})
    (root / "b").mkdir()
    (root / "b" / "readme.txt").write_text("x")
    with pytest.raises(ValueError, match="no valid image file for the classes b in .*Supported"):
        make_dataset(root, {"a": 0, "b": 1})


def test_make_dataset_allow_empty_keeps_going(make_tree):
    root = make_tree({"a": 2})
    (root / "b").mkdir()
    assert len(make_dataset(root, {"a": 0, "b": 1}, allow_empty=True)) == 2


# --- DirectoryDataset: index -------------------------------------------------------------


def test_dataset_indexes_classes_and_samples(image_tree):
    ds = DirectoryDataset(image_tree, target_size=(16, 16))
    assert len(ds) == 8
    assert ds.classes == ["cats", "dogs"]
    assert ds.class_to_idx == {"cats": 0, "dogs": 1}
    assert ds.num_classes == 2
    assert ds.targets == [0] * 5 + [1] * 3
    assert ds.samples[5] == (os.path.join(str(image_tree), "dogs", "img_000.png"), 1)
    assert ds.root == image_tree
    assert ds.skipped == []


def test_dataset_explicit_classes_subset_and_order(make_tree):
    root = make_tree({"a": 1, "b": 2, "c": 3})
    ds = DirectoryDataset(root, target_size=(8, 8), classes=["c", "a"])
    assert ds.class_to_idx == {"c": 0, "a": 1}
    assert ds.targets == [0, 0, 0, 1]


def test_dataset_reads_nested_sub_folders(tmp_path):
    _png(tmp_path / "a" / "x" / "y" / "deep.png")
    _png(tmp_path / "a" / "top.png")
    _png(tmp_path / "b" / "one.png")
    ds = DirectoryDataset(tmp_path, target_size=(8, 8))
    assert _names(ds.samples, tmp_path) == ["a/top.png", "a/x/y/deep.png", "b/one.png"]


def test_dataset_ignores_images_directly_under_root(image_tree):
    _png(image_tree / "stray.png")
    assert len(DirectoryDataset(image_tree, target_size=(8, 8))) == 8


def test_dataset_indexes_gif_and_webp_unless_keras_extensions(tmp_path):
    _png(tmp_path / "a" / "x.png")
    img = Image.fromarray(textured_image(np.random.default_rng(0), 8, 8))
    img.save(tmp_path / "a" / "y.gif")
    img.save(tmp_path / "a" / "z.WEBP")
    assert len(DirectoryDataset(tmp_path, target_size=(8, 8))) == 3
    keras_like = DirectoryDataset(tmp_path, target_size=(8, 8), extensions=KERAS_IMAGE_EXTENSIONS)
    assert len(keras_like) == 1


@pytest.mark.parametrize(
    "name",
    ["with space.png", "ünïcødé_猫.png", "hash#1.png", "[brackets] (1).png", ".hidden.png"],
)
def test_dataset_loads_odd_file_names(tmp_path, name):
    _png(tmp_path / "cls" / name)
    ds = DirectoryDataset(tmp_path, target_size=(8, 8))
    assert os.path.basename(ds.samples[0][0]) == name
    assert ds[0][0].shape == (3, 8, 8)


def test_dataset_counts_per_class(image_tree):
    assert DirectoryDataset(image_tree, target_size=(8, 8)).counts() == {"cats": 5, "dogs": 3}


def test_dataset_repr_summarises(image_tree):
    text = repr(DirectoryDataset(image_tree, target_size=(8, 8)))
    assert "8 images, 2 classes" in text and "'cats': 5" in text


def test_dataset_pickles_for_worker_processes(image_tree):
    ds = DirectoryDataset(image_tree, target_size=(8, 8))
    clone = pickle.loads(pickle.dumps(ds))
    assert clone.samples == ds.samples
    assert torch.equal(clone[0][0], ds[0][0])


# --- DirectoryDataset: validation split --------------------------------------------------


@pytest.mark.parametrize("split", [0.2, 0.3, 0.5, 0.29])
def test_subsets_are_disjoint_and_cover_everything(make_tree, split):
    root = make_tree({"a": 10, "b": 7, "c": 1})
    kw = {"target_size": (8, 8), "validation_split": split, "verify": "none"}
    training = DirectoryDataset(root, subset="training", **kw)
    validation = DirectoryDataset(root, subset="validation", **kw)
    every = DirectoryDataset(root, target_size=(8, 8), verify="none")
    t, v = set(training.samples), set(validation.samples)
    assert not t & v
    assert t | v == set(every.samples)


def test_validation_subset_takes_the_first_int_fraction_per_class(make_tree):
    root = make_tree({"a": 10, "b": 7, "c": 1})
    ds = DirectoryDataset(root, target_size=(8, 8), validation_split=0.3, subset="validation")
    assert ds.counts() == {"a": 3, "b": 2, "c": 0}
    assert _names(ds.samples, root)[:3] == ["a/img_000.png", "a/img_001.png", "a/img_002.png"]


def test_validation_split_without_subset_uses_every_file(image_tree):
    assert len(DirectoryDataset(image_tree, target_size=(8, 8), validation_split=0.5)) == 8


def test_validation_split_accepts_numpy_floats(make_tree):
    root = make_tree({"a": 10})
    ds = DirectoryDataset(
        root, target_size=(8, 8), validation_split=np.float32(0.5), subset="validation"
    )
    assert len(ds) == 5


def test_empty_validation_subset_raises(make_tree):
    root = make_tree({"a": 3, "b": 3})
    with pytest.raises(ValueError, match="no usable image in subset 'validation'.*a=3, b=3"):
        DirectoryDataset(root, target_size=(8, 8), validation_split=0.1, subset="validation")


# --- DirectoryDataset: items and targets -------------------------------------------------


def test_getitem_returns_contiguous_uint8_chw(image_tree):
    image, _ = DirectoryDataset(image_tree, target_size=(12, 20))[0]
    assert image.dtype == torch.uint8
    assert image.shape == (3, 12, 20)
    assert image.is_contiguous()


@pytest.mark.parametrize(("color_mode", "channels"), [("grayscale", 1), ("rgb", 3), ("rgba", 4)])
def test_getitem_channels_follow_color_mode(image_tree, color_mode, channels):
    ds = DirectoryDataset(image_tree, target_size=(8, 8), color_mode=color_mode)
    assert ds.channels == channels
    assert ds[0][0].shape == (channels, 8, 8)


def test_getitem_matches_load_image(image_tree):
    ds = DirectoryDataset(image_tree, target_size=(9, 7), interpolation="bicubic")
    expected = Image.open(ds.samples[6][0]).resize((7, 9), Image.Resampling.BICUBIC)
    np.testing.assert_array_equal(ds[6][0].permute(1, 2, 0).numpy(), np.asarray(expected))


def test_target_size_none_keeps_file_size(image_tree):
    assert DirectoryDataset(image_tree, target_size=None)[0][0].shape == (3, 24, 32)


def test_categorical_target_is_float_one_hot(image_tree):
    ds = DirectoryDataset(image_tree, target_size=(8, 8), class_mode="categorical")
    target = ds[6][1]
    assert target.dtype == torch.float32
    assert target.tolist() == [0.0, 1.0]


def test_binary_target_is_float_scalar(image_tree):
    ds = DirectoryDataset(image_tree, target_size=(8, 8), class_mode="binary")
    assert ds[0][1].dtype == torch.float32 and ds[0][1].shape == ()
    assert (ds[0][1].item(), ds[6][1].item()) == (0.0, 1.0)


def test_sparse_target_is_int64_scalar(image_tree):
    ds = DirectoryDataset(image_tree, target_size=(8, 8), class_mode="sparse")
    assert ds[6][1].dtype == torch.int64 and ds[6][1].shape == ()
    assert ds[6][1].item() == 1


def test_input_target_is_the_image(image_tree):
    image, target = DirectoryDataset(image_tree, target_size=(8, 8), class_mode="input")[0]
    assert torch.equal(image, target)


def test_class_mode_none_returns_the_image_alone(image_tree):
    item = DirectoryDataset(image_tree, target_size=(8, 8), class_mode=None)[0]
    assert isinstance(item, torch.Tensor) and item.shape == (3, 8, 8)


def test_binary_needs_exactly_two_classes(make_tree):
    root = make_tree({"a": 1, "b": 1, "c": 1})
    with pytest.raises(ValueError, match="class_mode='binary' needs exactly 2 classes; found 3"):
        DirectoryDataset(root, target_size=(8, 8), class_mode="binary")


def test_dataloader_batches_the_dataset(image_tree):
    ds = DirectoryDataset(image_tree, target_size=(8, 8), class_mode="sparse")
    x, y = next(iter(DataLoader(ds, batch_size=4)))
    assert x.shape == (4, 3, 8, 8) and x.dtype == torch.uint8
    assert y.tolist() == [0, 0, 0, 0]


# --- encode_targets / collate_skip -------------------------------------------------------


def test_encode_targets_categorical_is_one_hot():
    got = encode_targets(torch.tensor([2, 0]), "categorical", 3)
    assert got.dtype == torch.float32
    assert got.tolist() == [[0, 0, 1], [1, 0, 0]]


def test_encode_targets_binary_is_float():
    got = encode_targets(torch.tensor([1, 0]), "binary", 2)
    assert got.dtype == torch.float32 and got.tolist() == [1.0, 0.0]


def test_encode_targets_sparse_is_int64():
    got = encode_targets(torch.tensor([1, 2], dtype=torch.int32), "sparse", 3)
    assert got.dtype == torch.int64 and got.tolist() == [1, 2]


@pytest.mark.parametrize("mode", ["input", None])
def test_encode_targets_input_and_none_give_none(mode):
    assert encode_targets(torch.tensor([0]), mode, 2) is None


def test_encode_targets_honours_dtype():
    got = encode_targets(torch.tensor([1]), "categorical", 2, dtype=torch.float16)
    assert got.dtype == torch.float16


def test_encode_targets_binary_with_three_classes_raises():
    with pytest.raises(ValueError, match="exactly 2 classes; got num_classes=3"):
        encode_targets(torch.tensor([0]), "binary", 3)


def test_encode_targets_rejects_float_indices():
    with pytest.raises(TypeError, match="integer tensor"):
        encode_targets(torch.tensor([0.0]), "sparse", 2)


def test_encode_targets_rejects_unknown_class_mode():
    with pytest.raises(ValueError, match="`class_mode` must be one of"):
        encode_targets(torch.tensor([0]), "onehot", 2)


def test_collate_skip_drops_failed_items():
    batch = [(torch.zeros(2), torch.tensor(0)), None, (torch.ones(2), torch.tensor(1))]
    x, y = collate_skip(batch)
    assert x.shape == (2, 2) and y.tolist() == [0, 1]


def test_collate_skip_of_only_failures_is_none():
    assert collate_skip([None, None]) is None


# --- DirectoryDataset: argument validation -----------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"class_mode": "onehot"}, "`class_mode` must be one of"),
        ({"color_mode": "bgr"}, "`color_mode` must be one of"),
        ({"interpolation": "area"}, "`interpolation` must be one of"),
        ({"subset": "test", "validation_split": 0.2}, "`subset` must be 'training'"),
        ({"validation_split": 1.0}, "`validation_split` must be in \\[0, 1\\); got 1.0"),
        ({"validation_split": -0.1}, "`validation_split` must be in \\[0, 1\\)"),
        ({"subset": "training"}, "needs `validation_split` > 0"),
        ({"on_error": "ignore"}, "`on_error` must be 'raise' or 'skip'"),
        ({"verify": "deep"}, "`verify` must be 'auto', 'header', 'full' or 'none'"),
        ({"target_size": (0, 8)}, "`target_size` must hold two positive ints"),
        ({"extensions": []}, "`extensions` must name at least one"),
    ],
)
def test_dataset_rejects_bad_values(image_tree, kwargs, match):
    kwargs = {"target_size": (8, 8), **kwargs}
    with pytest.raises(ValueError, match=match):
        DirectoryDataset(image_tree, **kwargs)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"validation_split": "0.2"}, "`validation_split` must be a float"),
        ({"follow_links": "yes"}, "`follow_links` must be a bool"),
        ({"target_size": 8}, "`target_size` must be a \\(height, width\\) pair"),
        ({"extensions": "png"}, "`extensions` must be a sequence of strings"),
    ],
)
def test_dataset_rejects_bad_types(image_tree, kwargs, match):
    kwargs = {"target_size": (8, 8), **kwargs}
    with pytest.raises(TypeError, match=match):
        DirectoryDataset(image_tree, **kwargs)


# --- DirectoryDataset: bad folders -------------------------------------------------------


def test_dataset_missing_root_raises_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        DirectoryDataset(tmp_path / "nowhere")


def test_dataset_root_without_any_image_raises(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match="Found no valid image file for the classes a, b in"):
        DirectoryDataset(tmp_path, on_error="skip")


def test_dataset_empty_class_folder_raises_naming_it(image_tree):
    (image_tree / "birds").mkdir()
    with pytest.raises(ValueError, match="classes birds in .*birds.*on_error='skip'"):
        DirectoryDataset(image_tree, target_size=(8, 8))


def test_dataset_empty_class_folder_skip_warns_and_keeps_the_index(image_tree):
    (image_tree / "birds").mkdir()
    with pytest.warns(UserWarning, match="classes birds .*kept as classes without images"):
        ds = DirectoryDataset(image_tree, target_size=(8, 8), on_error="skip")
    assert ds.class_to_idx == {"birds": 0, "cats": 1, "dogs": 2}
    assert ds.counts() == {"birds": 0, "cats": 5, "dogs": 3}


def test_dataset_unknown_class_raises_naming_it(image_tree):
    with pytest.raises(ValueError, match="Unknown class.*birds"):
        DirectoryDataset(image_tree, classes=["cats", "birds"])


# --- DirectoryDataset: bad files ---------------------------------------------------------


def test_zero_byte_file_raises_at_index_time_naming_it(image_tree):
    (image_tree / "cats" / "img_001.png").write_bytes(b"")
    with pytest.raises(ImageLoadError, match="img_001.png.*0 bytes") as info:
        DirectoryDataset(image_tree, target_size=(8, 8))
    assert info.value.path.endswith(os.path.join("cats", "img_001.png"))


def test_non_image_file_raises_at_index_time(image_tree):
    (image_tree / "dogs" / "fake.jpg").write_text("<html>not an image</html>")
    with pytest.raises(ImageLoadError, match="fake.jpg.*cannot identify image file"):
        DirectoryDataset(image_tree, target_size=(8, 8))


def test_every_bad_file_is_listed_in_the_error_notes(image_tree):
    (image_tree / "cats" / "img_001.png").write_bytes(b"")
    (image_tree / "dogs" / "img_002.png").write_bytes(b"")
    with pytest.raises(ImageLoadError) as info:
        DirectoryDataset(image_tree, target_size=(8, 8))
    notes = "\n".join(info.value.__notes__)
    assert "1 more unreadable file(s)" in notes and "img_002.png" in notes
    assert "on_error='skip'" in notes


def test_decompression_bomb_raises_at_index_time(image_tree, monkeypatch):
    Image.new("L", (100, 100)).save(image_tree / "dogs" / "bomb.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 5000)
    with pytest.raises(ImageLoadError, match="bomb.png.*decompression bomb"):
        DirectoryDataset(image_tree, target_size=(8, 8))


def test_skip_drops_bad_files_and_warns_once_with_count_and_list(image_tree):
    (image_tree / "cats" / "img_001.png").write_bytes(b"")
    (image_tree / "dogs" / "img_000.png").write_text("nope")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = DirectoryDataset(image_tree, target_size=(8, 8), on_error="skip")
    messages = [str(w.message) for w in caught]
    assert len(messages) == 1
    assert "Skipped 2 unreadable image file(s)" in messages[0]
    assert "img_001.png" in messages[0] and "img_000.png" in messages[0]
    assert len(ds) == 6
    assert [os.path.basename(p) for p, _ in ds.skipped] == ["img_001.png", "img_000.png"]


def test_skip_never_shifts_labels(image_tree):
    (image_tree / "cats" / "img_001.png").write_bytes(b"")
    with pytest.warns(UserWarning, match="Skipped 1"):
        ds = DirectoryDataset(image_tree, target_size=(8, 8), on_error="skip")
    for path, idx in ds.samples:
        assert ds.classes[idx] == Path(path).parent.name
    assert ds.counts() == {"cats": 4, "dogs": 3}
    assert ds.targets == [idx for _, idx in ds.samples]


def test_skip_keeps_the_keras_split_of_the_full_listing(make_tree):
    root = make_tree({"a": 10})
    (root / "a" / "img_001.png").write_bytes(b"")  # in the validation part (first 3)
    with pytest.warns(UserWarning, match="Skipped 1"):
        validation = DirectoryDataset(
            root, target_size=(8, 8), validation_split=0.3, subset="validation", on_error="skip"
        )
    training = DirectoryDataset(root, target_size=(8, 8), validation_split=0.3, subset="training")
    assert _names(validation.samples, root) == ["a/img_000.png", "a/img_002.png"]
    assert len(training) == 7


def test_truncated_file_passes_index_and_raises_at_load(image_tree):
    _truncate(image_tree / "dogs" / "img_001.png")
    ds = DirectoryDataset(image_tree, target_size=(8, 8))
    with pytest.raises(ImageLoadError, match="img_001.png"):
        ds[6]


def test_truncated_file_with_skip_gives_none_and_warns(image_tree):
    _truncate(image_tree / "dogs" / "img_001.png")
    ds = DirectoryDataset(image_tree, target_size=(8, 8), on_error="skip")
    with pytest.warns(UserWarning, match="Skipping a sample.*img_001.png"):
        assert ds[6] is None


def test_load_raises_whatever_on_error(image_tree):
    _truncate(image_tree / "dogs" / "img_001.png")
    ds = DirectoryDataset(image_tree, target_size=(8, 8), on_error="skip")
    with pytest.raises(ImageLoadError, match="img_001.png"):
        ds.load(6)


def test_collate_skip_batches_around_a_failed_load(image_tree):
    _truncate(image_tree / "dogs" / "img_001.png")
    ds = DirectoryDataset(image_tree, target_size=(8, 8), class_mode="sparse", on_error="skip")
    loader = DataLoader(ds, batch_size=8, collate_fn=collate_skip)
    with pytest.warns(UserWarning, match="img_001.png"):
        x, y = next(iter(loader))
    assert x.shape == (7, 3, 8, 8)
    assert y.tolist() == [0] * 5 + [1] * 2


def test_verify_full_catches_truncated_files_at_index_time(image_tree):
    _truncate(image_tree / "dogs" / "img_001.png")
    with pytest.raises(ImageLoadError, match="img_001.png"):
        DirectoryDataset(image_tree, target_size=(8, 8), verify="full")


def test_verify_none_defers_every_check_to_load_time(image_tree):
    (image_tree / "cats" / "img_001.png").write_bytes(b"")
    ds = DirectoryDataset(image_tree, target_size=(8, 8), verify="none")
    assert len(ds) == 8
    with pytest.raises(ImageLoadError, match="img_001.png.*0 bytes"):
        ds[1]


def test_header_check_runs_in_threads_for_many_files(make_tree):
    root = make_tree({"a": 300}, size=(4, 4))
    (root / "a" / "img_299.png").write_bytes(b"")
    with pytest.warns(UserWarning, match="Skipped 1 .*img_299.png"):
        ds = DirectoryDataset(root, target_size=(4, 4), on_error="skip")
    assert len(ds) == 299


def test_worker_process_error_is_an_image_load_error(image_tree):
    _truncate(image_tree / "dogs" / "img_001.png")
    ds = DirectoryDataset(image_tree, target_size=(8, 8))
    loader = DataLoader(ds, batch_size=8, num_workers=1)
    with pytest.raises(ImageLoadError, match="img_001.png"):
        next(iter(loader))


# --- hidden folders ----------------------------------------------------------------------


def test_hidden_folders_are_not_classes(tmp_path):
    _png(tmp_path / ".ipynb_checkpoints" / "a-checkpoint.png")
    _png(tmp_path / ".git" / "x.png")
    _png(tmp_path / "cats" / "c.png")
    _png(tmp_path / "dogs" / "d.png")
    ds = DirectoryDataset(tmp_path, target_size=(8, 8), on_error="skip")
    assert ds.classes == ["cats", "dogs"]
    assert list(ds.targets) == [0, 1]


def test_hidden_folders_inside_a_class_are_not_walked(tmp_path):
    _png(tmp_path / "cats" / "c.png")
    _png(tmp_path / "cats" / ".ipynb_checkpoints" / "c-checkpoint.png")
    _png(tmp_path / "cats" / "sub" / ".thumbnails" / "t.png")
    ds = DirectoryDataset(tmp_path, target_size=(8, 8))
    assert _names(ds.samples, tmp_path) == ["cats/c.png"]


def test_hidden_files_inside_a_class_are_kept_as_keras_keeps_them(tmp_path):
    _png(tmp_path / "cats" / ".c.png")
    assert _names(DirectoryDataset(tmp_path, target_size=(8, 8)).samples, tmp_path) == [
        "cats/.c.png"
    ]


def test_an_explicit_hidden_class_is_used(tmp_path):
    _png(tmp_path / ".ipynb_checkpoints" / "a.png")
    _png(tmp_path / "cats" / "c.png")
    ds = DirectoryDataset(tmp_path, target_size=(8, 8), classes=["cats", ".ipynb_checkpoints"])
    assert ds.class_to_idx == {"cats": 0, ".ipynb_checkpoints": 1}
    assert list(ds.targets) == [0, 1]


def test_include_hidden_gives_keras_index(tmp_path):
    _png(tmp_path / ".ipynb_checkpoints" / "a.png")
    _png(tmp_path / "cats" / "c.png")
    _png(tmp_path / "cats" / ".cache" / "d.png")
    ds = DirectoryDataset(tmp_path, target_size=(8, 8), include_hidden=True)
    assert ds.classes == [".ipynb_checkpoints", "cats"]
    assert _names(ds.samples, tmp_path) == [
        ".ipynb_checkpoints/a.png",
        "cats/c.png",
        "cats/.cache/d.png",
    ]


# --- compact samples and targets (scale) -------------------------------------------------


def test_samples_behave_as_the_list_of_pairs(image_tree):
    ds = DirectoryDataset(image_tree, target_size=(8, 8))
    as_list = list(ds.samples)
    assert len(ds.samples) == 8 and as_list == [ds.samples[i] for i in range(8)]
    assert ds.samples[-1] == as_list[-1]
    assert ds.samples[2:4] == as_list[2:4]
    assert ds.samples == as_list and as_list == list(ds.samples)
    assert all(isinstance(p, str) and type(t) is int for p, t in ds.samples)
    with pytest.raises(IndexError):
        ds.samples[8]


def test_targets_are_an_int32_array_view(image_tree):
    ds = DirectoryDataset(image_tree, target_size=(8, 8))
    array = ds.targets.array
    assert array.dtype == np.int32 and array.tolist() == [0] * 5 + [1] * 3
    assert not array.flags.writeable
    assert torch.as_tensor(list(ds.targets)).tolist() == array.tolist()
    assert torch.tensor(ds.targets).dtype == torch.int64  # as from a list of ints
    assert np.asarray(ds.targets).dtype == np.int64
    assert ds.targets[5] == 1 and type(ds.targets[5]) is int


def test_sample_list_keeps_odd_names_exactly(tmp_path):
    from gpuaug.data.index import SampleList

    pairs = [
        (str(tmp_path / "a" / "ünïcødé_猫.png"), 0),
        (str(tmp_path / "a" / "with space #1.png"), 0),
        (os.path.join(str(tmp_path), "b", os.fsdecode(b"bad\xffbyte.png")), 1),
    ]
    samples = SampleList.from_pairs(pairs)
    assert list(samples) == pairs
    assert list(samples.take(np.array([2, 0]))) == [pairs[2], pairs[0]]
    assert list(samples.take(np.array([False, True, True]))) == pairs[1:]
    assert samples.paths_at(np.array([2, 1])) == [pairs[2][0], pairs[1][0]]


def test_samples_take_far_less_memory_than_a_list_of_tuples(tmp_path):
    import tracemalloc

    from gpuaug.data.index import SampleList

    pairs = [
        (f"/data/train/n{i % 1000:08d}/n{i % 1000:08d}_{i}.JPEG", i % 1000) for i in range(20000)
    ]
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    samples = SampleList.from_pairs(pairs)
    compact = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    del samples
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    # what the index held before: one tuple and one joined path string per sample
    as_list = [(os.path.join(*os.path.split(p)), int(t)) for p, t in pairs]
    listed = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    del as_list
    assert compact / len(pairs) < 50
    assert compact * 3 < listed


def test_len_counts_and_repr_do_not_touch_the_files(image_tree):
    import shutil

    ds = DirectoryDataset(image_tree, target_size=(8, 8))
    shutil.rmtree(image_tree)
    assert len(ds) == 8
    assert ds.counts() == {"cats": 5, "dogs": 3}
    assert "8 images" in repr(ds)


# --- parallel checks (scale) -------------------------------------------------------------


@pytest.mark.parametrize("executor", ["serial", "thread", "process"])
def test_header_checks_find_the_same_bad_files_in_every_executor(tmp_path, executor):
    from gpuaug.data.index import check_files

    good = _png(tmp_path / "good.png")
    paths = []
    for i in range(2600):  # more than one chunk
        path = tmp_path / f"f{i}.png"
        if i % 997 == 3:
            path.write_bytes(b"not an image")
        else:
            os.link(good, path)
        paths.append(str(path))
    bad = check_files(paths, "header", executor=executor, workers=2)
    assert sorted(bad) == [3, 1000, 1997]
    assert "cannot identify" in bad[3]


# --- index cache (scale) -----------------------------------------------------------------


def _settle(root: Path) -> None:
    """Date every folder under root 10 s back, so the listing is not 'racily clean'."""
    import time

    past = time.time_ns() - 10_000_000_000
    for dirpath, _, _ in os.walk(root):
        os.utime(dirpath, ns=(past, past))


@pytest.fixture
def cache_home(tmp_path, monkeypatch):
    home = tmp_path / "cache-home"
    monkeypatch.setenv("GPUAUG_CACHE_DIR", str(home))
    return home


def test_index_cache_is_used_by_a_second_construction(make_tree, cache_home, monkeypatch):
    import gpuaug.data.index as index_mod

    root = make_tree({"a": 4, "b": 3})
    _settle(root)
    first = DirectoryDataset(root, target_size=(8, 8), index_cache=True)
    assert not first.index_cached and first.index_cache_path.is_file()

    def no_walk(*args, **kwargs):
        raise AssertionError("the folder was walked again")

    monkeypatch.setattr("gpuaug.data.directory.list_folders", no_walk)
    monkeypatch.setattr(index_mod, "check_files", no_walk)
    second = DirectoryDataset(root, target_size=(8, 8), index_cache=True)
    assert second.index_cached
    assert second.samples == first.samples and second.targets == first.targets
    training = DirectoryDataset(
        root, target_size=(8, 8), index_cache=True, validation_split=0.5, subset="training"
    )
    assert training.index_cached and len(training) == 4


def test_index_cache_keeps_check_results(make_tree, cache_home):
    root = make_tree({"a": 3})
    (root / "a" / "bad.png").write_bytes(b"junk")
    _settle(root)
    kw = {"target_size": (8, 8), "index_cache": True, "on_error": "skip"}
    with pytest.warns(UserWarning, match="Skipped 1"):
        DirectoryDataset(root, **kw)
    with pytest.warns(UserWarning, match="Skipped 1"):
        again = DirectoryDataset(root, **kw)
    assert again.index_cached and [os.path.basename(p) for p, _ in again.skipped] == ["bad.png"]
    with pytest.raises(ImageLoadError, match="bad.png"):
        DirectoryDataset(root, target_size=(8, 8), index_cache=True)


@pytest.mark.parametrize("change", ["add", "remove", "rename", "new_subfolder", "new_class"])
def test_index_cache_sees_a_changed_listing(make_tree, cache_home, change):
    root = make_tree({"a": 3, "b": 2})
    _settle(root)
    kw = {"target_size": (8, 8), "index_cache": True}
    before = DirectoryDataset(root, **kw)
    if change == "add":
        _png(root / "a" / "zz.png")
    elif change == "remove":
        (root / "a" / "img_001.png").unlink()
    elif change == "rename":
        (root / "b" / "img_000.png").rename(root / "b" / "renamed.png")
    elif change == "new_subfolder":
        _png(root / "b" / "sub" / "x.png")
    else:
        _png(root / "c" / "x.png")
    after = DirectoryDataset(root, **kw)
    assert not after.index_cached
    expected = DirectoryDataset(root, target_size=(8, 8), index_cache=False)
    assert after.samples == expected.samples and after.classes == expected.classes
    assert after.samples != before.samples or after.classes != before.classes


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty", "wrong_arrays"])
def test_a_damaged_index_cache_is_rebuilt(make_tree, cache_home, damage):
    root = make_tree({"a": 3, "b": 2})
    _settle(root)
    kw = {"target_size": (8, 8), "index_cache": True}
    first = DirectoryDataset(root, **kw)
    path = first.index_cache_path
    data = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        path.write_bytes(bytes(range(256)) * 10)
    elif damage == "empty":
        path.write_bytes(b"")
    else:
        with np.load(path) as z:
            arrays = dict(z)
        arrays["starts"] = arrays["starts"][::-1].copy()
        arrays["targets"] = np.full_like(arrays["targets"], 7)
        np.savez(path.with_suffix(""), **arrays)
        path.with_suffix("").with_suffix(".npz").replace(path)
    again = DirectoryDataset(root, **kw)
    assert not again.index_cached
    assert again.samples == first.samples
    assert DirectoryDataset(root, **kw).index_cached  # rewritten


def test_a_racily_clean_listing_is_not_cached(make_tree, cache_home):
    root = make_tree({"a": 2})  # just written: folder mtimes are 'now'
    ds = DirectoryDataset(root, target_size=(8, 8), index_cache=True)
    assert not ds.index_cache_path.exists()


def test_small_folders_are_not_cached_by_default(make_tree, cache_home):
    root = make_tree({"a": 2})
    _settle(root)
    DirectoryDataset(root, target_size=(8, 8))
    assert not (cache_home / "index").exists() or not any((cache_home / "index").iterdir())


def test_concurrent_index_cache_writers_leave_a_valid_cache(make_tree, cache_home):
    from concurrent.futures import ThreadPoolExecutor

    root = make_tree({"a": 3, "b": 3})
    _settle(root)
    kw = {"target_size": (8, 8), "index_cache": True}
    with ThreadPoolExecutor(4) as pool:
        built = list(pool.map(lambda _: DirectoryDataset(root, **kw).samples, range(8)))
    assert all(s == built[0] for s in built)
    assert DirectoryDataset(root, **kw).index_cached
    leftovers = [p.name for p in (cache_home / "index").iterdir() if ".tmp-" in p.name]
    assert leftovers == []


def test_a_cache_dir_setting_that_is_a_file_is_named(make_tree, tmp_path, monkeypatch):
    root = make_tree({"a": 2})
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    monkeypatch.setenv("GPUAUG_CACHE_DIR", str(blocker))
    with pytest.raises(ValueError, match="GPUAUG_CACHE_DIR must be a folder .* which is a file"):
        DirectoryDataset(root, target_size=(8, 8), index_cache=True)


# --- special files -----------------------------------------------------------------------


def test_a_fifo_is_reported_as_not_a_regular_file_without_blocking(tmp_path):
    from gpuaug.data.image import check_image_header

    fifo = tmp_path / "cls" / "pipe.png"
    fifo.parent.mkdir()
    os.mkfifo(fifo)
    with pytest.raises(ImageLoadError, match="not a regular file \\(a FIFO / named pipe\\)"):
        check_image_header(fifo)
    _png(tmp_path / "cls" / "ok.png")
    with pytest.warns(UserWarning, match="Skipped 1"):
        ds = DirectoryDataset(tmp_path, target_size=(8, 8), on_error="skip")
    assert ds.skipped == [(str(fifo), "not a regular file (a FIFO / named pipe)")]


def test_a_loader_describes_itself_without_touching_the_files(image_tree):
    import shutil

    import gpuaug

    loader = gpuaug.flow_from_directory(
        image_tree, target_size=(8, 8), batch_size=3, device="cpu", progress=False
    )
    shutil.rmtree(image_tree)
    assert len(loader) == 3
    text = loader.describe()
    assert "cats" in text and "8" in text


_PARENT = os.getpid()


def _dies_in_a_child(paths, verify, color_mode):
    """A check that kills any pool child it runs in (and works in the parent)."""
    import gpuaug.data.index as index_mod

    if os.getpid() != _PARENT:
        os._exit(1)
    return index_mod._real_check_chunk(paths, verify, color_mode)


def test_header_checks_fall_back_to_threads_when_a_child_dies(tmp_path, monkeypatch):
    import gpuaug.data.index as index_mod

    monkeypatch.setattr(index_mod, "_real_check_chunk", index_mod._check_chunk, raising=False)
    monkeypatch.setattr(index_mod, "_check_chunk", _dies_in_a_child)
    good = _png(tmp_path / "good.png")
    paths = []
    for i in range(2100):
        path = tmp_path / f"f{i}.png"
        if i == 2050:
            path.write_bytes(b"")
        else:
            os.link(good, path)
        paths.append(str(path))
    bad = index_mod.check_files(paths, "header", executor="process", workers=2)
    assert bad == {2050: "the file is empty (0 bytes)"}


def test_an_uncreatable_cache_folder_only_disables_the_automatic_index_cache(
    make_tree, tmp_path, monkeypatch
):
    import gpuaug.data.directory as dataset_mod

    root = make_tree({"a": 3})
    _settle(root)
    (tmp_path / "a-file").write_text("x")
    monkeypatch.setenv("GPUAUG_CACHE_DIR", str(tmp_path / "a-file" / "sub"))  # mkdir fails
    monkeypatch.setattr(dataset_mod, "INDEX_CACHE_MIN_FILES", 1)
    with pytest.warns(UserWarning, match="the index is not cached"):
        ds = DirectoryDataset(root, target_size=(8, 8))
    assert len(ds) == 3 and ds.index_cache_path is None


@pytest.mark.parametrize("damage", ["zip header only", "truncated zip"])
def test_a_corrupt_index_cache_file_is_closed_not_leaked(tmp_path, damage):
    import gc
    import io

    from gpuaug.data.index import load_listing

    good = io.BytesIO()
    np.savez(good, meta=np.zeros(3, np.uint8))
    data = b"PK\x03\x04" + b"x" * 100 if damage == "zip header only" else good.getvalue()[:150]
    path = tmp_path / "listing.npz"
    path.write_bytes(data)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert load_listing(path, str(tmp_path)) is None
        gc.collect()
    assert [str(w.message) for w in caught if w.category is ResourceWarning] == []
