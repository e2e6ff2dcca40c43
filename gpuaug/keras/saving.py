"""``BatchSaver``: Keras' ``save_to_dir``, written from a background thread.

Each augmented batch a loader yields is handed over as a device tensor (a copy, so training may
reuse its own); one daemon thread copies it to the host and writes every image as Keras does:
``array_to_img(x, scale=True)`` (shifted to a minimum of 0 and scaled to a maximum of 255, then
truncated to uint8) saved as ``{save_prefix}_{index}_{hash}.{save_format}``, where ``index`` is
the sample's index in the data set and ``hash`` a random integer below 10**7 (files) or 10**4
(arrays), as Keras names them. The training loop never waits for the disk; up to
``max_pending`` batches queue up before it does.

Nothing is lost and nothing is overwritten:

- every image is written to a temporary name in the folder (``.{name}.tmp-{pid}``), then linked
  to its final name, so a failed or interrupted write leaves no partial file under a Keras name;
- a name already taken (by an earlier epoch, or another run) is drawn again, up to 64 times;
  only if every draw is taken is a file overwritten, counted in :attr:`BatchSaver.overwritten`
  and warned about at the next step;
- the loader waits for the writes at the end of each epoch, and at interpreter exit every
  saver still alive writes what is queued and stops its thread (``atexit``), so a script that
  ends without ``flush()`` keeps every file;
- a write error (a folder gone or read-only, a full disk) is raised at the next step (the next
  ``submit``, ``check``, ``flush`` or epoch end) as a :class:`SaveToDirError` naming the file
  and the cause, then cleared: the later batches are written again if the folder recovers. At
  exit, an error nobody was left to see is printed to stderr.
"""

from __future__ import annotations

import atexit
import os
import queue
import sys
import threading
import warnings
import weakref
from typing import Any

import numpy as np
import torch
from PIL import Image

__all__ = ["BatchSaver", "SaveToDirError", "to_keras_image"]

_MODES = {1: "L", 3: "RGB", 4: "RGBA"}
_DRAWS = 64  # draws of the random name part before a name is overwritten


class SaveToDirError(OSError):
    """An augmented image that could not be written to ``save_to_dir``.

    Attributes:
        path: the file that was not written.
        lost: how many images were not written since the last error was reported (this one
            included).
    """

    def __init__(self, path: str, cause: BaseException | None, lost: int = 1) -> None:
        self.path = path
        self.lost = lost
        more = f"; {lost} image(s) not written in all" if lost > 1 else ""
        super().__init__(
            f"save_to_dir: cannot write {path!r}: {type(cause).__name__}: {cause}{more}"
        )
        self.__cause__ = cause


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


def _pil_format(save_format: str) -> str:
    """PIL's format name for an extension (``"jpg"`` -> ``"JPEG"``), as ``Image.save`` infers
    it from a file name."""
    Image.init()
    return Image.registered_extensions().get(f".{save_format.lower()}", save_format.upper())


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

    Attributes:
        written: the paths written so far.
        overwritten: how many files were overwritten because every draw of a name was taken.

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
        self._pil_format = _pil_format(save_format)
        self._rng = np.random.default_rng(seed)
        self._queue: queue.Queue[tuple[torch.Tensor, torch.Tensor, Any] | None] = queue.Queue(
            max_pending
        )
        self._lock = threading.Lock()
        self._error: SaveToDirError | None = None
        self._lost = 0
        self._warned_overwrites = 0
        self.written: list[str] = []
        self.overwritten = 0
        self._thread: threading.Thread | None = None
        _LIVE.add(self)

    def submit(self, images: torch.Tensor, indices: torch.Tensor) -> None:
        """Queues a batch ``(B, C, H, W)`` (any device) and the data set index of each row.

        The copy is queued on the caller's current stream; the writer thread waits for an
        event recorded after it (not for the whole device) before reading it back.

        Raises:
            SaveToDirError: an earlier batch failed to write (then cleared; see `check`).
        """
        self.check()
        if self._thread is None:  # started on first use, again after close()
            self._thread = threading.Thread(target=self._work, name="gpuaug-save", daemon=True)
            self._thread.start()
        images = images.detach().clone()
        ready = None
        if images.is_cuda:
            ready = torch.cuda.Event()
            ready.record(torch.cuda.current_stream(images.device))
        self._queue.put((images, indices.detach().cpu().clone(), ready))

    def check(self) -> None:
        """Raises the first write error since the last report, then forgets it; warns once
        about files overwritten since the last warning.

        Raises:
            SaveToDirError: naming the first file not written and its cause.
        """
        with self._lock:
            error, self._error = self._error, None
            lost, self._lost = self._lost, 0
            overwritten = self.overwritten - self._warned_overwrites
            self._warned_overwrites = self.overwritten
        if overwritten:
            warnings.warn(
                f"save_to_dir: {overwritten} file(s) in {self.folder!r} overwritten: every one "
                f"of {_DRAWS} draws of the random name part (below {self.hash_range}) was taken",
                stacklevel=3,
            )
        if error is not None:
            raise SaveToDirError(error.path, error.__cause__, lost) from error.__cause__

    def wait(self) -> None:
        """Waits until every queued batch is written (errors stay for the next `check`)."""
        if self._thread is not None and self._thread.is_alive():
            self._queue.join()

    def flush(self) -> None:
        """Waits until every queued batch is written, then `check`."""
        self.wait()
        self.check()

    def close(self) -> None:
        """Writes what is queued, then stops the thread (a later ``submit`` starts a new one).

        Raises:
            SaveToDirError: as :meth:`check`.
        """
        self._stop()
        self.check()

    def _stop(self) -> None:
        thread, self._thread = self._thread, None
        if thread is not None and thread.is_alive():
            self._queue.put(None)
            thread.join()

    def _at_exit(self) -> None:
        """Interpreter exit: write what is queued, stop the thread, print a pending error."""
        self._stop()
        with self._lock:
            error, lost = self._error, self._lost
            self._error, self._lost = None, 0
        if error is not None:
            print(SaveToDirError(error.path, error.__cause__, lost), file=sys.stderr)

    def _name(self, index: int) -> str:
        draw = int(self._rng.integers(self.hash_range))
        return os.path.join(self.folder, f"{self.prefix}_{index}_{draw}.{self.format}")

    def _write(self, image: torch.Tensor, index: int) -> str:
        """Writes one image under a free Keras name (temp file, then link); returns the path."""
        path = self._name(index)
        tmp = os.path.join(self.folder, f".{os.path.basename(path)}.tmp-{os.getpid()}")
        try:
            to_keras_image(image).save(tmp, format=self._pil_format)
            for _ in range(_DRAWS):
                try:
                    os.link(tmp, path)  # atomic, and never replaces an existing file
                    return path
                except FileExistsError:
                    path = self._name(index)
                except OSError:  # no hard links here (some network / FAT file systems)
                    if not os.path.exists(path):
                        os.replace(tmp, path)
                        return path
                    path = self._name(index)
            with self._lock:
                self.overwritten += 1
            os.replace(tmp, path)
            return path
        except BaseException as exc:
            raise _Failed(path, exc) from exc
        finally:
            if os.path.lexists(tmp):
                try:
                    os.unlink(tmp)
                except OSError:
                    pass

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
                rows = indices.tolist()
                for done, (image, index) in enumerate(zip(host, rows, strict=True)):
                    try:
                        self.written.append(self._write(image, index))
                    except _Failed as failed:  # the rest of this batch would fail alike
                        self._record(failed.path, failed.cause, len(rows) - done)
                        break
            except BaseException as exc:  # e.g. a device error while reading the batch back
                self._record(self.folder, exc, 0 if item is None else len(item[1]))
            finally:
                self._queue.task_done()

    def _record(self, path: str, cause: BaseException, lost: int) -> None:
        with self._lock:
            if self._error is None:
                self._error = SaveToDirError(path, cause)
            self._lost += lost


class _Failed(Exception):
    def __init__(self, path: str, cause: BaseException) -> None:
        super().__init__(path)
        self.path = path
        self.cause = cause


_LIVE: weakref.WeakSet[BatchSaver] = weakref.WeakSet()


@atexit.register
def _flush_at_exit() -> None:
    # atexit runs before the interpreter tears its threads down: joining the writers here is
    # what keeps a script that never calls flush() from losing files (or aborting in a
    # daemon thread that is still inside torch).
    for saver in list(_LIVE):
        try:
            saver._at_exit()
        except Exception as exc:  # exit must go on
            print(f"save_to_dir: {type(exc).__name__}: {exc}", file=sys.stderr)
