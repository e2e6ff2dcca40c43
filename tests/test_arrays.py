"""``flow(x, y)``: in-memory arrays (gpuaug.data.arrays) against Keras' NumpyArrayIterator."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import gpuaug
from gpuaug.data.arrays import ArrayDataset, as_image_tensor


def _data(n: int = 20, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (n, 6, 5, 3), dtype=np.uint8)
    y = np.arange(n) % 4
    return x, y


def _gen(**kwargs) -> gpuaug.ImageDataGenerator:
    return gpuaug.ImageDataGenerator(device="cpu", **kwargs)


def test_numpy_is_read_channels_last_and_torch_channels_first():
    x, _ = _data()
    from_numpy = as_image_tensor(x)
    from_torch = as_image_tensor(torch.from_numpy(x).permute(0, 3, 1, 2))
    assert from_numpy.shape == (20, 3, 6, 5)
    assert torch.equal(from_numpy, from_torch)
    assert from_numpy.dtype == torch.uint8
    assert as_image_tensor(x.astype(np.float64)).dtype == torch.float32


def test_flow_yields_images_labels_and_weights_on_the_device_cache():
    x, y = _data()
    w = np.linspace(0.1, 2.0, 20)
    it = _gen().flow(x, y, batch_size=8, shuffle=False, sample_weight=w)
    assert it.cache is not None and it.cache.kind == "device"
    xb, yb, wb = next(iter(it))
    assert xb.shape == (8, 3, 6, 5) and xb.dtype == torch.float32
    np.testing.assert_array_equal(xb.permute(0, 2, 3, 1).numpy(), x[:8].astype(np.float32))
    np.testing.assert_array_equal(yb.numpy(), y[:8])
    np.testing.assert_allclose(wb.numpy(), w[:8].astype(np.float32))


def test_flow_without_labels_yields_images_alone():
    x, _ = _data()
    batch = next(iter(_gen().flow(x, batch_size=4)))
    assert isinstance(batch, torch.Tensor) and batch.shape == (4, 3, 6, 5)


def test_labels_of_any_shape_are_gathered_with_their_images():
    x, _ = _data()
    y = np.arange(20 * 2 * 3, dtype=np.float64).reshape(20, 2, 3)
    seen = torch.cat([yb for _, yb in _gen().flow(x, y, batch_size=7, seed=3)])
    assert seen.shape == (20, 2, 3) and seen.dtype == torch.float64  # the dtype of y, as Keras
    assert sorted(seen[:, 0, 0].tolist()) == sorted(y[:, 0, 0].tolist())


def test_describe_says_the_arrays_are_used_as_given():
    x, y = _data()
    text = _gen(rotation_range=10).flow(x, y, batch_size=8).describe()
    assert "images: 6x5, array (3 channels), as given (nothing is resized)" in text
    assert "resized with" not in text


def test_every_sample_once_per_epoch_with_its_own_label():
    x, y = _data()
    x = np.broadcast_to(np.arange(20, dtype=np.uint8)[:, None, None, None], (20, 6, 5, 3)).copy()
    rows = [(xb[:, 0, 0, 0], yb) for xb, yb in _gen().flow(x, y, batch_size=6, seed=1)]
    ids = torch.cat([r[0] for r in rows]).long()
    labels = torch.cat([r[1] for r in rows])
    assert sorted(ids.tolist()) == list(range(20))
    assert torch.equal(labels, torch.as_tensor(y)[ids])


@pytest.mark.keras
@pytest.mark.parametrize("subset", ["training", "validation"])
def test_subset_split_matches_keras(subset):
    from keras.src.legacy.preprocessing.image import ImageDataGenerator as KerasIDG

    x, y = _data(23)
    w = np.arange(23, dtype=np.float64)
    kit = KerasIDG(validation_split=0.3).flow(
        x, y, batch_size=64, shuffle=False, sample_weight=w, subset=subset
    )
    kx, ky, kw = kit[0]
    gx, gy, gw = next(iter(_gen(validation_split=0.3).flow(x, y, 64, False, w, subset=subset)))
    np.testing.assert_array_equal(gx.permute(0, 2, 3, 1).numpy(), kx)
    np.testing.assert_array_equal(gy.numpy(), ky)
    # Keras does not split `sample_weight` (a bug): its training batch pairs sample i of the
    # subset with weight i of the whole array. Ours keeps each weight with its sample.
    split = int(23 * 0.3)
    part = w[:split] if subset == "validation" else w[split:]
    np.testing.assert_array_equal(gw.numpy(), part)
    assert np.array_equal(kw, part) == (subset == "validation")
    assert len(_gen(validation_split=0.3).flow(x, y, subset=subset).dataset) == kit.n


def test_subsets_with_different_classes_raise_as_keras():
    x, _ = _data()
    y = np.sort(np.arange(20) % 4)  # sorted by label: validation holds class 0 only
    with pytest.raises(ValueError, match="different classes"):
        _gen(validation_split=0.25).flow(x, y, subset="training")
    it = _gen(validation_split=0.25).flow(x, y, subset="training", ignore_class_split=True)
    assert len(it.dataset) == 15


def test_x_and_y_of_different_lengths_raise():
    x, y = _data()
    with pytest.raises(ValueError, match=r"`x` \(images\) and `y` \(labels\) must have the same"):
        ArrayDataset(x, y[:-1])
    with pytest.raises(ValueError, match="`sample_weight` must have the same length"):
        ArrayDataset(x, y, np.ones(3))


def test_a_3d_array_raises_with_a_hint():
    x, _ = _data()
    with pytest.raises(ValueError, match=r"4-D array of images \(N, H, W, C\).*x\[\.\.\., None\]"):
        ArrayDataset(x[..., 0])


def test_non_numeric_arrays_raise_type_errors():
    x, _ = _data()
    with pytest.raises(TypeError, match="`x` must hold numbers"):
        ArrayDataset(np.full((2, 3, 3, 3), "a"))
    with pytest.raises(TypeError, match="`y` must hold numbers.*np.unique"):
        ArrayDataset(x, np.array(["cat"] * 20))


def test_keras_x_misc_pair_is_refused():
    x, _ = _data()
    with pytest.raises(TypeError, match=r"\(x, x_misc\)"):
        ArrayDataset((x, np.zeros(20)))


def test_channels_first_numpy_with_data_format():
    x, y = _data()
    x_first = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
    g = gpuaug.ImageDataGenerator(device="cpu", data_format="channels_first")
    xb, _ = next(iter(g.flow(x_first, y, batch_size=4, shuffle=False)))
    np.testing.assert_array_equal(xb.numpy(), x_first[:4].astype(np.float32))


def test_keras_dtype_sets_the_batch_dtype():
    x, y = _data()
    xb, _ = next(iter(_gen(dtype="float16").flow(x, y, batch_size=4)))
    assert xb.dtype == torch.float16


def test_arrays_without_a_device_cache_still_yield_every_sample():
    x, y = _data()
    it = _gen().flow(x, y, batch_size=8, seed=0, cache=None)
    assert it.cache is None
    assert sorted(torch.cat([yb for _, yb in it]).tolist()) == sorted(y.tolist())


@pytest.mark.cuda
def test_flow_places_the_array_on_the_gpu_once():
    x, y = _data(64)
    it = gpuaug.ImageDataGenerator(device="cuda").flow(x, y, batch_size=16, sample_weight=y * 1.0)
    assert it.cache.kind == "device" and it.cache.images.device.type == "cuda"
    ptr = it.cache.images.data_ptr()
    for _ in range(2):
        for xb, yb, wb in it:
            assert xb.is_cuda and yb.is_cuda and wb.is_cuda
    assert it.cache.images.data_ptr() == ptr


def test_large_or_negative_integer_labels_are_not_taken_for_class_indices():
    x, _ = _data()
    ids = np.arange(20, dtype=np.int64) * 10**9
    ds = ArrayDataset(x, ids)
    assert ds.classes == [] and ds.counts() == {}
    assert ArrayDataset(x, -np.arange(20)).classes == []
    assert ArrayDataset(x, np.arange(20) % 4).classes == ["0", "1", "2", "3"]


@pytest.mark.parametrize("dtype", [np.uint16, np.uint32, np.uint64])
def test_unsigned_labels_are_yielded_with_their_values(dtype):
    x, y = _data(8)
    it = _gen().flow(x, (y * 1000).astype(dtype), batch_size=8, shuffle=False)
    _, yb = next(iter(it))
    assert yb.tolist() == (y * 1000).tolist() and not yb.dtype.is_floating_point


def test_unsigned_labels_are_class_indices_as_signed_ones():
    x, y = _data(8)
    assert ArrayDataset(x, y.astype(np.uint16)).classes == ["0", "1", "2", "3"]


def test_uint64_labels_beyond_int64_are_refused_naming_y():
    x, _ = _data(2)
    with pytest.raises(ValueError, match=r"`y` holds uint64 values above"):
        ArrayDataset(x, np.array([1, 2**64 - 1], dtype=np.uint64))


def test_unsigned_labels_split_into_subsets_as_keras():
    x, y = _data(8)
    ds = ArrayDataset(x, y.astype(np.uint32), validation_split=0.5, subset="validation")
    assert ds.y.tolist() == y[:4].tolist()


def test_flow_of_no_image_names_x():
    with pytest.raises(ValueError, match=r"`x` must hold at least one image; got shape \(0, 6"):
        _gen().flow(np.zeros((0, 6, 5, 3), np.uint8), np.zeros(0))


@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
def test_a_uint8_or_float32_array_is_not_copied(dtype):
    x, _ = _data(8)
    x = x.astype(dtype)
    ds = ArrayDataset(x)
    assert ds.images.data_ptr() == x.ctypes.data  # a view: the host holds the array once
    assert torch.equal(
        ds.images, torch.from_numpy(x).permute(0, 3, 1, 2).float().to(ds.images.dtype)
    )


def test_a_float64_array_is_copied_once_to_float32():
    x, _ = _data(8)
    ds = ArrayDataset(x.astype(np.float64))
    assert ds.images.untyped_storage().nbytes() == x.size * 4


def test_a_channels_last_view_is_placed_contiguous_slice_by_slice(monkeypatch):
    from gpuaug.data import arrays

    x, _ = _data(8)
    view = ArrayDataset(x).images
    monkeypatch.setattr(arrays, "_PLACE_BYTES", view[0].numel() * 3)  # 3 images a slice
    placed = arrays._place(view, torch.device("meta"))
    assert placed.is_contiguous() and placed.shape == view.shape and placed.device.type == "meta"


@pytest.mark.cuda
def test_a_channels_last_array_lands_contiguous_on_the_gpu():
    x, y = _data(64)
    it = gpuaug.ImageDataGenerator(device="cuda").flow(x, y, batch_size=16)
    assert it.cache.images.is_contiguous()
    assert torch.equal(it.cache.images.cpu(), torch.from_numpy(x).permute(0, 3, 1, 2))
