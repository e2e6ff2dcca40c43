"""kornia stages inside gpuaug: the same output as kornia alone, seeded, replayable, visible.

Every check runs the real kornia (skipped where it is not installed): a stage inside
`GPUAugment` against the same kornia module called standalone under the same RNG state, the
loader's replay, masks through kornia's ``data_keys``, the global RNG left alone, SyncCheck.
"""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys

import pytest
import torch
from conftest import write_tree

import gpuaug
from gpuaug import AugmentConfig, GPUAugment
from gpuaug.augment.kornia_stages import KorniaSpec, KorniaStages, split_for_kornia
from gpuaug.augment.module import apply
from gpuaug.augment.reference import standardize

K = pytest.importorskip("kornia.augmentation")

SIZE = (16, 20)
KERAS = AugmentConfig(rotation_range=20, zoom_range=0.1, horizontal_flip=True, rescale=1 / 255)


def _images(b: int = 4, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (b, 3, *SIZE), dtype=torch.uint8, generator=g)


def _five_ops() -> list:
    return [
        K.ColorJiggle(0.3, 0.3, 0.3, 0.05, p=0.9),
        K.RandomGaussianBlur((3, 3), (0.1, 1.5), p=0.7),
        K.RandomErasing(p=0.6),
        K.RandomResizedCrop(SIZE, scale=(0.5, 1.0)),
        K.RandomPerspective(0.3, p=0.8),
    ]


# ----------------------------------------------------------------------------- against kornia


@pytest.mark.parametrize("op", range(5), ids=lambda i: type(_five_ops()[i]).__name__)
def test_a_kornia_stage_gives_what_the_same_module_gives_standalone(op):
    x = _images()
    aug = GPUAugment(KERAS, kornia=[_five_ops()[op]])
    keras_params = aug.sample_params(x, torch.Generator().manual_seed(1))
    got = aug(x, params=keras_params, kornia_seed=7)
    # by hand: gpuaug's Keras stage on [0, 1], then the kornia module under the same RNG state
    unit = apply(x, keras_params, dataclasses.replace(KERAS, rescale=1 / 255))
    torch.manual_seed(7)
    want = aug.kornia.sequential[0](unit)
    assert torch.equal(got, want)  # bit for bit


def test_an_augmentation_sequential_is_used_as_given():
    seq = K.AugmentationSequential(K.ColorJiggle(0.2, p=1.0), K.RandomPerspective(0.2, p=1.0))
    aug = GPUAugment(AugmentConfig(rescale=1 / 255), kornia=seq)
    x = _images()
    got = aug(x, kornia_seed=3)
    torch.manual_seed(3)
    torch.testing.assert_close(got, seq(x.float() / 255), rtol=0, atol=1e-6)
    assert aug.kornia.sequential is seq


def test_without_rescale_the_output_is_back_on_the_0_255_scale():
    aug = GPUAugment(AugmentConfig(), kornia=[K.ColorJiggle(0.2, p=1.0)])
    x = _images()
    got = aug(x, kornia_seed=3)
    torch.manual_seed(3)
    want = aug.kornia.sequential(x.float() / 255) * 255
    torch.testing.assert_close(got, want, rtol=0, atol=1e-4)


def test_the_featurewise_statistics_apply_after_the_kornia_stages_on_the_keras_scale():
    config = AugmentConfig(featurewise_center=True, featurewise_std_normalization=True)
    aug = GPUAugment(config, kornia=[K.RandomGaussianBlur((3, 3), (0.5, 1.0), p=1.0)])
    aug.fit(_images(16, seed=5))
    x = _images()
    got = aug(x, kornia_seed=2)
    torch.manual_seed(2)
    blurred = aug.kornia.sequential(x.float() / 255) * 255
    want = standardize(blurred, dataclasses.replace(config, kornia=()), aug.stats)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-4)


def test_a_preprocessing_function_still_sees_the_0_255_scale():
    seen = []

    def spy(x):
        seen.append(float(x.max()))
        return x

    aug = GPUAugment(AugmentConfig(preprocessing_function=spy), kornia=[K.ColorJiggle(0.1)])
    aug(torch.full((2, 3, 8, 8), 200, dtype=torch.uint8), kornia_seed=0)
    assert seen[0] > 150


def test_the_keras_stage_hands_kornia_float_in_0_1_with_no_normalisation():
    config = AugmentConfig(rotation_range=10, rescale=2.0, samplewise_center=True)
    keras, tail = split_for_kornia(dataclasses.replace(config, kornia=[KorniaSpec("ColorJiggle")]))
    assert keras.rescale == pytest.approx(1 / 255) and not keras.samplewise_center
    assert keras.rotation_range == 10 and not keras.kornia
    assert tail.rescale == pytest.approx(2.0 * 255) and tail.samplewise_center


# ----------------------------------------------------------------------------- seeding, replay


def test_replay_with_the_kept_params_is_bit_exact():
    aug = GPUAugment(KERAS, kornia=_five_ops())
    x = _images()
    y = aug(x, generator=torch.Generator().manual_seed(0))
    assert torch.equal(aug.apply(x, aug.last_params, aug.last_kornia_params), y)


def test_the_same_kornia_seed_gives_the_same_batch_and_another_seed_another():
    aug = GPUAugment(KERAS, kornia=_five_ops())
    x = _images()
    draws = aug.sample_draws(x, torch.Generator().manual_seed(0))
    a, b = aug(x, params=draws, kornia_seed=11), aug(x, params=draws, kornia_seed=11)
    assert torch.equal(a, b)
    assert not torch.equal(a, aug(x, params=draws, kornia_seed=12))


def test_a_seeded_call_leaves_the_global_rng_exactly_as_it_was():
    aug = GPUAugment(KERAS, kornia=_five_ops())
    torch.manual_seed(123)
    before = torch.rand(3)
    torch.manual_seed(123)
    torch.rand(3)  # the same state as before the first draw
    state = torch.get_rng_state()
    aug(_images(), generator=torch.Generator().manual_seed(0))
    assert torch.equal(torch.get_rng_state(), state)
    torch.manual_seed(123)
    assert torch.equal(torch.rand(3), before)


def test_apply_without_kornia_params_is_refused():
    aug = GPUAugment(KERAS, kornia=[K.ColorJiggle(0.1)])
    x = _images()
    with pytest.raises(ValueError, match="give their `kornia_params`"):
        aug.apply(x, aug.sample_params(x))


def test_the_functional_apply_refuses_a_config_with_kornia_stages():
    config = AugmentConfig(kornia=[{"name": "ColorJiggle", "brightness": 0.1}])
    x = _images()
    with pytest.raises(ValueError, match="runs the Keras stage only"):
        apply(x, gpuaug.sample_params(config, 4, *SIZE), config)


# ----------------------------------------------------------------------------- the loader


@pytest.fixture
def tree(tmp_path):
    return write_tree(tmp_path / "data", {"a": 3, "b": 3}, size=SIZE)


def _loader(tree, **kwargs):
    config = dataclasses.replace(KERAS, kornia=[K.ColorJiggle(0.3, 0.3, p=1.0), K.RandomErasing()])
    options = {"target_size": SIZE, "batch_size": 4, "seed": 5, "num_workers": 0, "device": "cpu"}
    return gpuaug.flow_from_directory(tree, augment=config, **(options | kwargs))


def test_loader_replay_rebuilds_a_batch_with_kornia_stages_bit_for_bit(tree):
    loader = _loader(tree)
    epoch = [x for x, _ in loader]
    again = loader.replay(0, 1)
    assert torch.equal(again.x, epoch[1])
    names = [p.name for p in again.kornia_params]
    assert names == ["ColorJiggle_0", "RandomErasing_1"]


def test_two_loaders_with_the_same_seed_give_identical_epochs(tree):
    a = [x for x, _ in _loader(tree)]
    b = [x for x, _ in _loader(tree)]
    assert all(torch.equal(u, v) for u, v in zip(a, b, strict=True))


def test_an_epoch_leaves_the_training_loops_global_rng_as_it_was(tree):
    loader = _loader(tree)
    torch.manual_seed(0)
    want = torch.rand(4)
    torch.manual_seed(0)
    for _ in loader:
        pass
    assert torch.equal(torch.rand(4), want)


def test_describe_lists_each_kornia_stage_with_its_probability(tree):
    text = _loader(tree).describe()
    assert "kornia: ColorJiggle(brightness=0.3, contrast=0.3" in text
    assert "p=1.0" in text and "kornia: RandomErasing(" in text


def test_masks_go_through_random_resized_crop_with_the_images(tmp_path):
    from test_paired import build_tree

    from gpuaug.loader.factories import flow_from_paired_directories

    pytest.importorskip("skimage.data")
    images, masks = build_tree(tmp_path / "pairs")
    crop = K.RandomResizedCrop((24, 32), scale=(0.3, 0.6))
    config = AugmentConfig(kornia=[crop])
    loader = flow_from_paired_directories(
        images, masks, config, target_size=(24, 32), batch_size=3, seed=0, num_workers=0,
        progress=False,
    )  # fmt: skip
    x, m = next(iter(loader))
    plain = flow_from_paired_directories(
        images, masks, None, target_size=(24, 32), batch_size=3, seed=0, num_workers=0,
        progress=False,
    )  # fmt: skip
    _, m0 = next(iter(plain))
    # kornia's own crop of the un-augmented mask with the batch's params
    assert m.shape == m0.shape == (3, 1, 24, 32)
    want = loader.augment.kornia.sequential(
        m0.float(), params=loader.augment.last_kornia_params, data_keys=["mask"]
    )
    assert torch.equal(m, want.round().to(m.dtype))
    assert m.dtype == m0.dtype and set(m.unique().tolist()) <= set(m0.unique().tolist())
    assert not torch.equal(m, m0)


@pytest.mark.parametrize(
    "op",
    [
        K.RandomResizedCrop((32, 40), scale=(0.4, 0.8), p=1.0),
        K.RandomPerspective(0.4, p=1.0),
        K.RandomAffine(25, translate=(0.1, 0.1), p=1.0),
    ],
    ids=lambda op: type(op).__name__,
)
def test_boxes_follow_a_geometric_kornia_op_as_the_pixels_do(op):
    # a bright rectangle on black; its box must bound the bright pixels after the op
    x = torch.zeros(3, 1, 32, 40)
    x[:, :, 10:22, 12:30] = 1.0
    boxes = torch.tensor([[[12.0, 10.0, 30.0, 22.0]]]).expand(3, 1, 4)
    stages = KorniaStages([op])
    out = stages(x, seed=0)
    moved, ok = stages.apply_boxes(boxes, stages.last_params, 32, 40)
    for i in range(3):
        rows, cols = torch.nonzero(out[i, 0] > 0.5, as_tuple=True)
        bright = torch.tensor([cols.min(), rows.min(), cols.max() + 1, rows.max() + 1]).float()
        clipped = bright.clamp(max=torch.tensor([40.0, 32.0, 40.0, 32.0]))
        torch.testing.assert_close(moved[i, 0], clipped, rtol=0, atol=1.5)
    assert ok.all()


def test_boxes_pushed_out_of_the_image_are_invalid():
    stages = KorniaStages([K.RandomResizedCrop((16, 16), scale=(0.1, 0.1), p=1.0)])
    x = torch.zeros(4, 1, 64, 64)
    stages(x, seed=1)
    corners = torch.tensor([[[0.0, 0.0, 1.0, 1.0], [0.0, 0.0, 64.0, 64.0]]]).expand(4, 2, 4)
    moved, ok = stages.apply_boxes(corners, stages.last_params, 16, 16, min_visibility=0.05)
    assert ok[:, 1].all()  # 10% of the whole image's box stays: the crop
    assert not ok[:, 0].all()  # a 1-pixel corner box falls outside most crops
    assert torch.equal(moved[:, 1], torch.tensor([0.0, 0.0, 16.0, 16.0]).expand(4, 4))
    _, strict = stages.apply_boxes(corners, stages.last_params, 16, 16, min_visibility=0.5)
    assert not strict[:, 1].any()
    assert (moved >= 0).all() and (moved <= 16).all()


def test_a_detection_loader_with_geometric_kornia_stages_replays_its_boxes(tmp_path):
    from test_detection import CONFIG as BOX_CONFIG
    from test_detection import SIZE as BOX_SIZE
    from test_detection import coins

    from gpuaug.loader.factories import flow_from_detection_file

    files = coins.__wrapped__(tmp_path)
    config = dataclasses.replace(BOX_CONFIG, kornia=[K.RandomPerspective(0.3, p=1.0)])
    ld = flow_from_detection_file(files["folder"], files["coco"], config, target_size=BOX_SIZE,
                                  batch_size=3, seed=0, num_workers=0, progress=False)  # fmt: skip
    x, (boxes, labels, valid) = next(iter(ld))
    again = ld.replay(0, 0)
    assert torch.equal(again.x, x) and torch.equal(again.y[0], boxes)
    plain = flow_from_detection_file(files["folder"], files["coco"], BOX_CONFIG,
                                     target_size=BOX_SIZE, batch_size=3, seed=0, num_workers=0,
                                     progress=False)  # fmt: skip
    _, (boxes0, _, _) = next(iter(plain))
    assert not torch.equal(boxes, boxes0)


def test_sync_check_finds_host_reads_only_inside_the_kornia_call_in_an_epoch(tree):
    from gpuaug.sync_check import SyncCheck

    loader = _loader(tree, cache="device")
    for _ in loader:  # warm-up epoch fills the cache
        pass
    with SyncCheck() as check:
        for _ in loader:
            pass
    # gpuaug's own code around the stages reads nothing back; ColorJiggle reads its (CPU)
    # random order and its four "factor != neutral" guards on the host
    assert check.events
    kornia_call = "kornia_stages.py:"
    assert all(kornia_call in e.where and "(forward: out = self.sequential(" in e.where
               for e in check.events), check.events  # fmt: skip
    assert {e.reason for e in check.events} == {"item"}


def _sync_events(op) -> int:
    from gpuaug.sync_check import SyncCheck

    stages = KorniaStages([op])
    x = torch.rand(4, 3, *SIZE)
    stages(x, seed=0)
    with SyncCheck() as check:
        stages(x, seed=1)
    return len(check.events)


def test_the_kornia_ops_that_read_host_values_are_the_documented_ones():
    counts = {type(op).__name__: _sync_events(op) for op in _five_ops()}
    readers = {name for name, n in counts.items() if n}
    assert readers == {"ColorJiggle", "RandomGaussianBlur", "RandomResizedCrop"}, counts


# ----------------------------------------------------------------------------- config, errors


def test_a_yaml_preset_with_a_kornia_list_builds_the_stages():
    text = "rescale: 0.00392156862745098\nkornia:\n  - {name: ColorJiggle, brightness: 0.2}\n"
    aug = GPUAugment(AugmentConfig.from_yaml(text))
    assert aug.kornia.names == ["ColorJiggle"]
    assert repr(aug.kornia.sequential[0]).startswith("ColorJiggle(brightness=0.2, contrast=0.0")


def test_a_kornia_spec_round_trips_yaml():
    config = AugmentConfig(kornia=[{"name": "RandomResizedCrop", "size": [8, 8]}])
    assert AugmentConfig.from_yaml(config.to_yaml()) == config


def test_an_unknown_kornia_name_is_a_value_error():
    with pytest.raises(ValueError, match="`kornia\\[0\\]`: `name` must name a kornia"):
        KorniaStages([{"name": "ColourJiggle"}])


def test_same_on_batch_is_refused():
    with pytest.raises(ValueError, match="same_on_batch=True"):
        KorniaStages([K.ColorJiggle(0.1, same_on_batch=True)])


@pytest.mark.slow  # a fresh interpreter: seconds
def test_importing_gpuaug_does_not_import_kornia():
    code = "import sys, gpuaug, gpuaug.loader; print('kornia' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_building_kornia_stages_without_kornia_names_pip_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "kornia.augmentation", None)
    with pytest.raises(ImportError, match="pip install kornia"):
        KorniaStages([{"name": "ColorJiggle"}])


def test_the_kornia_preset_loads_and_builds_its_three_stages():
    aug = GPUAugment("chollet_cats_dogs_kornia")
    assert aug.kornia.names == ["ColorJiggle", "RandomGaussianBlur", "RandomErasing"]
    assert dataclasses.replace(aug.config, kornia=()) == gpuaug.load_config("chollet_cats_dogs")


def test_a_preview_captions_name_the_kornia_ops_applied(tree, monkeypatch):
    import gpuaug.preview as preview

    captions = []
    draw = preview._draw_cell
    monkeypatch.setattr(preview, "_draw_cell", lambda *a: captions.append(a[-1]) or draw(*a))
    _loader(tree).preview(n=6, rows=1)
    kornia_lines = [c[-1] for c in captions[1:]]  # the first cell is the original
    assert len(kornia_lines) == 6
    assert all(line.startswith("kornia: ColorJiggle") for line in kornia_lines)  # p=1.0
    assert set(kornia_lines) <= {"kornia: ColorJiggle", "kornia: ColorJiggle, RandomErasing"}


def test_the_cli_inspects_a_yaml_preset_with_kornia_stages(tree, tmp_path, capsys):
    from gpuaug.cli import main

    path = tmp_path / "k.yaml"
    path.write_text("rescale: 0.5\nkornia:\n  - {name: RandomPerspective, p: 0.4}\n")
    assert main(["inspect", str(tree), "--config", str(path)]) == 0
    assert "kornia: RandomPerspective(p=0.4)" in capsys.readouterr().out


def test_describe_says_where_the_kornia_stages_run_and_how_they_are_seeded(tree):
    text = _loader(tree).describe()
    assert "kornia stages (ColorJiggle, RandomErasing): on the float32 [0, 1] batch" in text
    assert "torch.random.fork_rng seeded mix_seed(batch seed, 0x6b6f726e)" in text


def test_a_validation_loader_runs_no_kornia_stage(tree):
    from gpuaug.augment.validation import validation_module

    aug = GPUAugment(KERAS, kornia=[K.ColorJiggle(0.3)])
    assert validation_module(aug).kornia is None


# ----------------------------------------------------------------------------- every loader


def test_a_detection_loader_with_intensity_kornia_stages_keeps_the_keras_boxes(tmp_path):
    from test_detection import CONFIG as BOX_CONFIG
    from test_detection import SIZE as BOX_SIZE
    from test_detection import coins

    from gpuaug.loader.factories import flow_from_detection_file

    files = coins.__wrapped__(tmp_path)
    stages = [K.ColorJiggle(0.2, p=1.0), K.RandomErasing(p=1.0)]

    def run(config):
        ld = flow_from_detection_file(files["folder"], files["coco"], config,
                                      target_size=BOX_SIZE, batch_size=3, seed=0, num_workers=0,
                                      progress=False)  # fmt: skip
        return next(iter(ld))

    x, (boxes, labels, valid) = run(dataclasses.replace(BOX_CONFIG, kornia=stages))
    x0, (boxes0, labels0, valid0) = run(BOX_CONFIG)
    assert torch.equal(boxes, boxes0) and torch.equal(valid, valid0)
    assert not torch.equal(x, x0)


def test_image_data_generator_takes_kornia_stages_for_flow(tmp_path):
    from gpuaug.keras.generator import ImageDataGenerator

    gen = ImageDataGenerator(rotation_range=10, rescale=1 / 255, kornia=[K.ColorJiggle(0.2)],
                             device="cpu")  # fmt: skip
    x = _images(6).permute(0, 2, 3, 1).numpy()
    it = gen.flow(x, batch_size=3, seed=0, shuffle=False)
    first = next(iter(it))
    assert torch.equal(it.replay(0, 0).x, first[0] if isinstance(first, tuple) else first)
    assert it.augment.kornia.names == ["ColorJiggle"]


def test_the_docs_scenario_book_preset_plus_color_jiggle_train_replay_preview(tree):
    import kornia.augmentation as KA

    aug = gpuaug.GPUAugment("chollet_cats_dogs", kornia=[KA.ColorJiggle(0.2, 0.2, 0.2, p=0.8)])
    train = gpuaug.flow_from_directory(tree, augment=aug, target_size=SIZE, batch_size=4,
                                       class_mode="binary", seed=0, num_workers=0,
                                       device="cpu")  # fmt: skip
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * SIZE[0] * SIZE[1], 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    batches = []
    for x, y in train:  # one epoch
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model(x)[:, 0], y.float())
        opt.zero_grad()
        loss.backward()
        opt.step()
        batches.append(x)
    replay = train.replay(0, 1)
    assert torch.equal(replay.x, batches[1])
    assert replay.kornia_params[0].name == "ColorJiggle_0"
    assert train.preview(n=4, rows=1).size[0] > 0


def test_the_fused_kernel_feeds_the_kornia_stages_as_the_reference_does():
    pytest.importorskip("triton")
    stages = [K.RandomErasing(p=1.0), K.RandomPerspective(0.3, p=1.0)]
    x = _images(2)
    draws = gpuaug.sample_draws(2, generator=torch.Generator().manual_seed(0))
    fused = GPUAugment(KERAS, kornia=stages, backend="triton")(x, params=draws, kornia_seed=4)
    ref = GPUAugment(KERAS, kornia=stages, backend="reference")(x, params=draws, kornia_seed=4)
    torch.testing.assert_close(fused, ref, rtol=0, atol=1e-3 / 255)  # 1e-3 grey levels


def test_keypoints_follow_the_pixel_they_sit_on():
    x = torch.zeros(2, 1, 24, 24)
    x[:, :, 8, 10] = 1.0
    stages = KorniaStages([K.RandomAffine(30, translate=(0.1, 0.1), p=1.0)])
    out = stages(torch.nn.functional.avg_pool2d(x, 3, 1, 1) * 9, seed=3)  # a 3x3 blob
    point = torch.tensor([[[10.5, 8.5]]]).expand(2, 1, 2)
    moved = stages.apply_keypoints(point, stages.last_params)
    for i in range(2):
        flat = int(out[i, 0].argmax())
        centre = torch.tensor([flat % 24 + 0.5, flat // 24 + 0.5])
        torch.testing.assert_close(moved[i, 0], centre, rtol=0, atol=1.0)


def test_with_rescale_1_255_the_kornia_output_is_the_module_output_with_no_copy(monkeypatch):
    aug = GPUAugment(KERAS, kornia=[K.RandomErasing(p=1.0)])
    seen = {}
    forward = KorniaStages.forward

    def spy(self, images, seed=None, params=None):
        seen["in"] = images
        seen["out"] = forward(self, images, seed=seed, params=params)
        return seen["out"]

    monkeypatch.setattr(KorniaStages, "forward", spy)
    y = aug(_images(), kornia_seed=0)
    assert seen["in"].dtype == torch.float32  # the Keras stage's own output, no cast after it
    assert y.data_ptr() == seen["out"].data_ptr()  # x 255 x (1/255) folded away: no pass


@pytest.mark.filterwarnings("ignore:Default grid_sample:UserWarning")  # kornia's own call
def test_an_elastic_warp_counts_as_moving_pixels_and_moves_masks():
    op = K.RandomElasticTransform((3, 3), sigma=(8.0, 8.0), alpha=(8.0, 8.0), p=1.0)
    stages = KorniaStages([op])
    assert stages.geometric
    masks = torch.zeros(2, 1, 16, 16, dtype=torch.uint8)
    masks[:, :, 4:12, 4:12] = 1
    stages(masks.float(), seed=0)
    moved = stages.apply_masks(masks, stages.last_params)
    assert moved.dtype == torch.uint8 and not torch.equal(moved, masks)


def test_a_kornia_op_that_cannot_move_masks_says_so():
    stages = KorniaStages([K.RandomThinPlateSpline(p=1.0)])
    stages(torch.rand(2, 3, 16, 16), seed=0)
    with pytest.raises(NotImplementedError, match="does not move masks"):
        stages.apply_masks(torch.zeros(2, 1, 16, 16), stages.last_params)


def test_a_mixing_kornia_op_is_refused():
    with pytest.raises(ValueError, match="RandomMixUpV2 mixes samples and their labels"):
        KorniaStages([K.RandomMixUpV2()])


def test_a_module_that_is_not_a_kornia_augmentation_is_a_type_error():
    with pytest.raises(TypeError, match="`kornia\\[1\\]` must be a kornia.augmentation module"):
        KorniaStages([K.ColorJiggle(0.1), torch.nn.Identity()])


def test_a_sequential_of_gpuaugment_and_kornia_points_at_kornia_stages(tree):
    augment = torch.nn.Sequential(GPUAugment(KERAS), K.RandomErasing())
    with pytest.raises(TypeError, match=re.escape("GPUAugment(config, kornia=[...])")):
        gpuaug.flow_from_directory(tree, augment=augment, target_size=SIZE, device="cpu")
