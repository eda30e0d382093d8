"""Models: the IRNN layer, its activations and initialisers, and task heads."""

from .activations import ACTIVATION_NAMES, Activation, get_activation
from .inits import INIT_NAMES, init_weight_
from .irnn import IRNN

__all__ = ["ACTIVATION_NAMES", "Activation", "get_activation", "INIT_NAMES", "init_weight_", "IRNN"]
