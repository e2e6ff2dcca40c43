"""First use of a large folder: ``verify="auto"`` checks headers up front only below
``VERIFY_AUTO_MAX_FILES`` files; above, a bad file is still named, when it is first loaded."""

from __future__ import annotations

import pytest

import gpuaug
from gpuaug.data import directory
from gpuaug.data.image import ImageLoadError


@pytest.fixture
def bad_tree(make_tree):
    root = make_tree({"a": 3, "b": 2}, size=(10, 10))
    (root / "a" / "img_001.png").write_bytes(b"not an image")
    return root


def test_a_small_folder_is_header_checked_up_front(bad_tree):
    with pytest.raises(ImageLoadError, match=r"img_001\.png"):
        gpuaug.DirectoryDataset(bad_tree, target_size=(8, 8))


def test_a_large_folder_leaves_the_check_to_load_time(bad_tree, monkeypatch):
    monkeypatch.setattr(directory, "VERIFY_AUTO_MAX_FILES", 4)
    ds = gpuaug.DirectoryDataset(bad_tree, target_size=(8, 8))
    assert ds.verified == "none" and len(ds) == 5


def test_a_large_folder_names_a_bad_file_when_it_is_loaded(bad_tree, monkeypatch):
    monkeypatch.setattr(directory, "VERIFY_AUTO_MAX_FILES", 4)
    loader = gpuaug.flow_from_directory(
        bad_tree, target_size=(8, 8), batch_size=5, device="cpu", num_workers=0, shuffle=False
    )
    with pytest.raises(ImageLoadError, match=r"img_001\.png"):
        next(iter(loader))


def test_an_explicit_header_check_runs_whatever_the_size(bad_tree, monkeypatch):
    monkeypatch.setattr(directory, "VERIFY_AUTO_MAX_FILES", 4)
    with pytest.raises(ImageLoadError, match=r"img_001\.png"):
        gpuaug.DirectoryDataset(bad_tree, target_size=(8, 8), verify="header")
