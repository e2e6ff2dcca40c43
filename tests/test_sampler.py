"""EpochBatchSampler: epochs you can count, seekable, reproducible, DDP-sharded (no images)."""

from __future__ import annotations

import math
from collections import Counter

import pytest
import torch
from torch.utils.data import DataLoader

from gpuaug.loader.sampler import EpochBatchSampler, mix_seed


def epoch_indices(sampler: EpochBatchSampler, epoch: int) -> list[int]:
    sampler.set_epoch(epoch)
    return [i for batch in sampler for i in batch]


def stream(sampler: EpochBatchSampler, epochs: int) -> list[list[int]]:
    return [batch for e in range(epochs) for batch in (sampler.set_epoch(e) or list(sampler))]


# ---------------------------------------------------------------- mix_seed
def test_mix_seed_is_deterministic_and_63_bit():
    assert mix_seed(1, 2, 3) == mix_seed(1, 2, 3)
    assert 0 <= mix_seed(2**70, -5) < 2**63


def test_mix_seed_separates_nearby_inputs():
    seeds = {mix_seed(7, e, s) for e in range(20) for s in range(20)}
    assert len(seeds) == 400
    assert mix_seed(1, 2) != mix_seed(2, 1)


# ---------------------------------------------------------------- one epoch = one pass
def test_default_epoch_visits_every_index_exactly_once():
    s = EpochBatchSampler(23, 5, seed=0)
    assert sorted(epoch_indices(s, 0)) == list(range(23))


def test_len_is_ceil_of_samples_over_batch_size():
    s = EpochBatchSampler(2000, 32, seed=0)
    assert len(s) == s.steps_per_epoch == s.steps_per_pass == math.ceil(2000 / 32) == 63


def test_last_batch_of_a_pass_is_short_as_in_keras():
    s = EpochBatchSampler(2000, 32, seed=0)
    sizes = [len(b) for b in s]
    assert sizes == [32] * 62 + [16]
    assert s.last_batch_size == 16


def test_each_epoch_has_a_new_order():
    s = EpochBatchSampler(50, 8, seed=1)
    assert epoch_indices(s, 0) != epoch_indices(s, 1)


def test_same_seed_and_epoch_give_the_same_order():
    a = EpochBatchSampler(50, 8, seed=1)
    b = EpochBatchSampler(50, 8, seed=1)
    assert epoch_indices(a, 3) == epoch_indices(b, 3)


def test_different_seeds_give_different_orders():
    a = EpochBatchSampler(50, 8, seed=1)
    b = EpochBatchSampler(50, 8, seed=2)
    assert epoch_indices(a, 0) != epoch_indices(b, 0)


def test_without_shuffle_every_epoch_is_file_order():
    s = EpochBatchSampler(10, 4, shuffle=False)
    assert epoch_indices(s, 0) == epoch_indices(s, 5) == list(range(10))


def test_permutation_is_torch_randperm_with_a_mixed_seed():
    s = EpochBatchSampler(30, 4, seed=9)
    g = torch.Generator().manual_seed(mix_seed(9, 0x5045524D, 2))
    assert torch.equal(s.permutation(2), torch.randperm(30, generator=g))


# ---------------------------------------------------------------- drop_last
def test_drop_last_yields_full_batches_only():
    s = EpochBatchSampler(23, 5, seed=0, drop_last=True)
    batches = list(s)
    assert len(s) == len(batches) == 4
    assert all(len(b) == 5 for b in batches)
    flat = [i for b in batches for i in b]
    assert len(set(flat)) == 20


def test_drop_last_with_batch_larger_than_data_is_an_error():
    with pytest.raises(ValueError, match="`batch_size`=10 is larger than the 7 samples"):
        EpochBatchSampler(7, 10, drop_last=True)


# ---------------------------------------------------------------- steps_per_epoch
def test_steps_per_epoch_sets_len():
    s = EpochBatchSampler(100, 10, seed=0, steps_per_epoch=4)
    assert len(s) == 4
    assert len(list(s)) == 4


def test_short_epochs_continue_the_pass_without_loss_or_repeat():
    # 23 images, batch 5 -> 5 steps per pass; epochs of 3 steps cut across passes.
    s = EpochBatchSampler(23, 5, seed=4, steps_per_epoch=3)
    batches = stream(s, 10)  # 30 global batches = 6 passes
    per_pass = [batches[p * 5 : (p + 1) * 5] for p in range(6)]
    for p, chunk in enumerate(per_pass):
        flat = [i for b in chunk for i in b]
        assert sorted(flat) == list(range(23)), f"pass {p}"


def test_long_epochs_span_several_passes():
    s = EpochBatchSampler(10, 4, seed=0, steps_per_epoch=7)  # 3 steps per pass
    counts = Counter(epoch_indices(s, 0))  # 2 full passes + 1 batch of the third
    assert sum(counts.values()) == s.samples_in_epoch(0) == 4 + 4 + 2 + 4 + 4 + 2 + 4
    assert set(counts.values()) <= {2, 3}


def test_samples_in_epoch_counts_the_short_batches_that_fall_in_it():
    for n, b, steps, drop in [
        (23, 5, 3, False),
        (23, 5, 7, False),
        (10, 4, 2, True),
        (9, 3, 4, False),
    ]:
        s = EpochBatchSampler(n, b, seed=0, steps_per_epoch=steps, drop_last=drop)
        for e in range(8):
            assert s.samples_in_epoch(e) == len(epoch_indices(s, e)), (n, b, steps, drop, e)


def test_passes_in_epoch():
    assert EpochBatchSampler(20, 5, steps_per_epoch=6).passes_in_epoch() == pytest.approx(1.5)


# ---------------------------------------------------------------- seekable, set_epoch
def test_batch_equals_what_iteration_yields():
    s = EpochBatchSampler(37, 6, seed=5, steps_per_epoch=4)
    s.set_epoch(3)
    for step, batch in enumerate(s):
        assert s.batch(3, step).tolist() == batch


def test_batch_step_out_of_range_is_an_error():
    s = EpochBatchSampler(10, 5, seed=0)
    with pytest.raises(ValueError, match=r"`step` must be in \[0, steps_per_epoch=2\)"):
        s.batch(0, 2)


def test_iteration_reads_the_epoch_when_it_starts():
    s = EpochBatchSampler(20, 5, seed=0)
    s.set_epoch(1)
    it = iter(s)
    s.set_epoch(2)
    assert [i for b in it for i in b] == epoch_indices(EpochBatchSampler(20, 5, seed=0), 1)


def test_the_sampler_never_advances_the_epoch_itself():
    s = EpochBatchSampler(10, 5, seed=0)
    list(s)
    assert s.epoch == 0


def test_seed_none_draws_and_records_a_seed():
    a, b = EpochBatchSampler(10, 2), EpochBatchSampler(10, 2)
    assert isinstance(a.seed, int) and not a.seed_was_given
    assert a.seed != b.seed


def test_works_as_a_plain_dataloader_batch_sampler():
    data = torch.arange(13)
    s = EpochBatchSampler(13, 4, seed=0)
    got = torch.cat(list(DataLoader(data, batch_sampler=s)))
    assert sorted(got.tolist()) == list(range(13))


# ---------------------------------------------------------------- distributed
@pytest.mark.parametrize("n, world", [(12, 3), (13, 3), (2, 3)])
def test_shards_are_disjoint_cover_everything_and_have_equal_length(n, world):
    samplers = [EpochBatchSampler(n, 2, seed=3, num_replicas=world, rank=r) for r in range(world)]
    shards = [epoch_indices(s, 1) for s in samplers]
    assert len({len(x) for x in shards}) == 1
    assert len({len(s) for s in samplers}) == 1
    flat = [i for x in shards for i in x]
    assert set(flat) == set(range(n))
    padding = math.ceil(n / world) * world - n
    assert len(flat) - n == padding  # DistributedSampler: only the padding repeats


def test_shard_follows_distributed_sampler_semantics():
    from torch.utils.data import DistributedSampler

    perm_free = EpochBatchSampler(13, 100, shuffle=False, num_replicas=3, rank=1)
    ref = list(DistributedSampler(range(13), num_replicas=3, rank=1, shuffle=False))
    assert list(perm_free)[0] == ref


def test_rank_out_of_range_is_an_error():
    with pytest.raises(ValueError, match=r"`rank` must be in \[0, num_replicas=2\); got 2"):
        EpochBatchSampler(10, 2, num_replicas=2, rank=2)


# ---------------------------------------------------------------- argument errors
def test_batch_size_below_one_is_an_error():
    with pytest.raises(ValueError, match="`batch_size` must be an int >= 1; got 0"):
        EpochBatchSampler(10, 0)


def test_a_negative_sample_count_is_an_error():
    with pytest.raises(ValueError, match="`num_samples` must be an int >= 0; got -1"):
        EpochBatchSampler(-1, 2)


@pytest.mark.parametrize("kwargs", [{}, {"drop_last": True}, {"steps_per_epoch": 5}])
def test_no_samples_give_an_empty_sampler_of_zero_steps(kwargs):
    s = EpochBatchSampler(0, 4, seed=0, **kwargs)
    assert len(s) == 0 and list(s) == [] and s.samples_in_epoch(0) == 0


def test_steps_per_epoch_zero_is_an_error():
    with pytest.raises(ValueError, match="`steps_per_epoch` must be an int >= 1; got 0"):
        EpochBatchSampler(10, 2, steps_per_epoch=0)


def test_bool_batch_size_is_a_type_error():
    with pytest.raises(TypeError, match="`batch_size` must be an int; got True"):
        EpochBatchSampler(10, True)


def test_float_seed_is_a_type_error():
    with pytest.raises(TypeError, match="`seed` must be an int or None; got 1.5"):
        EpochBatchSampler(10, 2, seed=1.5)


def test_negative_epoch_is_an_error():
    with pytest.raises(ValueError, match="`epoch` must be an int >= 0; got -1"):
        EpochBatchSampler(10, 2).set_epoch(-1)
