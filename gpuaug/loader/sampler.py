"""``EpochBatchSampler``: a pure, seekable batch sampler with epochs you can count.

The sampler cuts an endless stream of batches out of a sequence of *passes* over the data.
Pass ``p`` is one permutation of the ``n`` sample indices::

    perm(p) = torch.randperm(n, generator=torch.Generator().manual_seed(mix_seed(seed, PERM, p)))

(``arange(n)`` without ``shuffle``). Under ``torch.distributed`` the permutation is padded to a
multiple of ``num_replicas`` by repeating its head, and rank ``r`` takes ``perm[r::num_replicas]``
(``DistributedSampler``'s rule), so every rank gets a disjoint shard of the same length. A
pass yields ``ceil(shard / batch_size)`` batches, the last one short as in Keras, or
``floor(shard / batch_size)`` with ``drop_last``.

With ``stick_to_shard=True`` (a per-rank cache, DALI's ``stick_to_shard``) rank ``r``'s share
is fixed for the whole run: ``perm(0)``, padded, ``[r::num_replicas]``; pass ``p`` is that share
in the order of ``randperm(share, seed=mix_seed(seed, PERM, p, r))``. Every pass still yields
every sample once across the ranks, but a sample is always seen by the same rank.

Global batch ``k`` of the stream is batch ``j = k % steps_per_pass`` of pass
``p = k // steps_per_pass``. Epoch ``e`` is the global batches ``[e * S, (e + 1) * S)`` with
``S = steps_per_epoch``: by default ``S = steps_per_pass``, so one epoch is one pass (every
image exactly once, in a new order); with ``steps_per_epoch=N`` the passes run on across epoch
boundaries, so no image is dropped or repeated within a pass and no pass is cut short.

Every batch is a pure function of ``(seed, epoch, step, rank)``: :meth:`batch` re-creates any
of them without iterating, and :func:`mix_seed` gives the loader the seed of each batch's
augmentation stream.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator

import torch
from torch.utils.data import Sampler

__all__ = ["AUGMENT_STREAM", "PERMUTATION_STREAM", "EpochBatchSampler", "mix_seed"]

#: Domain tags for :func:`mix_seed`, so the permutation and augmentation streams never collide.
PERMUTATION_STREAM = 0x5045524D  # "PERM"
AUGMENT_STREAM = 0x41554731  # "AUG1"

_MASK64 = (1 << 64) - 1


def _splitmix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def mix_seed(*values: int) -> int:
    """Hashes integers into one 63-bit seed (splitmix64 chain), for ``Generator.manual_seed``.

    Nearby inputs (epoch 3 vs 4, rank 0 vs 1) give unrelated seeds; the result depends only on
    the values, not on the platform, the device or any global state.

    Args:
        values: non-negative (or negative) Python ints; each is reduced modulo 2**64.

    Returns:
        An int in ``[0, 2**63)``.
    """
    h = 0
    for v in values:
        h = _splitmix64(h ^ (int(v) & _MASK64))
    return h >> 1


def _check_int(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"`{name}` must be an int; got {value!r}")
    if value < minimum:
        raise ValueError(f"`{name}` must be an int >= {minimum}; got {value!r}")
    return value


def _distributed_defaults(num_replicas: int | None, rank: int | None) -> tuple[int, int]:
    dist = torch.distributed
    active = dist.is_available() and dist.is_initialized()
    if num_replicas is None:
        num_replicas = dist.get_world_size() if active else 1
    if rank is None:
        rank = dist.get_rank() if active else 0
    return num_replicas, rank


def _process_group_store() -> object | None:
    try:
        from torch.distributed import distributed_c10d

        return distributed_c10d._get_default_store()
    except Exception:  # no default group, or a torch without the helper
        return None


def _shared_random_seed(signature: tuple[object, ...]) -> int:
    """A fresh random seed, the same on every rank under torch.distributed, without a collective.

    Each rank proposes a random seed and the process group's key-value store keeps the first
    proposal (``compare_set`` on a key named by ``signature`` alone): no rank waits for another,
    so a sampler made on some ranks only (a rank-0 validation loader) cannot deadlock, and the
    key is what every rank computes from the same data and settings, never a count of the
    samplers a process made before (a loader made on one rank only cannot shift the seeds of
    the others). Samplers of one signature in one job therefore share the seed.

    Raises:
        ValueError: torch.distributed is initialised but its store cannot be reached.
    """
    seed = random.SystemRandom().randrange(2**63)
    dist = torch.distributed
    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return seed
    store = _process_group_store()
    if store is None or not hasattr(store, "compare_set"):
        raise ValueError(
            "`seed`=None under torch.distributed: the ranks must share one seed, and the process "
            "group's store is not available to agree on it; pass seed=<the same int on every rank>"
        )
    name = "-".join(map(str, signature))
    agreed = store.compare_set(f"gpuaug/seed/{name}", "", str(seed))
    return int(agreed)


class EpochBatchSampler(Sampler[list[int]]):
    """Batches of sample indices for epoch after epoch, reproducible from ``(seed, epoch)``.

    Usable on its own as a ``DataLoader(dataset, batch_sampler=...)``; `gpuaug.GPULoader`
    builds one. Iterating yields the batches of epoch :attr:`epoch` (``len(self)`` of them);
    :meth:`set_epoch` chooses the epoch (as ``DistributedSampler.set_epoch``). The sampler
    itself never advances the epoch; the loader does after a complete epoch.

    Args:
        num_samples: the dataset size ``n`` (>= 1).
        batch_size: samples per batch (>= 1).
        shuffle: a new random order every pass; else ``0..n-1`` every pass.
        seed: base seed of the permutations; ``None`` draws one at random now (read it back
            from :attr:`seed`). Under torch.distributed every rank gets the same one, agreed
            through the process group's store without a collective, keyed by the sizes and
            settings and ``seed_key`` (see :func:`_shared_random_seed`); pass the same int on
            every rank to avoid the store.
        drop_last: drop the short last batch of each pass.
        steps_per_epoch: batches per epoch; ``None``: one pass (every image once).
        num_replicas: number of ranks; default ``torch.distributed`` world size, else 1.
        rank: this rank; default ``torch.distributed`` rank, else 0.
        seed_key: what else names the data for the ``seed=None`` agreement (the loader passes
            a digest of its data set, the same on every rank for the same files).
        stick_to_shard: keep each rank's share of pass 0 for every pass, shuffled within (see
            the module docstring); the same as False for one rank.

    Attributes:
        seed: the base seed (drawn when ``None`` was given).
        epoch: the epoch that the next iteration yields.
        samples_per_pass: the size of this rank's shard of one pass (``ceil(n / replicas)``).
        steps_per_pass: batches per pass.
        steps_per_epoch: batches per epoch (``len(self)``).

    Raises:
        ValueError: a size below 1 (``num_samples`` 0 is allowed: an empty sampler of 0 steps),
            ``rank`` not in ``[0, num_replicas)``, or ``drop_last`` with a ``batch_size``
            larger than the shard (no batch at all).
        TypeError: a non-int size or seed.
    """

    def __init__(
        self,
        num_samples: int,
        batch_size: int,
        *,
        shuffle: bool = True,
        seed: int | None = None,
        drop_last: bool = False,
        steps_per_epoch: int | None = None,
        num_replicas: int | None = None,
        rank: int | None = None,
        seed_key: str = "",
        stick_to_shard: bool = False,
    ) -> None:
        self.num_samples = _check_int("num_samples", num_samples, 0)  # 0: an empty loader
        self.batch_size = _check_int("batch_size", batch_size, 1)
        if not isinstance(shuffle, bool):
            raise TypeError(f"`shuffle` must be a bool; got {shuffle!r}")
        if not isinstance(drop_last, bool):
            raise TypeError(f"`drop_last` must be a bool; got {drop_last!r}")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise TypeError(f"`seed` must be an int or None; got {seed!r}")
        if steps_per_epoch is not None:
            _check_int("steps_per_epoch", steps_per_epoch, 1)
        num_replicas, rank = _distributed_defaults(num_replicas, rank)
        self.num_replicas = _check_int("num_replicas", num_replicas, 1)
        self.rank = _check_int("rank", rank, 0)
        if self.rank >= self.num_replicas:
            raise ValueError(
                f"`rank` must be in [0, num_replicas={self.num_replicas}); got {self.rank}"
            )
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.seed_key = seed_key
        if not isinstance(stick_to_shard, bool):
            raise TypeError(f"`stick_to_shard` must be a bool; got {stick_to_shard!r}")
        self.stick_to_shard = stick_to_shard and self.num_replicas > 1
        self.seed_was_given = seed is not None
        self.seed = (
            int(seed)
            if seed is not None
            else _shared_random_seed(
                (
                    num_samples,
                    batch_size,
                    shuffle,
                    drop_last,
                    steps_per_epoch,
                    self.num_replicas,
                    seed_key,
                )
            )
        )

        self.samples_per_pass = math.ceil(self.num_samples / self.num_replicas)
        if drop_last:
            self.steps_per_pass = self.samples_per_pass // self.batch_size
            if self.steps_per_pass == 0 and self.num_samples:
                raise ValueError(
                    f"`batch_size`={self.batch_size} is larger than the "
                    f"{self.samples_per_pass} samples per pass"
                    + (f" on each of {self.num_replicas} ranks" if self.num_replicas > 1 else "")
                    + "; drop_last=True would yield no batch at all"
                )
        else:
            self.steps_per_pass = math.ceil(self.samples_per_pass / self.batch_size)
        # no samples: no step, whatever steps_per_epoch says
        self.steps_per_epoch: int = (
            steps_per_epoch
            if steps_per_epoch is not None and self.num_samples
            else self.steps_per_pass
        )
        self.epoch = 0
        self._set_count = 0
        self._cache: tuple[int, torch.Tensor] | None = None

    # ------------------------------------------------------------------ epochs
    def set_epoch(self, epoch: int) -> None:
        """Makes the next iteration yield epoch ``epoch`` (as ``DistributedSampler.set_epoch``)."""
        self.epoch = _check_int("epoch", epoch, 0)
        self._set_count += 1

    def __len__(self) -> int:
        return self.steps_per_epoch

    def __iter__(self) -> Iterator[list[int]]:
        epoch = self.epoch  # read now, not at the first next()
        return (idx.tolist() for _, idx in self.epoch_batches(epoch))

    def epoch_batches(self, epoch: int, start: int = 0) -> Iterator[tuple[int, torch.Tensor]]:
        """``(step, indices)`` for every batch of ``epoch`` from step ``start`` on, in order
        (the batches before ``start`` are not computed: a resumed epoch starts there).

        Shape:
            indices: ``(b,)`` int64, CPU; ``b = batch_size`` except the last batch of a pass.
        """
        _check_int("epoch", epoch, 0)
        _check_int("start", start, 0)
        first = epoch * self.steps_per_epoch
        for step in range(start, self.steps_per_epoch):
            yield step, self.global_batch(first + step)

    # ------------------------------------------------------------------ pure access
    def permutation(self, pass_index: int) -> torch.Tensor:
        """The order of all ``n`` samples in pass ``pass_index`` (the same on every rank).

        Shape:
            ``(n,)`` int64, CPU.
        """
        _check_int("pass_index", pass_index, 0)
        if not self.shuffle:
            return torch.arange(self.num_samples)
        g = torch.Generator().manual_seed(mix_seed(self.seed, PERMUTATION_STREAM, pass_index))
        return torch.randperm(self.num_samples, generator=g)

    def shard(self, pass_index: int) -> torch.Tensor:
        """This rank's samples of pass ``pass_index``, in order (padded as DistributedSampler).

        Shape:
            ``(samples_per_pass,)`` int64, CPU.
        """
        if self._cache is not None and self._cache[0] == pass_index:
            return self._cache[1]
        if self.stick_to_shard and pass_index > 0:
            own = self.fixed_shard()
            if self.shuffle:
                seed = mix_seed(self.seed, PERMUTATION_STREAM, pass_index, self.rank)
                own = own[torch.randperm(len(own), generator=torch.Generator().manual_seed(seed))]
            self._cache = (pass_index, own)
            return own
        out = self._padded_share(pass_index)
        self._cache = (pass_index, out)
        return out

    def fixed_shard(self) -> torch.Tensor:
        """This rank's share of pass 0: with ``stick_to_shard``, the samples it sees every
        pass (in another order each pass).

        Shape:
            ``(samples_per_pass,)`` int64, CPU.
        """
        return self._padded_share(0)

    def _padded_share(self, pass_index: int) -> torch.Tensor:
        """This rank's ``[rank::num_replicas]`` share of pass ``pass_index``'s permutation,
        padded first by repeating it (as ``DistributedSampler``) to ``samples_per_pass``
        per rank."""
        perm = self.permutation(pass_index)
        total = self.samples_per_pass * self.num_replicas
        if total > self.num_samples:
            pad = total - self.num_samples
            perm = torch.cat([perm, perm.repeat(math.ceil(pad / self.num_samples))[:pad]])
        return perm[self.rank :: self.num_replicas].contiguous()

    def global_batch(self, k: int) -> torch.Tensor:
        """Batch ``k`` of the endless stream: batch ``k % steps_per_pass`` of pass
        ``k // steps_per_pass``.

        Shape:
            ``(b,)`` int64, CPU.
        """
        _check_int("k", k, 0)
        p, j = divmod(k, self.steps_per_pass)
        start = j * self.batch_size
        return self.shard(p)[start : start + self.batch_size]

    def batch(self, epoch: int, step: int) -> torch.Tensor:
        """The indices of batch ``step`` of epoch ``epoch`` (``0 <= step < len(self)``).

        Shape:
            ``(b,)`` int64, CPU.
        """
        _check_int("epoch", epoch, 0)
        _check_int("step", step, 0)
        if step >= self.steps_per_epoch:
            raise ValueError(
                f"`step` must be in [0, steps_per_epoch={self.steps_per_epoch}); got {step}"
            )
        return self.global_batch(epoch * self.steps_per_epoch + step)

    def batch_size_at(self, k: int) -> int:
        """The size of global batch ``k`` (without iterating)."""
        j = k % self.steps_per_pass
        return min(self.batch_size, self.samples_per_pass - j * self.batch_size)

    @property
    def last_batch_size(self) -> int:
        """The size of the last batch of a pass (``batch_size`` when it divides the shard)."""
        if not self.num_samples:
            return 0
        return self.batch_size_at(self.steps_per_pass - 1)

    def samples_in_epoch(self, epoch: int) -> int:
        """How many samples epoch ``epoch`` yields on this rank (it varies only when
        ``steps_per_epoch`` is not a multiple of ``steps_per_pass``)."""
        _check_int("epoch", epoch, 0)
        if not self.num_samples:
            return 0
        s, spp = self.steps_per_epoch, self.steps_per_pass
        a, b = epoch * s, (epoch + 1) * s
        short = self.batch_size - self.last_batch_size
        n_last = b // spp - a // spp  # global batches k in [a, b) with k % spp == spp - 1
        return s * self.batch_size - short * n_last

    def passes_in_epoch(self) -> float:
        """Passes over the data per epoch (1.0 by default)."""
        if not self.steps_per_pass:
            return 0.0
        return self.steps_per_epoch / self.steps_per_pass

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(num_samples={self.num_samples}, batch_size={self.batch_size}, "
            f"shuffle={self.shuffle}, seed={self.seed}, drop_last={self.drop_last}, "
            f"steps_per_epoch={self.steps_per_epoch}, steps_per_pass={self.steps_per_pass}, "
            f"num_replicas={self.num_replicas}, rank={self.rank}, epoch={self.epoch})"
        )
