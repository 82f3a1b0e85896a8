"""Training: :mod:`.trainer` (one model from a YAML config over the base recipe
``recipe.yaml``, MONAI / Ignite engines, DDP) and :mod:`.cv` (every fold of a pool datalist,
out-of-fold scoring, the post-processing search, the experiments table, the quality fit)."""
