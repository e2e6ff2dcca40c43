"""``BatchSaver``: Keras' ``save_to_dir``, written from a background thread.

Each augmented batch a loader yields is handed over as a device tensor (a copy, so training may
reuse its own); one daemon thread copies it to the host and writes every image as Keras does:
``array_to_img(x, scale=True)`` (shifted to a minimum of 0 and scaled to a maximum of 255, then
truncated to uint8) saved as ``{save_prefix}_{index}_{hash}.{save_format}``, where ``index`` is
the sample's index in the data set and ``hash`` a random integer below 10**7 (files) or 10**4
(arrays), as Keras names them. The training loop never waits for the disk; up to
``max_pending`` batches queue up before it does. ``flush()`` waits until every batch handed
over is written (and re-raises a write error).
"""

from __future__ import annotations

import os
import queue
import threading
from typing import Any

import numpy as np
import torch
from PIL import Image

__all__ = ["BatchSaver", "to_keras_image"]

_MODES = {1: "L", 3: "RGB", 4: "RGBA"}


def to_keras_image(image: torch.Tensor) -> Image.Image:
    """Keras' ``array_to_img(x, scale=True)`` for one ``(C, H, W)`` image (any float scale)."""
    x = image.detach().to("cpu", torch.float64).permute(1, 2, 0).numpy()
    x = x - np.min(x)
    peak = np.max(x)
    if peak != 0:
        x = x / peak
    x = (x * 255).astype(np.uint8)
    channels = x.shape[2]
    if channels not in _MODES:
        raise ValueError(f"cannot save an image with {channels} channels (1, 3 or 4)")
    return Image.fromarray(x[:, :, 0] if channels == 1 else x, _MODES[channels])


class BatchSaver:
    """Writes augmented batches to a folder from a background thread, with Keras' names.

    Args:
        save_to_dir: an existing folder.
        save_prefix: the file name prefix.
        save_format: ``"png"``, ``"jpeg"``, ... (PIL's name; also the extension).
        hash_range: the random part of the name is below this (Keras: 10**7 for files,
            10**4 for arrays).
        max_pending: batches that may wait to be written before ``submit`` blocks.
        seed: seed of the random name part (``None``: fresh).

    Raises:
        FileNotFoundError: ``save_to_dir`` is not an existing folder.
    """

    def __init__(
        self,
        save_to_dir: str | os.PathLike[str],
        save_prefix: str = "",
        save_format: str = "png",
        *,
        hash_range: int = 10**7,
        max_pending: int = 16,
        seed: int | None = None,
    ) -> None:
        self.folder = os.fspath(save_to_dir)
        if not os.path.isdir(self.folder):
            raise FileNotFoundError(f"`save_to_dir` {self.folder!r} is not an existing folder")
        self.prefix = save_prefix
        self.format = save_format
        self.hash_range = hash_range
        self._rng = np.random.default_rng(seed)
        self._queue: queue.Queue[tuple[torch.Tensor, torch.Tensor, Any] | None] = queue.Queue(
            max_pending
        )
        self._error: BaseException | None = None
        self.written: list[str] = []
        self._thread: threading.Thread | None = None

    def submit(self, images: torch.Tensor, indices: torch.Tensor) -> None:
        """Queues a batch ``(B, C, H, W)`` (any device) and the data set index of each row.

        The copy is queued on the caller's current stream; the writer thread waits for an
        event recorded after it (not for the whole device) before reading it back."""
        if self._error is not None:
            raise self._error
        if self._thread is None:  # started on first use, again after close()
            self._thread = threading.Thread(target=self._work, name="gpuaug-save", daemon=True)
            self._thread.start()
        images = images.detach().clone()
        ready = None
        if images.is_cuda:
            ready = torch.cuda.Event()
            ready.record(torch.cuda.current_stream(images.device))
        self._queue.put((images, indices.detach().cpu().clone(), ready))

    def flush(self) -> None:
        """Waits until every queued batch is written; re-raises a write error."""
        self._queue.join()
        if self._error is not None:
            raise self._error

    def close(self) -> None:
        """Writes what is queued, then stops the thread (a later ``submit`` starts a new one).

        Raises:
            the first write error, as :meth:`flush`.
        """
        thread, self._thread = self._thread, None
        if thread is not None:
            self._queue.put(None)
            thread.join()
        if self._error is not None:
            raise self._error

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            try:
                if item is None:
                    return
                images, indices, ready = item
                if ready is not None:  # the clone was queued on the producer's stream
                    ready.synchronize()
                host = images.to("cpu")
                for image, index in zip(host, indices.tolist(), strict=True):
                    name = f"{self.prefix}_{index}_{int(self._rng.integers(self.hash_range))}"
                    path = os.path.join(self.folder, f"{name}.{self.format}")
                    to_keras_image(image).save(path)
                    self.written.append(path)
            except BaseException as exc:  # reported by the next submit / flush
                self._error = exc
            finally:
                self._queue.task_done()
