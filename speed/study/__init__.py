"""Comparison studies: methods as config overrides, seeds, a fairness rule, a budget, scores and a
report, all from one YAML file (`python -m speed.study studies/NAME.yaml`; docs/study.md).

spec.py       the study file, read and checked
plan.py       the runs (one sweep folder each), the stages that pick them, the records
scoring.py    curves and final scores of a run, cached per checkpoint
work.py       claim, train (resuming), score and record runs; workers share a study
summary.py    seed means, speed-ups in steps and seconds, bootstrap intervals, warnings
report.py     the Markdown and JSON report; figures.py its PNG
timing.py     each method's seconds per step on this box, for the wall-clock speed-ups (--time)
regions.py    probe: held-out loss per tenth of t at every checkpoint (-m speed.study.regions)
handoff.py    probe: one model above a timestep, another below (-m speed.study.handoff)
samples.py    the final samples of each method side by side (-m speed.study.samples)
plot_timesteps.py   p_t, w_t and loss-by-t plots of a config (-m speed.study.plot_timesteps)
"""
