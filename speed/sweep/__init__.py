"""Sweeps: one run per combination of swept config values (`main.py -m`), run here or on SLURM.

expand.py    Hydra override words -> runs (folders, overrides), each config checked
state.py     where each run stands (done / resume / new) and the index sweep.yaml
launch.py    run the sweep: locally one after another, or one SLURM job per run
slurm.py     SLURM settings, the torchrun command and the sbatch script of a run
evaluate.py  FID of every run's samples (python -m speed.sweep.evaluate)
summary.py   one table + plot of every run's final metrics (python -m speed.sweep.summary)
"""
