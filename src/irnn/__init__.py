"""irnn: identity-initialised recurrent networks with any pointwise activation.

The public entry points are the layer :class:`irnn.IRNN` (a drop-in for ``torch.nn.RNN``),
the training API in :mod:`irnn.train` and the ``irnn`` command line (:mod:`irnn.cli`).
"""

from .errors import ConfigError, DataError, IrnnError
from .models import IRNN, get_activation

__version__ = "0.1.0"

__all__ = ["IRNN", "get_activation", "IrnnError", "ConfigError", "DataError", "__version__"]
