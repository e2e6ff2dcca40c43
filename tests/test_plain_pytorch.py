"""The "Your own training loop" page's plain-PyTorch pattern, written the way a user writes it.

``DataLoader(DirectoryDataset(...), batch_size=..., num_workers=..., pin_memory=True)`` with the
DataLoader's own sampler and collate, and `GPUAugment` applied on the device inside the
training loop: targets stay with their images, and every sample gets its own parameters.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader

import gpuaug

COLOURS = {"blue": (0, 0, 255), "green": (0, 255, 0), "red": (255, 0, 0)}


def _tree(root):
    for name, rgb in COLOURS.items():
        (root / name).mkdir(parents=True)
        for i in range(4):
            Image.fromarray(np.full((12, 12, 3), rgb, np.uint8)).save(root / name / f"{i}.png")
    return root


def test_dataloader_with_gpuaugment_in_the_training_loop(tmp_path):
    root = _tree(tmp_path / "train")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")

    # --- as in docs/own-loop.md
    dataset = gpuaug.DirectoryDataset(root, target_size=(12, 12), class_mode="sparse")
    loader = DataLoader(
        dataset,
        batch_size=5,
        shuffle=True,
        num_workers=2,
        pin_memory=torch.cuda.is_available(),
        generator=torch.Generator().manual_seed(0),
    )
    augment = gpuaug.GPUAugment(
        gpuaug.AugmentConfig.from_keras(rotation_range=40, zoom_range=0.2, rescale=1 / 255)
    ).to(device)
    seen, angles = [], []
    for images, labels in loader:
        images = images.to(device, non_blocking=True)
        labels = labels.to(device, non_blocking=True)
        x = augment(images)  # (B, 3, 12, 12) float32, augmented per sample on the device
        # --- checks: the target still names the image's class (its colour), per sample params
        assert x.shape == (len(labels), 3, 12, 12) and x.device.type == device.type
        centre = x[:, :, 6, 6]
        colour = centre.argmax(dim=1)  # red -> 0, green -> 1, blue -> 2
        expected = torch.tensor([{"blue": 2, "green": 1, "red": 0}[c] for c in dataset.classes])
        assert torch.equal(colour.cpu(), expected[labels.cpu()])
        seen.extend(labels.tolist())
        angles.append(augment.last_params.angle_deg.cpu())
    assert sorted(seen) == sorted(dataset.targets)  # every image once, label intact
    angles = torch.cat(angles)
    assert len(torch.unique(angles)) == len(angles) == 12  # fresh parameters for every sample
