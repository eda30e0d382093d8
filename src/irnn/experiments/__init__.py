"""Ready-made experiments: the quick demo and presets for the comparisons irnn exists for."""
