"""The random draws of one training step (timesteps, loss weights, noise, label dropout, backbone
inputs such as a token mask) for its whole global batch, the same however the batch is split."""

from __future__ import annotations

import torch


class StepRandomness:
    """The random draws of one optimizer step for its whole global batch.

    Drawn from a generator seeded by (seed, step) on every rank; sample j of the global batch
    (rank r, micro-batch m, row i: j = r + W (m b + i)) always gets the same timestep, noise,
    label-dropout draw and backbone inputs (a token mask), so 1 process with batch B, W processes
    with B / W each, and B / A with A accumulation steps all compute the same update, and a
    resumed run redraws the same numbers.
    """

    def __init__(self, t, weights, noise, drop, inputs):
        self.t, self.weights, self.noise, self.drop = t, weights, noise, drop
        self.inputs = inputs

    @classmethod
    def draw(
        cls,
        timestep_sampler,
        seed: int,
        size: int,
        shape: tuple,
        drop_prob: float,
        training_inputs=None,
    ):
        """`training_inputs(n, generator) -> dict` (optional) adds backbone kwargs, drawn after
        the rest: tensors of n rows are split by sample, other values passed to every call."""
        generator = torch.Generator().manual_seed(seed)
        t, weights = timestep_sampler.sample(size, "cpu", generator=generator)
        noise = torch.randn((size, *shape), generator=generator)
        drop = (torch.rand(size, generator=generator) < drop_prob).long()
        inputs = training_inputs(size, generator) if training_inputs is not None else {}
        return cls(t, weights, noise, drop, inputs)

    def take(self, positions: torch.Tensor, device: torch.device):
        """(t, weights, noise, drop, backbone kwargs) of the samples at `positions`."""
        per_sample = (self.t, self.weights, self.noise, self.drop)
        inputs = {
            name: value[positions].to(device) if isinstance(value, torch.Tensor) else value
            for name, value in self.inputs.items()
        }
        return (*(v[positions].to(device) for v in per_sample), inputs)
