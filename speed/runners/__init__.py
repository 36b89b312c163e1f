"""One function per phase: train, inference, sample (each takes the resolved config)."""
