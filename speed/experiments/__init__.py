"""Driving runs to scores: FID against training step, the speed-up read off two curves, and the
real-image reference of an experiment's dataset. Above the runners, below the entry points."""
