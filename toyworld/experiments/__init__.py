"""FIA experiments on the shapes world, each a `python -m toyworld.experiments.NAME` command;
the committed reports they wrote are in `reports/` (docs/evaluation.md's tables come from them)."""
