"""What a newcomer meets first: a misspelt keyword, `device="cuda"` without a GPU, help()."""

from __future__ import annotations

import inspect
import re

import pytest
import torch

import gpuaug
from gpuaug.loader.config import resolve_device
from gpuaug.loader.factories import flow_from_directory


def test_misspelt_keyword_suggests_the_closest_argument(image_tree):
    with pytest.raises(TypeError, match=r"'batchsize'; did you mean 'batch_size'\?"):
        gpuaug.flow_from_directory(image_tree, batchsize=8)


def test_misspelt_keyword_lists_every_argument(image_tree):
    with pytest.raises(TypeError) as caught:
        gpuaug.flow_from_directory(image_tree, colour_mode="rgb")
    listed = str(caught.value).split("Its arguments: ")[1].rstrip(".").split(", ")
    assert listed == list(inspect.signature(flow_from_directory).parameters)


def test_augmentation_keyword_points_at_augment(image_tree):
    with pytest.raises(TypeError, match=r"augment=gpuaug.AugmentConfig.from_keras\(rotation_"):
        gpuaug.flow_from_directory(image_tree, rotation_range=40)


def test_keyword_check_keeps_the_real_signature():
    names = list(inspect.signature(gpuaug.flow_from_directory).parameters)
    assert names[:3] == ["directory", "augment", "target_size"]
    assert "batch_size" in names and "kwargs" not in names


def test_every_argument_is_documented_by_name():
    doc = inspect.getdoc(gpuaug.flow_from_directory)
    args = doc.split("Args:")[1].split("Returns:")[0]
    documented = re.findall(r"^    (\w+):", args, flags=re.M)
    assert documented == list(inspect.signature(gpuaug.flow_from_directory).parameters)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error raised without CUDA")
def test_cuda_device_without_cuda_names_the_argument_and_the_fix(image_tree):
    with pytest.raises(ValueError, match=r"`device` is 'cuda' but torch finds no CUDA device"):
        gpuaug.flow_from_directory(image_tree, device="cuda", num_workers=0)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error raised without CUDA")
def test_cuda_device_error_says_to_pass_cpu_or_leave_it_unset():
    with pytest.raises(ValueError, match=r'pass device="cpu", or leave `device` unset'):
        resolve_device("cuda:0")


@pytest.mark.skipif(torch.cuda.is_available(), reason="the default is the CPU without CUDA")
def test_unset_device_is_the_cpu_without_cuda():
    assert resolve_device(None) == torch.device("cpu")


def test_cpu_device_is_kept():
    assert resolve_device("cpu") == torch.device("cpu")


def test_describe_answers_in_plain_words_without_seed_mixing(image_tree):
    loader = gpuaug.flow_from_directory(
        image_tree, "chollet_cats_dogs", target_size=(16, 16), num_workers=0, seed=0
    )
    text = loader.describe()
    assert "nothing is stored: 8 augmented samples per epoch, 240 different ones" in text
    assert "mix_seed" not in text and "0x" not in text


def test_describe_verbose_keeps_the_seed_mixing(image_tree):
    loader = gpuaug.flow_from_directory(
        image_tree, "chollet_cats_dogs", target_size=(16, 16), num_workers=0, seed=0
    )
    assert "mix_seed(seed, 0x5045524d, p)" in loader.describe(verbose=True)


def test_help_shows_one_argument_per_line():
    import pydoc

    text = pydoc.render_doc(gpuaug.flow_from_directory, renderer=pydoc.plaintext)
    signature = text.split("flow_from_directory(", 1)[1].split(") -> GPULoader", 1)[0]
    lines = signature.strip("\n").splitlines()
    assert len(lines) == len(inspect.signature(flow_from_directory).parameters)
    assert "    batch_size: int = 32," in lines
    assert max(len(line) for line in text.splitlines()) <= 100


def test_a_short_signature_stays_on_one_line():
    from gpuaug.loader.factories import ReadableSignature

    def f(a: int, b: str = "x") -> None: ...

    assert str(ReadableSignature.from_callable(f)) == str(inspect.signature(f))
    assert "\n" not in str(ReadableSignature.from_callable(f))


def test_keras_generator_typo_suggests_the_keras_argument():
    with pytest.raises(TypeError, match=r"did you mean 'rotation_range'"):
        gpuaug.ImageDataGenerator(rotation_rang=40)


def test_keras_flow_typo_suggests_the_flow_argument(image_tree):
    generator = gpuaug.ImageDataGenerator(rotation_range=10, device="cpu")
    with pytest.raises(TypeError, match=r"did you mean 'batch_size'\?"):
        generator.flow_from_directory(image_tree, batchsize=4)
