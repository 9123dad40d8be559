"""Analysis of runs: loaders (Sacred file storage and MongoDB) -> one tidy DataFrame; the paper's tables,
figures and claims as functions of it; the `asae report` and `asae sync-mongo` commands. See docs/analysis.md."""
from analysis.loaders import load_runs, runs_table

__all__ = ["load_runs", "runs_table"]
