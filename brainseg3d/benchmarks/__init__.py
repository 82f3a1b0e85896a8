"""Tooling that measures: :mod:`.bench` (end-to-end seconds per case against the MONAI model-zoo
recipe), :mod:`.ablation` (where the time goes) and :mod:`.compare` (configs under one CPU
budget)."""
