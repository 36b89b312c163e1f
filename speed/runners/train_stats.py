"""What a training log line reports: losses, throughput, memory and the loss per tenth of t,
accumulated between two lines and reduced across ranks."""

from __future__ import annotations

import resource

import torch

from speed.diffusion.timesteps import loss_by_region
from speed.utils.distributed import all_gather_objects, all_reduce_sum


class IntervalStats:
    """Accumulates losses and timings between two log lines; reduced across ranks on summary."""

    def __init__(self, device: torch.device):
        self.device = device
        self.loss_sum = torch.zeros((), device=device)
        self.micro_batches = 0
        self.images = 0
        self.steps = 0
        self.nonfinite = 0
        self.grad_norm = float("nan")
        self.t: list[torch.Tensor] = []
        self.losses: list[torch.Tensor] = []

    def add(self, loss: torch.Tensor, t: torch.Tensor, per_sample: torch.Tensor, n: int) -> None:
        if torch.isfinite(loss):
            self.loss_sum += loss.float()
            self.micro_batches += 1
        self.images += n
        self.t.append(t)
        self.losses.append(per_sample)

    def summarize(self, elapsed: float, num_timesteps: int) -> dict[str, float]:
        totals = torch.tensor(
            [float(self.loss_sum), self.micro_batches, self.images], device=self.device
        )
        totals = all_reduce_sum(totals)
        gathered = all_gather_objects((torch.cat(self.t), torch.cat(self.losses)))
        t_all = torch.cat([g[0] for g in gathered])
        loss_all = torch.cat([g[1] for g in gathered])
        steps = max(1, self.steps)
        stats = {
            "loss": float(totals[0] / max(1.0, float(totals[1]))),
            "grad_norm": self.grad_norm,
            "images_per_s": float(totals[2]) / elapsed,
            "steps_per_s": steps / elapsed,
            "sec_per_step": elapsed / steps,
            "peak_mem_gb": peak_memory_gb(self.device),
            "nonfinite_steps": self.nonfinite,
        }
        stats.update(loss_by_region(t_all, loss_all, num_timesteps=num_timesteps))
        return stats


def peak_memory_gb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
