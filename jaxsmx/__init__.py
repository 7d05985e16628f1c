"""jaxsmx: softmax, entropy and cross-entropy for JAX, with closed-form gradients.

Every function is a pure JAX function registered with :func:`jax.custom_vjp`;
its reverse-mode rule is the closed-form gradient derived, step by step, in
``derivations/REPORT.md``.
"""

import importlib.metadata

from jaxsmx._entropy import cross_entropy as cross_entropy
from jaxsmx._entropy import entropy as entropy
from jaxsmx._entropy import softmax_entropy as softmax_entropy
from jaxsmx._integer_labels import (
  softmax_cross_entropy_with_integer_labels as softmax_cross_entropy_with_integer_labels,
)
from jaxsmx._kl import convex_kl_divergence as convex_kl_divergence
from jaxsmx._kl import kl_divergence as kl_divergence
from jaxsmx._kl import (
  kl_divergence_with_log_targets as kl_divergence_with_log_targets,
)
from jaxsmx._linear import linear_softmax_cross_entropy as linear_softmax_cross_entropy
from jaxsmx._poly import poly_loss_cross_entropy as poly_loss_cross_entropy
from jaxsmx._sigmoid import sigmoid_binary_cross_entropy as sigmoid_binary_cross_entropy
from jaxsmx._sigmoid import sigmoid_focal_loss as sigmoid_focal_loss
from jaxsmx._soft_labels import softmax_cross_entropy as softmax_cross_entropy
from jaxsmx._softmax import log_softmax as log_softmax
from jaxsmx._softmax import logsumexp as logsumexp
from jaxsmx._softmax import softmax as softmax

try:
  __version__ = importlib.metadata.version("jaxsmx")
except importlib.metadata.PackageNotFoundError:  # a source tree, not installed
  __version__ = "0.0.0+unknown"

__all__ = [
  "convex_kl_divergence",
  "cross_entropy",
  "entropy",
  "kl_divergence",
  "kl_divergence_with_log_targets",
  "linear_softmax_cross_entropy",
  "log_softmax",
  "logsumexp",
  "poly_loss_cross_entropy",
  "sigmoid_binary_cross_entropy",
  "sigmoid_focal_loss",
  "softmax",
  "softmax_cross_entropy",
  "softmax_cross_entropy_with_integer_labels",
  "softmax_entropy",
]
