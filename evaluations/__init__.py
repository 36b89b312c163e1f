"""Sample-quality evaluation: FID, sFID, Inception Score, KID and precision/recall.

metrics (pure formulas on feature arrays), features (networks and batched extraction),
domain_classifier (a fast extractor for the demo set), image_io and reference (inputs and
statistics files), evaluate (`compute_metrics`), fid and evaluator (command lines).
"""
