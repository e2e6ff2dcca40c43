"""A loader's position as a plain dict: ``GPULoader.state_dict()`` / ``load_state_dict()``.

Every batch is a function of ``(seed, epoch, step, rank)``, so a loader's whole position is
the epoch it is running, the number of batches of it already handed out and the seeds: no
RNG state, no worker state, no list of consumed indices. Restoring it makes the next
iteration start at batch ``step`` of ``epoch`` directly (the sampler computes that batch; the
workers or the cache read only its files, never the batches before it), so the next batch is
bit for bit the one an uninterrupted run would have yielded.

The dict (every value a Python int, bool, str, ``None`` or a list of them, so ``torch.save``,
``torch.load(weights_only=True)``, JSON and Lightning checkpoints all keep it)::

    {"format": "gpuaug.GPULoader/1", "epoch": e, "step": k, "seed": ..., "augment_seed": ...,
     "num_samples": n, "batch_size": b, "steps_per_epoch": S, "drop_last": ..., "shuffle": ...,
     "stick_to_shard": ..., "num_replicas": R, "rank": r, "skipped": [[index, reason], ...]}

``skipped`` lists the files that failed in the part of epoch ``e`` already run (with
``on_error="skip"``), so the warning at the end of the resumed epoch and
``loader.last_skipped`` name them all.

Under ``torch.distributed`` every rank runs the same epochs and steps, so the position is the
same on every rank; ``rank`` and ``skipped`` are the rank's own. A checkpoint holds one rank's
dict (Lightning saves rank 0's): loading it on another rank restores the position exactly and
that rank's skipped-file list starts empty. A different world size is refused: the shards of
the pass would differ, so no step of the new world is "the next batch" of the old one.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

__all__ = ["STATE_FORMAT", "Resume", "check_state", "make_state"]

#: The ``"format"`` value of a loader's state dict (bumped when its meaning changes).
STATE_FORMAT = "gpuaug.GPULoader/1"

# Keys that must equal the loader's own values: they define which batch "step k" is.
_SAME = ("num_samples", "batch_size", "steps_per_epoch", "drop_last", "shuffle", "stick_to_shard")


class Resume(NamedTuple):
    """Where the next iteration starts: batch ``step`` of ``epoch``, with the failures of the
    part of that epoch already run (``[(index, reason), ...]``)."""

    epoch: int
    step: int
    failures: list[tuple[int, str]]


def make_state(
    sampler: Any,
    *,
    epoch: int,
    step: int,
    augment_seed: int | None,
    failures: list[tuple[int, str]],
) -> dict[str, Any]:
    """The state dict of a loader at batch ``step`` of ``epoch`` (see the module docstring).

    Args:
        sampler: the loader's `gpuaug.loader.sampler.EpochBatchSampler`.
        epoch: the epoch running (or the one the next iteration runs).
        step: batches of ``epoch`` already handed out.
        augment_seed: ``LoaderConfig.augment_seed``.
        failures: the failed samples of the part of ``epoch`` already run.
    """
    return {
        "format": STATE_FORMAT,
        "epoch": int(epoch),
        "step": int(step),
        "seed": int(sampler.seed),
        "augment_seed": None if augment_seed is None else int(augment_seed),
        "num_samples": int(sampler.num_samples),
        "batch_size": int(sampler.batch_size),
        "steps_per_epoch": int(sampler.steps_per_epoch),
        "drop_last": bool(sampler.drop_last),
        "shuffle": bool(sampler.shuffle),
        "stick_to_shard": bool(sampler.stick_to_shard),
        "num_replicas": int(sampler.num_replicas),
        "rank": int(sampler.rank),
        "skipped": [[int(i), str(r)] for i, r in failures],
    }


def _int(state: Mapping[str, Any], key: str, minimum: int) -> int:
    value = state.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"`state_dict[{key!r}]` must be an int >= {minimum}; got {value!r}")
    return value


def check_state(
    state: Mapping[str, Any], sampler: Any, augment_seed: int | None
) -> tuple[Resume, int | None]:
    """Validates ``state`` against a loader; returns where to resume and the seed to adopt.

    Returns:
        ``(resume, seed)``: ``seed`` is the state's seed when the loader's own seed was drawn
        at random (``seed=None``: a restarted job adopts the checkpoint's), else ``None``.

    Raises:
        TypeError: ``state`` is not a mapping.
        ValueError: not a gpuaug loader state, a key out of range, a different world size,
            or a setting (data set size, batch size, steps per epoch, ``drop_last``,
            ``shuffle``, seeds) that differs from this loader's; the message names it.
    """
    if not isinstance(state, Mapping):
        raise TypeError(f"`state_dict` must be a dict; got {type(state).__name__}")
    if state.get("format") != STATE_FORMAT:
        raise ValueError(
            f"`state_dict` is not a GPULoader state: its 'format' is {state.get('format')!r}, "
            f"expected {STATE_FORMAT!r}"
        )
    replicas = _int(state, "num_replicas", 1)
    if replicas != sampler.num_replicas:
        raise ValueError(
            f"the state was saved with num_replicas={replicas} and this loader runs "
            f"num_replicas={sampler.num_replicas}: resuming mid-epoch with another world size "
            "is refused (each rank's shard of the pass would change, so no batch of the new "
            "world is the next batch of the old one). Resume with the same world size, or start "
            f"the next epoch afresh: loader.set_epoch({_int(state, 'epoch', 0) + 1})"
        )
    for key in _SAME:
        mine = getattr(sampler, key)
        if state.get(key) != mine:
            raise ValueError(
                f"`state_dict[{key!r}]` is {state.get(key)!r} but this loader has {key}={mine!r}: "
                "the state belongs to a loader built differently"
            )
    epoch = _int(state, "epoch", 0)
    step = _int(state, "step", 0)
    if step > sampler.steps_per_epoch:
        raise ValueError(
            f"`state_dict['step']` must be in [0, steps_per_epoch={sampler.steps_per_epoch}]; "
            f"got {step}"
        )
    if state.get("augment_seed") != augment_seed:
        raise ValueError(
            f"`state_dict['augment_seed']` is {state.get('augment_seed')!r} but this loader has "
            f"augment_seed={augment_seed!r}"
        )
    seed = _int(state, "seed", 0)
    adopt: int | None = None
    if seed != sampler.seed:
        if sampler.seed_was_given:
            raise ValueError(
                f"`state_dict['seed']` is {seed} but this loader was built with seed="
                f"{sampler.seed}: build it with seed={seed} (or seed=None to adopt the state's)"
            )
        adopt = seed
    failures: list[tuple[int, str]] = []
    if state.get("rank") == sampler.rank:
        for item in state.get("skipped", []):
            index, reason = item
            failures.append((int(index), str(reason)))
    if step == sampler.steps_per_epoch:  # saved after the last batch: the epoch is done
        return Resume(epoch + 1, 0, []), adopt
    return Resume(epoch, step, failures), adopt
