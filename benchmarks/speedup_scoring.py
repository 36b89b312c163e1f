"""How the SpeeD study scores a run: domain-classifier FID and class accuracy of its checkpoints,
Inception FID at the end, and the final model's held-out loss per tenth of t."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from speedup_plan import CONFIGS, DOMAIN_CLASSIFIER, Plan, StudyRun

from evaluations import domain_classifier
from evaluations.evaluate import build_extractor, compute_metrics
from evaluations.image_io import load_npz
from evaluations.reference_cache import reference_stats
from speed.config import load_config
from speed.diffusion.timesteps import loss_by_region
from speed.experiments.curve import evaluate_run
from speed.experiments.export_reference import export_reference
from speed.run import RunDir, checkpoint_stem
from speed.runners.build import (
    build_autoencoder,
    build_dataset,
    build_diffusion,
    build_sampling_model,
)
from speed.sweep.expand import Sweep
from speed.utils.atomic import atomic_write


def final_samples(plan: Plan, run_dir: RunDir) -> Path:
    """The .npz of the `final_samples` images a run's last checkpoint drew for its final score."""
    tag = f"domain_n{plan.final_samples}_g{plan.guidance:g}"
    return run_dir.curve_run(tag).inference_npz(checkpoint_stem(plan.steps))


class Scorer:
    """The extractors and reference statistics every run is scored against."""

    def __init__(
        self, plan: Plan, runs_dir: Path, domain_path=DOMAIN_CLASSIFIER, inception_path=None
    ):
        self.plan = plan
        self.domain = build_extractor(
            "domain", domain_path=domain_classifier.ensure_domain_classifier(domain_path)
        )
        self.domain_ref = self._reference(runs_dir, plan.num_reference, self.domain)
        self._inception_path = inception_path
        self._runs_dir = runs_dir
        self._inception = None

    @property
    def inception(self):
        """(extractor, reference stats) of Inception FID, built on first use."""
        if self._inception is None:
            extractor = build_extractor("inception", inception_path=self._inception_path)
            ref = self._reference(self._runs_dir, self.plan.final_samples, extractor)
            self._inception = (extractor, ref)
        return self._inception

    def _reference(self, runs_dir: Path, num: int, extractor):
        path = runs_dir / f"reference_{num}.npz"
        if not path.is_file():
            cfg = load_config(CONFIGS / self.plan.config, "inference", ["data.random_flip=false"])
            images, labels = export_reference(build_dataset(cfg), num)
            path.parent.mkdir(parents=True, exist_ok=True)
            np.savez(path, arr_0=images, arr_1=labels)
        return reference_stats(path, extractor, runs_dir / "reference_stats", progress=False)

    def sampling_words(self, guidance: float, seed: int | None = None) -> list[str]:
        seed = self.plan.sampling_seed if seed is None else seed
        return [*self.plan.sampling, f"guidance_scale={guidance}", f"seed={seed}"]

    def curve(self, run: StudyRun, sweep: Sweep, steps, guidance, seed=None, num=None) -> dict:
        """step -> {"fid", "class_accuracy"} of the run's checkpoints at `steps` (cached)."""
        num = num or self.plan.num_samples
        tag = f"domain_n{num}_g{guidance:g}" + ("" if seed is None else f"_seed{seed}")
        words = [*run.sweep_run.words(sweep.sweep_dir), *self.sampling_words(guidance, seed)]
        scored = evaluate_run(
            run.sweep_run.config, self.domain_ref, self.domain, num, words,
            progress=False, tag=tag, steps=steps, keep_samples=num == self.plan.final_samples,
        )  # fmt: skip
        return {s: {k: m[k] for k in ("fid", "class_accuracy")} for s, m in scored.items()}

    def final(self, run: StudyRun, sweep: Sweep) -> dict:
        """Domain and Inception FID of `final_samples` images from the last checkpoint."""
        plan = self.plan
        domain = self.curve(run, sweep, [plan.steps], plan.guidance, num=plan.final_samples)
        run_dir = RunDir(run.sweep_run.run_dir(sweep.sweep_dir))
        npz = final_samples(plan, run_dir)
        cache = run_dir.curve_results(f"inception_n{plan.final_samples}_g{plan.guidance:g}")
        if cache.is_file():
            inception = json.loads(cache.read_text())
        else:
            extractor, ref = self.inception
            result = compute_metrics(ref, load_npz(npz), extractor, ("fid",), progress=False)
            inception = {"fid": result["fid"]["value"], "extractor": extractor.name}
            atomic_write(cache, json.dumps(inception) + "\n")
        return {"domain": domain[plan.steps], "inception": inception}


@torch.inference_mode()
def region_losses(config: Path, words: list[str], num_images: int, seed: int = 1234) -> dict:
    """Unweighted eps-MSE of the run's final EMA model per tenth of [0, T) on real images: the
    same images, timesteps (evenly spread over [0, T), shuffled) and noise for every run, so the
    numbers compare methods directly."""
    cfg = load_config(config, "inference", [*words, "data.random_flip=false"])
    autoencoder = build_autoencoder(cfg)
    model, _, _ = build_sampling_model(cfg, autoencoder, torch.device("cpu"))
    diffusion = build_diffusion(cfg)
    images, labels = export_reference(build_dataset(cfg), num_images, seed=seed)
    x = torch.from_numpy(images[..., :1]).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    y = torch.from_numpy(labels)
    generator = torch.Generator().manual_seed(seed)
    t = torch.arange(num_images) * diffusion.num_timesteps // num_images
    t = t[torch.randperm(num_images, generator=generator)]
    noise = torch.randn(x.shape, generator=generator)
    mse = torch.cat(
        [
            diffusion.training_losses(
                model, x[i : i + 128], t[i : i + 128], {"y": y[i : i + 128]}, noise[i : i + 128]
            )["mse"]
            for i in range(0, num_images, 128)
        ]
    )
    return loss_by_region(t, mse, diffusion.num_timesteps)
