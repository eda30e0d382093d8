"""Sweeps: a grid of training runs times seeds, from a TOML spec, run locally or on a Ray cluster.

:mod:`irnn.sweep.spec` reads and checks specs (and the presets in :mod:`irnn.experiments`);
:mod:`irnn.sweep.runner` runs them, skipping finished runs and resuming unfinished ones.
"""

from .runner import Outcome, run_one, run_sweep
from .spec import PlannedRun, SweepSpec, list_presets, load_preset, load_spec, parse_spec, preset_text

__all__ = ["Outcome", "PlannedRun", "SweepSpec", "list_presets", "load_preset", "load_spec", "parse_spec",
           "preset_text", "run_one", "run_sweep"]
