"""Reports: reading run directories, learning-curve plots, comparison tables."""

from .plots import plot_runs
from .runs import load_run, load_runs
from .tables import compare_table, summarize_run

__all__ = ["plot_runs", "load_run", "load_runs", "compare_table", "summarize_run"]
