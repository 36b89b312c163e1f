"""How a study scores a run: its curves (metrics of a few hundred samples at checkpoints), its final
scores (more samples from the last checkpoint, under each feature extractor asked for) and the
optional probes (other sampling seeds; the held-out loss per tenth of t).

Every sampling uses the study's sampler and the same per-image seeds, so scores differ by the model
only. Scores are cached per checkpoint in the run's folder (`curve/<tag>.json`,
`speed.experiments.curve.evaluate_run`): a resumed study never samples a checkpoint twice.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from evaluations import domain_classifier
from evaluations.evaluate import build_extractor, compute_metrics
from evaluations.image_io import load_npz
from evaluations.reference_cache import reference_stats
from speed.config import load_config
from speed.experiments.curve import evaluate_run
from speed.experiments.export_reference import export_reference
from speed.run import RunDir, checkpoint_stem
from speed.runners.build import build_reference_dataset
from speed.study.plan import StudyRun, final_step
from speed.study.spec import Curve, Study
from speed.sweep.expand import Sweep
from speed.utils.atomic import atomic_write

KEYS_WITH_FEATURES = ("kid", "precision_recall")  # metrics that need every reference feature


class Scorer:
    """The feature extractors and the reference statistics every run of a study is scored
    against (built on first use, the statistics cached under the study's runs folder)."""

    def __init__(self, study: Study, sweep: Sweep):
        self.study, self.sweep = study, sweep
        self.runs_dir = study.runs_dir.resolve()
        self._extractors, self._references = {}, {}

    def extractor(self, kind: str):
        if kind not in self._extractors:
            path = self.study.score.extractors.get(kind)
            if kind == "domain":  # the study's own network, never one trained afresh
                path = domain_classifier.ensure_domain_classifier(path)
                self._extractors[kind] = build_extractor(kind, domain_path=path)
            elif kind == "pairs":  # the same network on each half (default: the shipped one)
                self._extractors[kind] = build_extractor(kind, domain_path=path)
            else:
                self._extractors[kind] = build_extractor(kind, inception_path=path)
        return self._extractors[kind]

    def reference(self, kind: str):
        """Statistics of the study's real images under `kind`'s features."""
        if kind not in self._references:
            num = self.study.score.reference_images
            path = self.runs_dir / f"reference_{num}.npz"
            if not path.is_file():
                cfg = load_config(self.study.base, "inference")
                images, labels = export_reference(build_reference_dataset(cfg), num)
                path.parent.mkdir(parents=True, exist_ok=True)
                np.savez(path, arr_0=images, arr_1=labels)
            self._references[kind] = reference_stats(
                path, self.extractor(kind), self.runs_dir / "reference_stats", progress=False,
                with_features=self._needs_features(kind),
            )  # fmt: skip
        return self._references[kind]

    def _needs_features(self, kind: str) -> bool:
        score = self.study.score
        asked = [m for c in score.curves if c.features == kind for m in c.metrics]
        asked += list(score.final.get(kind, ()))
        return any(m in KEYS_WITH_FEATURES for m in asked)

    def sampling_words(
        self, guidance: float, seed: int | None = None, method: str = ""
    ) -> list[str]:
        """The sampling overrides of a method's scores: score.sampler, then the method's own
        sampler keys (a flow-matching model samples with an ODE, a DDPM one with DDIM), then
        the guidance and the sampling seed."""
        score = self.study.score
        sampler = dict(score.sampler)
        if method:
            sampler.update(self.study.methods[method].sampler)
        words = [f"{k}={v}" for k, v in sampler.items() if k != "guidance_scale"]
        seed = score.seed if seed is None else seed
        return [*words, f"guidance_scale={guidance}", f"seed={seed}"]

    def curve(self, run: StudyRun, curve: Curve, steps=None, seed=None, num=None) -> dict:
        """step -> {metric: value} of the run's checkpoints at `steps` (default the curve's)."""
        study = self.study
        num = num or curve.samples
        guidance = curve.guidance_scale
        guidance = study.score.guidance if guidance is None else guidance
        tag = curve_tag(curve.features, num, guidance, curve.metrics, seed)
        sampling = self.sampling_words(guidance, seed, run.method)
        words = [*run.sweep_run.words(self.sweep.sweep_dir), *sampling]
        scored = evaluate_run(
            run.sweep_run.config, self.reference(curve.features), self.extractor(curve.features),
            num, words, progress=False, tag=tag,
            steps=study.curve_steps(curve) if steps is None else steps,
            keep_samples=num == study.score.final_samples, metrics=curve.metrics,
            metric_settings=study.score.metric_settings,
        )  # fmt: skip
        return {s: _values(m) for s, m in scored.items()}

    def final(self, run: StudyRun, step: int) -> dict:
        """features -> {metric: value} of `final_samples` images from the last checkpoint (at
        `step`): the first features score the samples as they are drawn, the others the same
        images."""
        score = self.study.score
        kinds = list(score.final)
        first = Curve("final", kinds[0], score.final[kinds[0]], step, score.final_samples, None)
        result = {kinds[0]: self.curve(run, first, steps=[step])[step]}
        npz = final_samples(self.study, RunDir(run.sweep_run.run_dir(self.sweep.sweep_dir)), step)
        for kind in kinds[1:]:
            result[kind] = self._score_file(run, kind, npz)
        return result

    def _score_file(self, run: StudyRun, kind: str, npz: Path) -> dict:
        score = self.study.score
        run_dir = RunDir(run.sweep_run.run_dir(self.sweep.sweep_dir))
        cache = run_dir.curve_results(f"{kind}_n{score.final_samples}_g{score.guidance:g}")
        if cache.is_file():
            return json.loads(cache.read_text())
        extractor = self.extractor(kind)
        result = compute_metrics(
            self.reference(kind), load_npz(npz), extractor, score.final[kind], progress=False,
            **score.metric_settings,
        )  # fmt: skip
        values = {**_values(result), "extractor": extractor.name}
        atomic_write(cache, json.dumps(values) + "\n")
        return values

    def noise_probe(self, run: StudyRun, step: int) -> dict:
        """sampling seed -> the first curve's scores at the last step (`step`) with that seed's
        noise: how much a score moves when only the sampling noise changes."""
        curve = self.study.score.curves[0]
        return {
            str(seed): self.curve(run, curve, steps=[step], seed=seed)[step]
            for seed in self.study.score.noise_seeds
        }


def curve_tag(features: str, num: int, guidance: float, metrics, seed: int | None = None) -> str:
    """The name of a run's cached scores (`curve/<tag>.json`) and samples: the features, number of
    samples and guidance, the metrics unless they are the default FID and class accuracy, and the
    sampling seed unless it is the study's."""
    tag = f"{features}_n{num}_g{guidance:g}"
    if set(metrics) != {"fid", "class_accuracy"}:
        tag += "_" + "-".join(sorted(metrics))
    return tag if seed is None else f"{tag}_seed{seed}"


def final_samples(study: Study, run_dir: RunDir, step: int | None = None) -> Path:
    """The .npz of the images a run's last checkpoint (at `step`, default where its training
    ended) drew for its final scores."""
    score = study.score
    kind, metrics = next(iter(score.final.items()))
    tag = curve_tag(kind, score.final_samples, score.guidance, metrics)
    step = final_step(study, run_dir.root) if step is None else step
    return run_dir.curve_run(tag).inference_npz(checkpoint_stem(step))


def _values(entries: dict) -> dict:
    """{metric: value} of a scored step (`evaluate_run`) or of `compute_metrics`' entries."""
    out = {}
    for key, entry in entries.items():
        if isinstance(entry, dict):
            if entry.get("value") is not None:
                out[key] = entry["value"]
        elif isinstance(entry, int | float) and key != "num_samples":
            out[key] = entry
    return out
