"""Gradient-flow diagnostics: why one activation trains and another does not.

On a fixed batch of validation sequences, for a trained (or half-trained) Elman network:
how the gradient's norm ``||dLoss/dh_t||`` decays back through time, how the hidden state's
norm evolves, how the pre-activations are distributed over time, how many units are dead or
in ELU's negative regime, and the spectrum of ``W_hh``. As JSON numbers and PNG figures.

* :mod:`.compute` -- the numbers and their precise definitions;
* :mod:`.figures` -- the PNG figures drawn from the numbers;
* :mod:`.runs` -- run directories: which weights, which batch, which files (``irnn diagnose``
  and the trainer's ``--diagnose-at`` hook).

``docs/diagnostics.md`` describes the files and how to read the figures.
"""

from .compute import QUANTILES, TOP_SINGULAR, LayerTrace, gradient_flow, layer_summary, unroll
from .runs import (DIAGNOSTICS_DIR, KEPT_DIR, compare_runs, diagnose_model, diagnose_run, fixed_batch,
                   parse_epoch_spec, training_diagnostics)

__all__ = ["QUANTILES", "TOP_SINGULAR", "LayerTrace", "gradient_flow", "layer_summary", "unroll",
           "DIAGNOSTICS_DIR", "KEPT_DIR", "compare_runs", "diagnose_model", "diagnose_run", "fixed_batch",
           "parse_epoch_spec", "training_diagnostics"]
