"""``flow_from_shards``: WebDataset-layout tar shards (written by ``webdataset``'s own
``TarWriter``) read by index: counts, every sample once per epoch, resume, cached index, errors
naming the shard and member, and ``gpuaug shard``."""

from __future__ import annotations

import io
import json
import tarfile
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import textured_image, write_tree
from PIL import Image

import gpuaug
from gpuaug.cli import main as cli
from gpuaug.data.shards import ShardDataset, expand_urls, sample_key

wds = pytest.importorskip("webdataset")

N_SHARDS, PER_SHARD = 3, 5
N = N_SHARDS * PER_SHARD


def png(rng: np.random.Generator) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(textured_image(rng, 12, 14)).save(buf, format="PNG")
    return buf.getvalue()


def write(folder: Path, label: str = "cls", labels=lambda i: i) -> str:
    """N_SHARDS shards of PER_SHARD samples; sample i's label is ``labels(i)`` (its id)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for s in range(N_SHARDS):
        with wds.TarWriter(str(folder / f"part-{s:03d}.tar")) as sink:
            for j in range(PER_SHARD):
                i = s * PER_SHARD + j
                sample = {"__key__": f"s{i:04d}", "png": png(rng)}
                if label == "cls":
                    sample["cls"] = labels(i)
                else:
                    sample["json"] = {"category": labels(i)}
                sink.write(sample)
    return str(folder / f"part-{{000..{N_SHARDS - 1:03d}}}.tar")


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> str:
    return write(tmp_path_factory.mktemp("shards"))


def make(urls, tmp_path, **kwargs) -> gpuaug.GPULoader:
    options = dict(
        target_size=(8, 8), batch_size=4, class_mode="sparse", seed=0, device="cpu",
        num_workers=0, cache_dir=tmp_path / "cache", progress=False,
    )  # fmt: skip
    options.update(kwargs)
    return gpuaug.flow_from_shards(urls, **options)


def ids(loader: gpuaug.GPULoader) -> list[int]:
    return [i for _, y in loader for i in y.tolist()]


def test_brace_ranges_expand_in_order():
    assert expand_urls("a-{00..02}.tar") == ["a-00.tar", "a-01.tar", "a-02.tar"]


def test_the_key_is_the_path_up_to_the_first_dot_of_the_file_name():
    assert sample_key("x/y.z/0001.seg.png") == ("x/y.z/0001", "seg.png")


def test_the_index_counts_every_sample_and_class(shards, tmp_path):
    loader = make(shards, tmp_path)
    assert len(loader.dataset) == N
    assert len(loader) == 4  # ceil(15 / 4)
    assert loader.dataset.index.per_shard.tolist() == [PER_SHARD] * N_SHARDS
    assert loader.dataset.num_classes == N


def test_describe_answers_for_shards(shards, tmp_path):
    text = make(shards, tmp_path).describe()
    assert f"Found {N} images belonging to {N} classes" in text


def test_every_sample_once_per_epoch_in_a_new_order(shards, tmp_path):
    loader = make(shards, tmp_path)
    first, second = ids(loader), ids(loader)
    assert sorted(first) == sorted(second) == list(range(N))
    assert first != second


def test_every_sample_once_with_two_workers(shards, tmp_path):
    assert sorted(ids(make(shards, tmp_path, num_workers=2))) == list(range(N))


def test_the_order_is_a_function_of_the_seed(shards, tmp_path):
    assert ids(make(shards, tmp_path)) == ids(make(shards, tmp_path))
    assert ids(make(shards, tmp_path)) != ids(make(shards, tmp_path, seed=1))


def test_images_are_the_shard_members_decoded(shards, tmp_path):
    ds = make(shards, tmp_path).dataset
    with tarfile.open(ds.urls[1]) as tar:
        data = tar.extractfile("s0007.png").read()
    want = torch.from_numpy(np.array(Image.open(io.BytesIO(data)).resize((8, 8), 0)))
    assert torch.equal(ds.load(7), want.permute(2, 0, 1))


def test_fsspec_file_urls_read_the_same_samples(shards, tmp_path):
    plain = make(shards, tmp_path).dataset
    url = make("file://" + shards, tmp_path).dataset
    assert torch.equal(plain.load(11), url.load(11))


def test_the_index_is_cached_until_a_shard_changes(tmp_path):
    urls = write(tmp_path / "s")
    assert not make(urls, tmp_path).dataset.index_from_cache
    assert make(urls, tmp_path).dataset.index_from_cache
    shard = tmp_path / "s" / "part-002.tar"
    with tarfile.open(shard, "a") as tar:  # one more sample in the last shard
        for name, data in (("extra.png", png(np.random.default_rng(1))), ("extra.cls", b"3")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    again = make(urls, tmp_path).dataset
    assert not again.index_from_cache
    assert len(again) == N + 1


def test_json_labels_read_the_named_field(tmp_path):
    urls = write(tmp_path / "j", label="json", labels=lambda i: i % 3)
    loader = make(urls, tmp_path, label="json:category")
    assert sorted(loader.dataset.targets) == sorted(i % 3 for i in range(N))


def test_resume_mid_epoch_on_shards(shards, tmp_path):
    full = [x for x, _ in make(shards, tmp_path)]
    loader = make(shards, tmp_path)
    loader.load_state_dict(loader.state_dict() | {"step": 2})
    rest = [x for x, _ in loader]
    assert len(rest) == 2
    assert all(torch.equal(a, b) for a, b in zip(rest, full[2:], strict=True))


def test_a_disk_cache_of_shards_is_reopened(shards, tmp_path):
    first = make(shards, tmp_path, cache="disk")
    again = make(shards, tmp_path, cache="disk")
    assert first.cache.built and not again.cache.built
    assert torch.equal(next(iter(first))[0], next(iter(again))[0])


def test_a_sample_without_its_label_names_shard_and_key(tmp_path):
    with wds.TarWriter(str(tmp_path / "x.tar")) as sink:
        sink.write({"__key__": "k1", "png": png(np.random.default_rng(0))})
    with pytest.raises(ValueError, match=r"x\.tar: sample 'k1' has no 'cls' member"):
        ShardDataset(str(tmp_path / "x.tar"), cache_dir=tmp_path)


def test_a_label_that_is_not_an_int_names_the_member(tmp_path):
    with wds.TarWriter(str(tmp_path / "x.tar")) as sink:
        sink.write({"__key__": "k1", "png": png(np.random.default_rng(0)), "cls": "cat"})
    with pytest.raises(ValueError, match=r"x\.tar:k1\.cls: the label is not a class index"):
        ShardDataset(str(tmp_path / "x.tar"), cache_dir=tmp_path)


def test_a_file_that_is_not_a_tar_is_named(tmp_path):
    (tmp_path / "x.tar").write_bytes(b"not a tar" * 100)
    with pytest.raises(ValueError, match=r"shard '.*x\.tar' is not a tar file"):
        ShardDataset(str(tmp_path / "x.tar"), cache_dir=tmp_path)


def test_a_missing_shard_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"shard '.*nope-1\.tar' does not exist"):
        ShardDataset(str(tmp_path / "nope-{1..2}.tar"), cache_dir=tmp_path)


def test_a_bad_label_rule_is_named(shards, tmp_path):
    with pytest.raises(ValueError, match=r"`label` must be 'cls', 'json' or 'json:<field>'"):
        ShardDataset(shards, label="txt", cache_dir=tmp_path)


def test_a_corrupt_image_is_skipped_naming_shard_and_member(tmp_path):
    with wds.TarWriter(str(tmp_path / "x.tar")) as sink:
        for i in range(3):
            data = png(np.random.default_rng(i))
            sink.write({"__key__": f"k{i}", "png": data[:40] if i == 1 else data, "cls": i})
    loader = make(str(tmp_path / "x.tar"), tmp_path, on_error="skip", shuffle=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        list(loader)
    assert [p for p, _ in loader.last_skipped] == [f"{tmp_path / 'x.tar'}:k1.png"]


def test_the_shard_command_writes_shards_webdataset_and_gpuaug_read(tmp_path):
    root = write_tree(tmp_path / "data", {"cats": 3, "dogs": 4}, (10, 12))
    out = tmp_path / "out"
    assert cli(["shard", str(root), str(out), "--samples-per-shard", "3"]) == 0
    assert sorted(p.name for p in out.glob("*.tar")) == [f"shard-00000{i}.tar" for i in range(3)]
    urls = str(out / "shard-{000000..000002}.tar")
    seen = list(wds.WebDataset(urls, shardshuffle=False).decode())
    assert [int(s["cls"]) for s in seen] == [0, 0, 0, 1, 1, 1, 1]
    classes = json.loads((out / "classes.json").read_text())
    loader = make(urls, tmp_path, classes=classes)
    folder = gpuaug.flow_from_directory(root, target_size=(8, 8), shuffle=False, device="cpu")
    assert loader.dataset.class_to_idx == folder.class_indices
    assert torch.equal(loader.dataset.load(4), folder.dataset.load(4))


def test_shards_take_a_per_rank_cache(shards, tmp_path):
    dataset = ShardDataset(shards, target_size=(8, 8), class_mode="sparse", cache_dir=tmp_path)
    loaders = [
        gpuaug.GPULoader(
            dataset,
            config=gpuaug.LoaderConfig(
                batch_size=4,
                seed=0,
                num_workers=0,
                device="cpu",
                cache="host",
                progress=False,
                cache_per_rank=True,
                num_replicas=2,
                rank=r,
            ),
        )  # fmt: skip
        for r in range(2)
    ]
    assert [len(lo.cache.images) for lo in loaders] == [8, 8]  # 15 samples: one repeated
    assert sorted(set(ids(loaders[0])) | set(ids(loaders[1]))) == list(range(N))


def test_a_non_local_fsspec_filesystem_reads_the_same_samples(shards, tmp_path):
    import fsspec

    memory = fsspec.filesystem("memory")
    for path in expand_urls(shards):
        memory.pipe(f"/remote/{Path(path).name}", Path(path).read_bytes())
    remote = make("memory://remote/part-{000..002}.tar", tmp_path).dataset
    local = make(shards, tmp_path).dataset
    assert remote.targets == local.targets
    assert torch.equal(remote.load(13), local.load(13))
