"""AugmentConfig: Keras' names and defaults, validation, Keras' overrides, YAML, presets."""

from __future__ import annotations

import dataclasses
import inspect
import re
import warnings
from pathlib import Path

import pytest

from gpuaug.augment.config import AugmentConfig, load_config, preset_dir, preset_names

KERAS_ONLY = {"data_format", "interpolation_order", "dtype"}


@pytest.fixture(scope="module")
def keras_signature() -> inspect.Signature:
    from keras.src.legacy.preprocessing.image import ImageDataGenerator

    return inspect.signature(ImageDataGenerator.__init__)


# ----------------------------------------------------------------------------- Keras names


@pytest.mark.keras
def test_every_keras_argument_is_a_field_or_a_translated_keras_only_argument(keras_signature):
    keras_names = set(keras_signature.parameters) - {"self"}
    fields = {f.name for f in dataclasses.fields(AugmentConfig)}
    assert keras_names - KERAS_ONLY <= fields
    assert fields - keras_names == {"interpolation", "kornia"}  # ours: not Keras settings


@pytest.mark.keras
def test_defaults_are_keras_defaults(keras_signature):
    config = AugmentConfig()
    for name, param in keras_signature.parameters.items():
        if name == "self" or name in KERAS_ONLY:
            continue
        assert getattr(config, name) == param.default, name


@pytest.mark.keras
def test_from_keras_accepts_a_full_keras_call_verbatim(keras_signature):
    kwargs = {n: p.default for n, p in keras_signature.parameters.items() if n != "self"}
    assert AugmentConfig.from_keras(**kwargs) == AugmentConfig()


def test_from_keras_takes_the_book_call():
    config = AugmentConfig.from_keras(
        rescale=1.0 / 255,
        rotation_range=40,
        width_shift_range=0.2,
        height_shift_range=0.2,
        shear_range=0.2,
        zoom_range=0.2,
        horizontal_flip=True,
        fill_mode="nearest",
    )
    assert config == load_config("chollet_cats_dogs")


@pytest.mark.parametrize(("order", "interpolation"), [(1, "bilinear"), (0, "nearest")])
def test_from_keras_maps_interpolation_order(order, interpolation):
    assert AugmentConfig.from_keras(interpolation_order=order).interpolation == interpolation


def test_from_keras_rejects_spline_orders_above_one():
    with pytest.raises(ValueError, match="`interpolation_order` must be 1 .* or 0"):
        AugmentConfig.from_keras(interpolation_order=3)


@pytest.mark.parametrize("data_format", [None, "channels_last", "channels_first"])
def test_from_keras_accepts_and_ignores_data_format(data_format):
    assert AugmentConfig.from_keras(data_format=data_format, dtype="float32") == AugmentConfig()


def test_from_keras_rejects_an_unknown_data_format():
    with pytest.raises(ValueError, match="`data_format` must be"):
        AugmentConfig.from_keras(data_format="NHWC")


def test_from_keras_rejects_an_argument_keras_does_not_take():
    with pytest.raises(TypeError, match="unexpected keyword arguments \\['rotation'\\]"):
        AugmentConfig.from_keras(rotation=40)


# ----------------------------------------------------------------------------- validation

INVALID = [
    ({"rotation_range": -10}, "`rotation_range` must be a number of degrees"),
    ({"width_shift_range": -0.2}, "`width_shift_range` must be a float >= 0"),
    ({"height_shift_range": [0.1, -0.1]}, "`height_shift_range` must be .* got the item -0.1"),
    ({"width_shift_range": []}, "`width_shift_range` must be .* got an empty list"),
    ({"shear_range": -1.0}, "`shear_range` must be a number of degrees"),
    ({"shear_range": 90}, "`shear_range` must be in \\[0, 90\\) degrees"),
    ({"zoom_range": -0.2}, "`zoom_range` must be a float z in \\[0, 1\\)"),
    ({"zoom_range": 1.0}, "`zoom_range` must be a float z in \\[0, 1\\)"),
    ({"zoom_range": [0.0, 1.2]}, "`zoom_range` must be .* 0 < lo <= hi; got \\[0.0, 1.2\\]"),
    ({"zoom_range": [1.2, 0.8]}, "`zoom_range` must be .* 0 < lo <= hi"),
    ({"zoom_range": [0.5, 1.0, 1.5]}, "`zoom_range` must be a pair of numbers"),
    ({"channel_shift_range": -5}, "`channel_shift_range` must be a non-negative number"),
    ({"fill_mode": "mirror"}, "`fill_mode` must be one of \\['nearest', 'constant', 'reflect'"),
    ({"brightness_range": 0.5}, "`brightness_range` must be a pair of numbers"),
    ({"brightness_range": [0.5]}, "`brightness_range` must be a pair of numbers"),
    ({"brightness_range": [1.5, 0.5]}, "`brightness_range` must be .* 0 <= lo <= hi"),
    ({"brightness_range": [-0.5, 1.0]}, "`brightness_range` must be .* 0 <= lo <= hi"),
    ({"validation_split": 1.0}, "`validation_split` must be a number in \\[0, 1\\)"),
    ({"validation_split": -0.1}, "`validation_split` must be a number in \\[0, 1\\)"),
    ({"interpolation": "bicubic"}, "`interpolation` must be one of \\['bilinear', 'nearest'\\]"),
    ({"zca_epsilon": -1e-6}, "`zca_epsilon` must be a non-negative number"),
]


@pytest.mark.parametrize(("kwargs", "match"), INVALID, ids=[next(iter(k)) for k, _ in INVALID])
def test_invalid_values_raise_value_error_naming_the_field(kwargs, match):
    with pytest.raises(ValueError, match=match):
        AugmentConfig(**kwargs)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"horizontal_flip": "yes"},
        {"width_shift_range": True},
        {"width_shift_range": "0.2"},
        {"rotation_range": "40"},
        {"zoom_range": "0.2"},
        {"cval": None},
        {"rescale": "1/255"},
        {"preprocessing_function": 3},
    ],
    ids=lambda k: next(iter(k)),
)
def test_values_of_the_wrong_type_raise_type_error(kwargs):
    with pytest.raises(TypeError, match=f"`{next(iter(kwargs))}` must be"):
        AugmentConfig(**kwargs)


def test_config_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        AugmentConfig().rotation_range = 10  # type: ignore[misc]


def test_list_settings_are_stored_as_tuples():
    config = AugmentConfig(width_shift_range=[2, 4], zoom_range=[0.5, 1.5])
    assert config.width_shift_range == (2, 4)
    assert config.zoom_range == (0.5, 1.5)
    assert hash(config) == hash(AugmentConfig(width_shift_range=(2, 4), zoom_range=(0.5, 1.5)))


@pytest.mark.parametrize(
    ("zoom", "bounds"), [(0.0, (1, 1)), (0.25, (0.75, 1.25)), ((0.5, 2), (0.5, 2))]
)
def test_zoom_bounds_follow_keras(zoom, bounds):
    assert AugmentConfig(zoom_range=zoom).zoom_bounds == bounds


# ----------------------------------------------------------------------------- Keras overrides


def test_zca_whitening_forces_featurewise_center_and_drops_featurewise_std():
    with pytest.warns(UserWarning, match="overrides") as record:
        config = AugmentConfig(zca_whitening=True, featurewise_std_normalization=True)
    assert config.featurewise_center is True
    assert config.featurewise_std_normalization is False
    assert len(record) == 2


def test_featurewise_std_forces_featurewise_center():
    with pytest.warns(UserWarning, match="`featurewise_std_normalization` overrides"):
        config = AugmentConfig(featurewise_std_normalization=True)
    assert config.featurewise_center is True


def test_samplewise_std_forces_samplewise_center():
    with pytest.warns(UserWarning, match="`samplewise_std_normalization` overrides"):
        config = AugmentConfig(samplewise_std_normalization=True)
    assert config.samplewise_center is True


@pytest.mark.keras
@pytest.mark.parametrize(
    "kwargs",
    [
        {"zca_whitening": True, "featurewise_std_normalization": True},
        {"featurewise_std_normalization": True},
        {"samplewise_std_normalization": True},
    ],
)
def test_overrides_match_keras(kwargs):
    from keras.src.legacy.preprocessing.image import ImageDataGenerator

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        keras_gen = ImageDataGenerator(**kwargs)
        config = AugmentConfig.from_keras(**kwargs)
    for name in (
        "featurewise_center",
        "featurewise_std_normalization",
        "samplewise_center",
        "samplewise_std_normalization",
        "zca_whitening",
    ):
        assert getattr(config, name) == getattr(keras_gen, name), name


def test_an_effective_config_reloads_without_warning():
    with pytest.warns(UserWarning):
        config = AugmentConfig(zca_whitening=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert AugmentConfig.from_yaml(config.to_yaml()) == config


# ----------------------------------------------------------------------------- YAML


def test_yaml_round_trip_keeps_every_field():
    config = AugmentConfig(
        rotation_range=15,
        width_shift_range=[0.1, 0.2],
        height_shift_range=5,
        brightness_range=(0.8, 1.2),
        zoom_range=(0.9, 1.3),
        fill_mode="wrap",
        cval=12.5,
        vertical_flip=True,
        rescale=1 / 255,
        validation_split=0.2,
        interpolation="nearest",
    )
    again = AugmentConfig.from_yaml(config.to_yaml())
    assert again == config
    assert isinstance(again.height_shift_range, int)  # an int shift means whole pixels


def test_yaml_round_trip_through_a_file(tmp_path: Path):
    config = AugmentConfig(rotation_range=10, horizontal_flip=True)
    path = tmp_path / "aug.yaml"
    config.to_yaml(path)
    assert AugmentConfig.from_yaml(path) == config
    assert AugmentConfig.from_yaml(str(path)) == config


def test_to_yaml_refuses_a_preprocessing_function():
    config = AugmentConfig(preprocessing_function=lambda x: x)
    with pytest.raises(ValueError, match="`preprocessing_function` cannot be saved to YAML"):
        config.to_yaml()


def test_from_yaml_of_an_empty_document_is_the_default():
    assert AugmentConfig.from_yaml("# nothing\n") == AugmentConfig()


def test_from_yaml_rejects_unknown_keys_naming_them():
    with pytest.raises(ValueError, match="unknown augmentation settings \\['rotation'\\]"):
        AugmentConfig.from_yaml("rotation: 40\n")


def test_from_yaml_rejects_a_list_document():
    with pytest.raises(ValueError, match="must hold a mapping"):
        AugmentConfig.from_yaml("- 1\n- 2\n")


def test_from_yaml_names_the_file_of_a_bad_value(tmp_path: Path):
    path = tmp_path / "bad.yaml"
    path.write_text("zoom_range: -1\n")
    with pytest.raises(ValueError, match="bad.yaml: `zoom_range` must be"):
        AugmentConfig.from_yaml(path)


def test_from_yaml_of_a_missing_file_raises_file_not_found(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="missing.yaml"):
        AugmentConfig.from_yaml(tmp_path / "missing.yaml")


def test_to_dict_from_dict_round_trip_keeps_a_callable():
    def fn(x):
        return x

    config = AugmentConfig(preprocessing_function=fn, zoom_range=(0.5, 1.0))
    assert AugmentConfig.from_dict(config.to_dict()) == config


# ----------------------------------------------------------------------------- describe


def test_describe_of_the_default_says_no_augmentation():
    assert AugmentConfig().describe() == "no augmentation"


def test_describe_has_one_line_per_active_setting():
    text = AugmentConfig(rotation_range=40, width_shift_range=3, rescale=1 / 255).describe()
    assert text.splitlines() == [
        "rotation: uniform in [-40, 40] deg",
        "horizontal shift: whole pixels 0..2, random sign",
        "fill: nearest; interpolation: bilinear",
        "rescale: x 1/255",
    ]


# ----------------------------------------------------------------------------- presets


def test_presets_are_found_in_the_repo_configs_folder():
    assert preset_dir() == Path(__file__).resolve().parent.parent / "configs"
    assert {"chollet_cats_dogs", "none", "strong"} <= set(preset_names())


def test_chollet_preset_has_the_book_settings():
    config = load_config("chollet_cats_dogs")
    assert config.rotation_range == 40
    assert config.width_shift_range == config.height_shift_range == 0.2
    assert config.shear_range == 0.2
    assert config.zoom_bounds == pytest.approx((0.8, 1.2))
    assert config.horizontal_flip and not config.vertical_flip
    assert config.fill_mode == "nearest"
    assert config.rescale == pytest.approx(1 / 255)


def test_none_preset_only_rescales():
    config = load_config("none")
    assert config == AugmentConfig(rescale=config.rescale)
    assert config.rescale == pytest.approx(1 / 255)
    assert not config.has_geometry and not config.has_flips


def test_strong_preset_is_stronger_than_the_book():
    strong, book = load_config("strong"), load_config("chollet_cats_dogs")
    assert strong.shear_range > book.shear_range
    assert strong.brightness_range is not None and strong.channel_shift_range > 0
    assert strong.zoom_bounds[1] - strong.zoom_bounds[0] > book.zoom_bounds[1] - book.zoom_bounds[0]


def test_load_config_reads_a_yaml_path(tmp_path: Path):
    path = tmp_path / "mine.yaml"
    path.write_text("rotation_range: 7\n")
    assert load_config(path) == AugmentConfig(rotation_range=7)
    assert load_config(str(path)) == AugmentConfig(rotation_range=7)


def test_load_config_passes_a_config_through():
    config = AugmentConfig(vertical_flip=True)
    assert load_config(config) is config


def test_load_config_of_an_unknown_preset_lists_the_presets():
    with pytest.raises(ValueError, match="unknown augmentation preset 'chollet'.*'none'"):
        load_config("chollet")


# ----------------------------------------------------------------------------- float32 bounds

OUT_OF_RANGE = [
    ({"brightness_range": [0, 1e39]}, "`brightness_range` must be .* <= 1e\\+12"),
    ({"rescale": 1e39}, "`rescale` must be None or a finite number in"),
    ({"rescale": float("nan")}, "`rescale` must be None or a finite number in"),
    ({"rotation_range": 1e39}, "`rotation_range` must be a number of degrees <= 360"),
    ({"rotation_range": 361}, "`rotation_range` must be a number of degrees <= 360"),
    ({"width_shift_range": 10**30}, "`width_shift_range` must be .* at most 16777216 pixels"),
    ({"height_shift_range": [0.1, 1e20]}, "`height_shift_range` must be .* got the item 1e\\+20"),
    ({"cval": 1e300}, "`cval` must be a finite number in \\[-1e\\+12, 1e\\+12\\]"),
    ({"cval": float("inf")}, "`cval` must be a finite number in"),
    ({"channel_shift_range": 1e39}, "`channel_shift_range` must be a non-negative number <= "),
    ({"zoom_range": [1e-30, 1.0]}, "`zoom_range` must be a pair .* 1e-06 <= lo <= hi <= 1e\\+06"),
    ({"zoom_range": [1.0, 1e39]}, "`zoom_range` must be a pair .* 1e-06 <= lo <= hi <= 1e\\+06"),
    ({"zca_epsilon": 1e300}, "`zca_epsilon` must be a non-negative number <= 1e\\+12"),
]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    OUT_OF_RANGE,
    ids=[f"{k}={v}" for kw, _ in OUT_OF_RANGE for k, v in kw.items()],
)
def test_values_float32_cannot_express_are_rejected_naming_the_field(kwargs, match):
    with pytest.raises(ValueError, match=match):
        AugmentConfig(**kwargs)


def test_the_largest_accepted_values_augment_to_finite_pixels():
    import torch

    from gpuaug.augment.module import GPUAugment

    config = AugmentConfig(
        rotation_range=360,
        width_shift_range=2**24,
        height_shift_range=[0.5, 2.0],
        brightness_range=(0.0, 1e12),
        channel_shift_range=1e12,
        zoom_range=(1e-6, 1e6),
        fill_mode="constant",
        cval=1e12,
        rescale=1e12,
        samplewise_center=True,
        samplewise_std_normalization=True,
    )
    x = torch.randint(0, 256, (4, 3, 16, 16), dtype=torch.uint8)
    out = GPUAugment(config)(x, generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(out).all()


# ----------------------------------------------------------------------------- numpy numbers


def test_numpy_scalars_are_accepted_and_stored_as_python_numbers():
    import numpy as np

    config = AugmentConfig(
        rotation_range=np.float32(40),
        width_shift_range=np.int64(3),
        height_shift_range=np.float64(0.2),
        shear_range=np.float32(0.5),
        cval=np.int32(7),
        rescale=np.float32(0.5),
        horizontal_flip=np.bool_(True),
    )
    assert config.rotation_range == 40.0 and type(config.rotation_range) is float
    assert config.width_shift_range == 3 and type(config.width_shift_range) is int
    assert type(config.cval) is int and config.rescale == 0.5
    assert config.horizontal_flip is True
    assert AugmentConfig.from_yaml(config.to_yaml()) == config


def test_numpy_arrays_are_accepted_as_pairs_and_lists():
    import numpy as np

    config = AugmentConfig(
        brightness_range=np.array([0.5, 1.5]),
        zoom_range=np.array([0.8, 1.25], dtype=np.float32),
        width_shift_range=np.array([1, 2, 3]),
        rotation_range=np.array(10.0),
    )
    assert config.brightness_range == (0.5, 1.5)
    assert config.zoom_bounds == (pytest.approx(0.8), 1.25)
    assert config.width_shift_range == (1, 2, 3)
    assert all(type(v) is int for v in config.width_shift_range)
    assert config.rotation_range == 10.0


def test_a_numpy_bool_is_still_not_a_number():
    import numpy as np

    with pytest.raises(TypeError, match="`rotation_range` must be"):
        AugmentConfig(rotation_range=np.bool_(True))


# ----------------------------------------------------------------------------- YAML numbers


def test_yaml_exponent_forms_are_read_as_floats():
    config = AugmentConfig.from_yaml("zca_epsilon: 1e-6\nrescale: 5E-3\nrotation_range: 1e1\n")
    assert config.zca_epsilon == 1e-6
    assert config.rescale == 5e-3
    assert config.rotation_range == 10.0


def test_a_huge_yaml_exponent_is_rejected_naming_the_field(tmp_path: Path):
    path = tmp_path / "huge.yaml"
    path.write_text("rescale: 1e300\n")
    with pytest.raises(ValueError, match="huge.yaml: `rescale` must be None or a finite number"):
        AugmentConfig.from_yaml(path)


def test_yaml_exponent_forms_do_not_change_pyyaml_for_others():
    import yaml

    AugmentConfig.from_yaml("zca_epsilon: 1e-6\n")
    assert yaml.safe_load("a: 1e-6") == {"a": "1e-6"}


def test_from_yaml_of_a_binary_file_names_the_file(tmp_path: Path):
    path = tmp_path / "weights.yaml"
    path.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\xff\xfe")
    with pytest.raises(ValueError, match="weights.yaml' is not a UTF-8 text"):
        AugmentConfig.from_yaml(path)


# ----------------------------------------------------------------- preprocessing_function


@pytest.mark.parametrize(
    ("fn", "got"),
    [
        (lambda x: x[:, :1], "(2, 1, 8, 8)"),  # drops channels
        (lambda x: x[..., :4, :], "(2, 3, 4, 8)"),  # crops
        (lambda x: x.mean(dim=0), "(3, 8, 8)"),  # drops the batch
    ],
    ids=["channels", "height", "batch"],
)
def test_a_preprocessing_function_that_changes_the_shape_is_named(fn, got):
    import torch

    from gpuaug.augment.module import standardize

    config = AugmentConfig(preprocessing_function=fn)
    x = torch.rand(2, 3, 8, 8) * 255
    with pytest.raises(
        ValueError,
        match=rf"`preprocessing_function` must return .*\(2, 3, 8, 8\); got {re.escape(got)}",
    ):
        standardize(x, config)


def test_a_shape_keeping_preprocessing_function_still_runs():
    import torch

    from gpuaug.augment.module import standardize

    config = AugmentConfig(preprocessing_function=lambda x: 255 - x)
    x = torch.rand(2, 3, 8, 8) * 255
    assert torch.allclose(standardize(x, config), 255 - x)


def test_the_training_recipes_are_not_offered_as_augmentation_presets():
    from gpuaug.augment.config import preset_names

    names = preset_names()
    assert "chollet_cats_dogs" in names and "imagenet_rrc" not in names
    with pytest.raises(ValueError, match=r"'imagenet_rrc' is a training recipe.*load_recipe"):
        load_config("imagenet_rrc")
