"""A Lightning fit killed mid-epoch and resumed from its checkpoint sees exactly the samples of an
uninterrupted fit: the loader is ``Stateful`` (``state_dict`` / ``load_state_dict``)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import write_tree
from torch import nn

import gpuaug
from gpuaug import AugmentConfig

L = pytest.importorskip("lightning")

AUG = AugmentConfig(rotation_range=30, horizontal_flip=True, rescale=1 / 255)


class Killed(RuntimeError):
    pass


class Recorder(L.LightningModule):
    """Records (epoch, batch_idx, x, y) of each step; raises `Killed` at global step ``kill_at``."""

    def __init__(self, loader: gpuaug.GPULoader, kill_at: int | None = None) -> None:
        super().__init__()
        self.loader = loader
        self.kill_at = kill_at
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, 2))
        self.seen: list[tuple[int, int, torch.Tensor, torch.Tensor]] = []

    def train_dataloader(self):
        return self.loader

    def training_step(self, batch, batch_idx):
        if self.global_step == self.kill_at:
            raise Killed(f"killed at step {self.global_step}")
        x, y = batch
        self.seen.append((self.current_epoch, batch_idx, x.detach().clone(), y.clone()))
        return nn.functional.cross_entropy(self.net(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    return write_tree(tmp_path_factory.mktemp("lresume") / "data", {"a": 9, "b": 8}, (20, 24))


def trainer(root: Path, epochs: int) -> L.Trainer:
    return L.Trainer(
        max_epochs=epochs, accelerator="cpu", devices=1, logger=False, default_root_dir=root,
        enable_progress_bar=False, enable_model_summary=False,
        callbacks=[L.pytorch.callbacks.ModelCheckpoint(
            dirpath=root / "ckpt", every_n_train_steps=1, save_top_k=-1,
            filename="{epoch}-{step}",
        )],
    )  # fmt: skip


def loader(root: Path) -> gpuaug.GPULoader:
    return gpuaug.flow_from_directory(
        root, augment=AUG, target_size=(16, 16), batch_size=4, class_mode="sparse",
        seed=5, device="cpu", num_workers=0,
    )  # fmt: skip


def test_a_fit_killed_mid_epoch_resumes_with_the_uninterrupted_samples(tree, tmp_path):
    full = Recorder(loader(tree))
    trainer(tmp_path / "full", 2).fit(full)

    killed = Recorder(loader(tree), kill_at=7)  # 5 steps an epoch: epoch 1, step 2
    with pytest.raises(Killed):
        trainer(tmp_path / "run", 2).fit(killed)
    ckpt = tmp_path / "run" / "ckpt" / "epoch=1-step=7.ckpt"
    again = Recorder(loader(tree))
    trainer(tmp_path / "run", 2).fit(again, ckpt_path=ckpt)

    seen = killed.seen + again.seen
    assert [(e, i) for e, i, *_ in seen] == [(e, i) for e, i, *_ in full.seen]
    for (e, i, x, y), (_, _, x0, y0) in zip(seen, full.seen, strict=True):
        assert torch.equal(x, x0), f"epoch {e} step {i}"
        assert torch.equal(y, y0), f"epoch {e} step {i}"
