"""ResumableSampler and build_dataloader: partitions, resumes, determinism."""

import pytest
import torch
from torch.utils.data import Dataset, DistributedSampler

from speed.data import ResumableSampler, build_dataloader


class _Indexed(Dataset):
    """Item i = (a torch.rand draw, i): exposes both the order and the workers' RNG."""

    def __len__(self):
        return 24

    def __getitem__(self, i):
        return torch.rand(()), torch.tensor(i)


@pytest.mark.parametrize("n, world, drop_last", [(10, 2, True), (11, 3, True), (11, 3, False)])
def test_matches_torch_distributed_sampler(n, world, drop_last):
    for rank in range(world):
        for epoch in (0, 3):
            ours = ResumableSampler(n, rank, world, seed=7, drop_last=drop_last)
            ref = DistributedSampler(
                range(n), world, rank, shuffle=True, seed=7, drop_last=drop_last
            )
            ours.set_epoch(epoch)
            ref.set_epoch(epoch)
            assert list(ours) == list(ref) and len(ours) == len(ref)


def test_ranks_partition_each_epoch():
    shares = [list(ResumableSampler(11, r, 2, seed=1)) for r in range(2)]
    assert len(shares[0]) == len(shares[1]) == 5
    assert len(set(shares[0]) | set(shares[1])) == 10  # disjoint; one item dropped
    padded = [list(ResumableSampler(11, r, 2, seed=1, drop_last=False)) for r in range(2)]
    assert set(padded[0]) | set(padded[1]) == set(range(11))


def test_epochs_differ_and_instances_agree():
    a, b = ResumableSampler(50, seed=3), ResumableSampler(50, seed=3)
    assert list(a) == list(b) and sorted(a) == list(range(50))
    first = list(a)
    a.set_epoch(1)
    assert list(a) != first and sorted(a) == list(range(50))
    assert list(ResumableSampler(50, seed=4)) != first
    assert list(ResumableSampler(5, shuffle=False)) == [0, 1, 2, 3, 4]


def test_set_start_skips_into_the_same_order():
    sampler = ResumableSampler(20, rank=1, world_size=2, seed=5)
    sampler.set_epoch(2)
    full = list(sampler)
    sampler.set_start(4)
    assert list(sampler) == full[4:] and len(sampler) == 6
    sampler.set_epoch(3)  # a new epoch starts from the beginning
    assert len(sampler) == 10
    with pytest.raises(ValueError, match="start 11"):
        sampler.set_start(11)
    with pytest.raises(ValueError, match="rank"):
        ResumableSampler(20, rank=2, world_size=2)


def test_resumed_loader_yields_the_rest_of_the_epoch():
    ds = _Indexed()
    sampler = ResumableSampler(len(ds), seed=0)
    torch.manual_seed(0)
    whole = [y.tolist() for _, y in build_dataloader(ds, 4, sampler)]
    assert len(whole) == 6 and sorted(sum(whole, [])) == list(range(24))
    resumed = ResumableSampler(len(ds), seed=0)
    resumed.set_start(2 * 4)
    assert [y.tolist() for _, y in build_dataloader(ds, 4, resumed)] == whole[2:]


def test_workers_are_seeded_deterministically_and_per_rank():
    ds = _Indexed()

    def draws(seed, rank=0):
        sampler = ResumableSampler(len(ds), rank=rank, world_size=2, seed=0)
        loader = build_dataloader(ds, 3, sampler, num_workers=1, seed=seed)
        return torch.cat([r for r, _ in loader])

    first = draws(seed=1)
    assert torch.equal(first, draws(seed=1))
    assert not torch.equal(first, draws(seed=2))
    assert not torch.equal(first, draws(seed=1, rank=1))


def test_drop_last_gives_full_batches_only():
    loader = build_dataloader(_Indexed(), 5, ResumableSampler(24, shuffle=False))
    assert [len(y) for _, y in loader] == [5, 5, 5, 5]
    with pytest.raises(ValueError, match="batch_size"):
        build_dataloader(_Indexed(), 0, ResumableSampler(24))
