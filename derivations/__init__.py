r"""SymPy derivations of every closed-form gradient in jaxsmx.

Each derivation is data: an ordered list of steps, each a SymPy expression
with the checks that prove it (for general :math:`n`, with ``IndexedBase``,
``KroneckerDelta`` and ``Sum``; and for :math:`n = 1 \dots 8` against
``Matrix.jacobian``). :mod:`derivations.numeric` compares each closed form
with JAX autodiff of the jaxsmx function, and :mod:`derivations.report`
renders the report. ``python -m derivations`` does all of it and writes
``derivations/REPORT.md``.

This package imports SymPy; ``jaxsmx`` never imports it.
"""

from __future__ import annotations

from ._core import Derivation as Derivation
from ._core import Step as Step
from .check import DefinitionError as DefinitionError
from .check import VJPCheck as VJPCheck
from .check import check_vjp as check_vjp


def all_derivations() -> tuple[Derivation, ...]:
  """Every derivation, in report order."""
  from . import entropy, losses, masks, softmax

  sm = {d.key: d for d in softmax.derivations()}
  ls = {d.key: d for d in losses.derivations()}
  en = {d.key: d for d in entropy.derivations()}
  return (
    sm["softmax"],
    sm["log_softmax"],
    sm["logsumexp"],
    sm["logsumexp_b"],
    masks.masks_derivation(),
    ls["softmax_cross_entropy"],
    ls["label_smoothing"],
    ls["soft_label_smoothing"],
    en["softmax_entropy"],
    en["entropy"],
    en["cross_entropy"],
    en["kl_divergence"],
    ls["sigmoid_binary_cross_entropy"],
    ls["linear_softmax_cross_entropy"],
    ls["linear_reduced"],
  )


__all__ = [
  "DefinitionError",
  "Derivation",
  "Step",
  "VJPCheck",
  "all_derivations",
  "check_vjp",
]
