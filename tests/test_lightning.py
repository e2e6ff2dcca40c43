"""A GPULoader as a PyTorch Lightning ``train_dataloader``: the plain-iterable contract.

Lightning does not wrap a non-DataLoader iterable; it calls ``len`` for the epoch length and
``sampler.set_epoch`` before each epoch. These tests pin that both work and that every epoch is
a full pass with fresh augmentation.
"""

from __future__ import annotations

import pytest
import torch
from conftest import write_tree
from torch import nn

import gpuaug
from gpuaug import AugmentConfig

L = pytest.importorskip("lightning")

AUG = AugmentConfig(rotation_range=30, zoom_range=0.2, horizontal_flip=True, rescale=1 / 255)


class Recorder(L.LightningModule):
    """A linear classifier that records what each training step received."""

    def __init__(self, loader: gpuaug.GPULoader) -> None:
        super().__init__()
        self.loader = loader
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, 2))
        self.seen: list[tuple[int, int, torch.Tensor, torch.Tensor]] = []

    def train_dataloader(self):
        return self.loader

    def training_step(self, batch, batch_idx):
        x, y = batch
        self.seen.append((self.current_epoch, batch_idx, x.detach().clone(), y.clone()))
        return nn.functional.cross_entropy(self.net(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    return write_tree(tmp_path_factory.mktemp("lightning") / "data", {"a": 6, "b": 5}, (20, 24))


def fit(tree, epochs: int, **kwargs) -> tuple[Recorder, gpuaug.GPULoader]:
    loader = gpuaug.flow_from_directory(
        tree, augment=AUG, target_size=(16, 16), batch_size=4, class_mode="sparse",
        seed=0, device="cpu", num_workers=0, **kwargs,
    )  # fmt: skip
    model = Recorder(loader)
    trainer = L.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(model)
    return model, loader


def test_lightning_runs_len_loader_steps_each_epoch(tree):
    model, loader = fit(tree, epochs=2)
    steps = [(e, i) for e, i, _, _ in model.seen]
    assert len(loader) == 3  # ceil(11 / 4)
    assert steps == [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2)]
    sizes = [x.shape[0] for e, _, x, _ in model.seen if e == 0]
    assert sizes == [4, 4, 3]  # every image once, the last batch short


def test_lightning_epochs_get_fresh_augmentation_and_replay_matches(tree):
    model, loader = fit(tree, epochs=2)
    first = {i: x for e, i, x, _ in model.seen if e == 0}
    second = {i: x for e, i, x, _ in model.seen if e == 1}
    assert not torch.equal(first[0], second[0])
    # What Lightning trained on is exactly what the loader replays for (epoch, step).
    for epoch, step, x, y in model.seen:
        replay = loader.replay(epoch, step)
        torch.testing.assert_close(x, replay.x)
        assert torch.equal(y, replay.y)


def test_lightning_steps_per_epoch_is_the_epoch_length(tree):
    model, _ = fit(tree, epochs=2, steps_per_epoch=5)
    assert [e for e, _, _, _ in model.seen] == [0] * 5 + [1] * 5
