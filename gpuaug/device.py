"""Host-to-device copies that never make the host wait: the one helper every stage uses."""

from __future__ import annotations

from contextlib import nullcontext

import torch

__all__ = ["host_to_device"]


def host_to_device(t: torch.Tensor, device: torch.device | str) -> torch.Tensor:
    """``t`` (CPU) on ``device`` without making the host wait.

    To CUDA: from pinned memory (pinned here if it is not, under the target device so that the
    pinned block belongs to it) with ``non_blocking=True``; the caching host allocator keeps a
    pinned block alive until its copy has run. Anything else (CPU, ``meta``): a plain ``to``.

    Shape:
        t: any shape, CPU -> the same values on ``device``.
    """
    device = torch.device(device)
    if t.device == device:
        return t
    if device.type == "cuda" and t.device.type == "cpu":
        if not t.is_pinned():
            # Under the target device, so no context is opened on GPU 0 for a cuda:k copy
            # (nothing to open without CUDA: fake "cuda" tensors in tests).
            where = torch.cuda.device(device) if torch.cuda.is_available() else nullcontext()
            with where:
                t = t.pin_memory()
        return t.to(device, non_blocking=True)
    return t.to(device)
