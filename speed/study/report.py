"""A study's report, rebuilt from its records: `<report>.md` (tables and warnings), `<report>.json`
(the summary and every record) and `<report>.png` (`speed.study.figures`), with the command, the
machines and the dates that made it."""

from __future__ import annotations

import datetime
import json
import math
from pathlib import Path

from speed.study.figures import plot
from speed.study.plan import machine, setting_text
from speed.study.spec import SHARES, Study, result_keys
from speed.study.summary import summarize
from speed.study.timing import load_timing


def _fmt(value, spec=".1f") -> str:
    return "-" if value is None else format(value, spec)


def _pm(pair, spec=".1f") -> str:
    mean, std = pair
    return _fmt(mean, spec) + ("" if std is None else f" +- {std:{spec}}")


def _spec_of(metric: str) -> str:
    return ".3f" if metric in SHARES else ".1f"


def speedup_cells(s: dict) -> list[str]:
    """A method's speed-up as table cells: per seed, mean +- std (reaching seeds), interval."""
    per_seed = ", ".join(
        f"seed {seed}: " + ("never" if v is None else f"{v:.2f}x")
        for seed, v in s["per_seed"].items()
    )
    mean = f"{_pm((s['mean'], s['std']), '.2f')} ({s['seeds_reaching_target']} reach)"
    interval = "-" if s["interval"] is None else "{:.2f} to {:.2f}".format(*s["interval"])
    return [per_seed or "-", mean, interval]


def _speedup_table(speedups: dict) -> list[str]:
    lines = [
        "| method | speed-up per seed (steps) | mean +- std | 95% bootstrap | of the mean curves "
        "| speed-up per seed (wall-clock) | mean +- std |",
        "|---|---|---|---|---|---|---|",
    ]
    for method, s in speedups.items():
        steps = speedup_cells(s)
        seconds = ["-", "-"] if s["seconds"] is None else speedup_cells(s["seconds"])
        lines.append(
            f"| {method} | {' | '.join(steps)} | {_fmt(s['of_mean_curves'], '.2f')} | "
            f"{seconds[0]} | {seconds[1]} |"
        )
    return lines


def _ladder_table(study: Study, rungs: list[dict]) -> list[str]:
    if not rungs:
        return []
    curve, metric = study.score.speedup_metric
    lines = [
        "",
        f"Which part pays ({' -> '.join(study.ladder)}): each method against the one before it, "
        f"how many times sooner it reaches the reference method's final {curve} {metric}, same "
        'seed (the ratio of the two speed-ups; "never": either does not reach it there):',
        "",
        "| method | over | per seed (steps) | mean +- std | per seed (wall-clock) | mean +- std |",
        "|---|---|---|---|---|---|",
    ]
    for rung in rungs:
        cells = [speedup_cells(rung[u])[:2] if rung[u] else ["-", "-"]
                 for u in ("steps", "seconds")]  # fmt: skip
        lines.append(f"| {rung['to']} | {rung['from']} | " + " | ".join(sum(cells, [])) + " |")
    return lines


def _methods_table(
    study: Study, summary: dict, methods: dict, chosen: dict, timed: bool
) -> list[str]:
    """`timed`: the s/step column is the timing's (one box), else the records' mean."""
    finals = study.score.final_keys()
    weighting = summary["loss_weighting"]
    head = " | ".join(f"final {kind} {m}" for kind, m in finals)
    per_step = "s/step (timed)" if timed else "s/step (runs)"
    lines = [
        f"| method | setting | seeds | {head} | final loss | {per_step} |",
        "|---|---|---|" + "---|" * len(finals) + "---|---|",
    ]
    for method, m in methods.items():
        undecided = method in chosen and chosen[method] is None
        setting = setting_text(m["setting"]) + (" (not yet chosen)" if undecided else "")
        scores = " | ".join(_pm(m["final"][k][metric], _spec_of(metric)) for k, metric in finals)
        loss = _pm(m["final_loss"], ".4f") + (" (weighted)" if weighting.get(method) else "")
        lines.append(
            f"| {method} | {setting} | {len(m['seeds'])} | {scores} | {loss} | "
            f"{_fmt(m['sec_per_step'], '.3f')} |"
        )
    return lines


def markdown(study: Study, summary: dict, records: dict, command: str, timing=None) -> str:
    machines = sorted({r["machine"] for r in records.values() if "machine" in r})
    dates = sorted({r["date"] for r in records.values() if "date" in r})
    score = study.score
    sampler = " ".join(f"{k}={v}" for k, v in score.sampler.items()) or "the base config's"
    curve, metric = score.speedup_metric
    timed = timing is not None
    lines = [
        f"# Study `{study.name}`",
        "",
        f"`{command}`, {datetime.date.today().isoformat()}, on {machine()}.",
        "",
        f"Base `{study.base}`, {_budget_text(study)} per run, reference method "
        f"`{study.reference}`; "
        f"{len(records)} run(s) finished" + (f", {dates[0]} to {dates[-1]}" if dates else "")
        + (f", trained on {'; '.join(machines)}" if machines else "") + ".",
        "",
        "Scores: " + "; ".join(
            f"{c.name}: {', '.join(c.metrics)} of {c.samples} samples ({c.features} features) "
            f"every {c.every} steps" + ("" if c.guidance_scale is None else
                                        f", guidance {c.guidance_scale:g}")
            for c in score.curves
        ) + f"; final: {score.final_samples} samples. Sampler {sampler}{_own_samplers(study)}, "
        "against "
        f"{score.reference_images} real images. Speed-up: training needed to reach the reference "
        f"method's final {curve} {metric}, same seed.",
    ]  # fmt: skip
    if timing is not None:
        lines += ["", _timing_text(timing)]
    if summary["warnings"]:
        lines += ["", "**Warnings**", ""] + [f"- {w}" for w in summary["warnings"]]
    lines += ["", *_methods_table(study, summary, summary["methods"], summary["chosen"], timed)]
    if any(summary["loss_weighting"].values()):
        lines += ["", "(weighted): the training loss is weighted over t "
                  "(" + ", ".join(f"{m}: {w}" for m, w in summary["loss_weighting"].items() if w)
                  + "); it is not comparable with an unweighted loss."]  # fmt: skip
    lines += ["", *_speedup_table(summary["speedup"])]
    lines += _ladder_table(study, summary["ladder"])
    shared = summary["shared"]
    if shared:
        lines += [
            "",
            f"Every tuned method at the common setting, {setting_text(shared['setting'])} "
            "(speed-up over the reference method's run of the same seed at that setting):",
            "",
            *_methods_table(study, summary, shared["methods"], {}, timed),
            "",
            *_speedup_table(shared["speedup"]),
        ]
    lines += _curve_tables(study, summary)
    if summary["grid"]:
        kind, metric = score.choose_by
        settings = [setting_text(s) for s in study.settings]
        lines += ["", f"Fairness grid (first seed, final {kind} {metric}):", ""]
        lines += ["| method | " + " | ".join(settings) + " |", "|---" * (len(settings) + 1) + "|"]
        for method, row in summary["grid"].items():
            cells = [_fmt(row[s].get(metric), _spec_of(metric)) if s in row else "-"
                     for s in settings]  # fmt: skip
            lines.append(f"| {method} | " + " | ".join(cells) + " |")
    lines += _runs_table(study, records)
    probe = summary["noise_probe"]
    if probe:
        values = ", ".join(f"{v:.1f}" for v in probe["values"])
        lines += [
            "",
            f"Noise of a score ({probe['metric']} of run {probe['run']}, "
            f"{len(probe['values'])} sampling seeds): {values}; std {probe['std']:.2f}.",
        ]
    lines += _copied_lines(study, records)
    return "\n".join(lines) + "\n"


def _curve_tables(study: Study, summary: dict) -> list[str]:
    lines = []
    for curve in study.score.curves:
        for metric in result_keys(curve.metrics):
            rows = {m: s["curves"].get(curve.name, {}).get(metric) for m, s in
                    summary["methods"].items()}  # fmt: skip
            steps = sorted({step for r in rows.values() if r for step in r["mean"]})
            if not steps:
                continue
            lines += ["", f"{curve.name} {metric} (seed mean) against training step:", ""]
            lines += ["| method | " + " | ".join(map(str, steps)) + " |"]
            lines.append("|---" * (len(steps) + 1) + "|")
            for method, r in rows.items():
                cells = [_fmt(r["mean"].get(s) if r else None, _spec_of(metric)) for s in steps]
                lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return lines


def _runs_table(study: Study, records: dict) -> list[str]:
    finals = study.score.final_keys()
    lines = ["", "Every finished run (final scores):", ""]
    lines.append(
        "| run | " + " | ".join(f"{kind} {m}" for kind, m in finals) + " | steps | s/step |"
    )
    lines.append("|---" * (len(finals) + 3) + "|")
    for name, record in sorted(records.items()):
        cells = [_fmt(record["final"].get(kind, {}).get(m), _spec_of(m)) for kind, m in finals]
        cells += [str(record.get("steps", "-")), _fmt(record.get("sec_per_step"), ".3f")]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def _timing_text(timing: dict) -> str:
    """The sentence saying whose seconds the wall-clock speed-ups use."""
    costs = []
    for method, entry in timing["methods"].items():
        low, high = min(entry["sec_per_step"].values()), max(entry["sec_per_step"].values())
        costs.append(f"{method} {low:.3f}" + (f" to {high:.3f}" if high > low else ""))
    return (
        f"Wall-clock speed-ups use the timing measured on {timing['machine']} on "
        f"{timing['date']} by `{timing['command']}` (s/step: {'; '.join(costs)}), not the "
        "records' own seconds."
    )


def _budget_text(study: Study) -> str:
    if not study.seconds:
        return f"{study.steps} steps"
    return (
        f"{study.seconds:g} s of training (at most {study.steps} steps; each run's last step is in "
        "the table of runs)"
    )


def write_report(study: Study, runs: dict, records: dict[str, dict], command: str) -> Path:
    """Write `<report>.json` (summary + every record), `.md` and `.png`; returns the stem."""
    timing = load_timing(study)
    summary = summarize(study, runs, records, timing)
    stem = study.report
    stem.parent.mkdir(parents=True, exist_ok=True)
    data = {
        "study": study.name,
        "file": str(study.path),
        "command": command,
        "machine": machine(),
        "written": datetime.date.today().isoformat(),
        "summary": summary,
        "runs": records,
    }
    if timing is not None:  # whose seconds the wall-clock speed-ups use
        data["timing"] = timing
    Path(f"{stem}.json").write_text(json.dumps(data, indent=2, default=_jsonable) + "\n")
    table = markdown(study, summary, records, command, timing)
    Path(f"{stem}.md").write_text(table)
    plot(study, runs, summary, Path(f"{stem}.png"))
    print(table)
    print(f"wrote {stem}.json, .md and .png")
    return stem


def _jsonable(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _own_samplers(study: Study) -> str:
    """' (flow: sampler=heun num_steps=25)' for each method that samples its own way."""
    own = [
        f"{m.name}: " + " ".join(f"{k}={v}" for k, v in m.sampler)
        for m in study.methods.values()
        if m.sampler
    ]
    return "".join(f" ({text})" for text in own)


def _copied_lines(study: Study, records: dict) -> list[str]:
    """'ddpm: the runs of studies/masked_dit.yaml's baseline (copied records)' for each `same_as`
    method, with the seeds still waiting for that study's records."""
    lines = []
    for m in (m for m in study.methods.values() if m.same_as):
        have = {r["seed"] for r in records.values() if r.get("method") == m.name}
        waiting = [str(seed) for seed in m.seeds if seed not in have]
        wait = f"; seed(s) {', '.join(waiting)} wait for that study" if waiting else ""
        lines.append(
            f"{m.name}: the runs of {m.same_as.study}'s {m.same_as.method} (copied records{wait})"
        )
    return [text for line in lines for text in ("", line)]
