r"""SymPy derivations of every closed-form gradient in jaxsmx.

Three layers, each importing only the ones above it:

1. :mod:`derivations.engine`: derivations as data (a :class:`Derivation` is
   an ordered list of :class:`Step` objects, each a SymPy expression with the
   checks that prove it for general :math:`n` and for :math:`n = 1 \dots 8`)
   and the symbolic machinery behind the checks. SymPy only.
2. :mod:`derivations.agreement`: the closed forms against jaxsmx, numerically
   (the numeric checks attached to steps, and the option, edge and dtype
   cases).
3. The derivations themselves, one module per family of functions, listed in
   :data:`MODULES`: ``softmax``, ``masks``, ``losses``, ``class_weights``,
   ``focal``, ``poly``, ``entropy``, ``kl_family``, ``linear``. Each has
   ``derivations()`` and, optionally, ``cases(by_key)``.

Adding a module is one line: its name in :data:`MODULES`. Then
:func:`all_derivations`, :func:`numeric_checks` and :func:`cases` include it,
and ``python -m derivations`` (:mod:`derivations.report`) renders it in
``derivations/REPORT.md``.

This package imports SymPy; ``jaxsmx`` never imports it.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from .check import DefinitionError as DefinitionError
from .check import VJPCheck as VJPCheck
from .check import check_vjp as check_vjp
from .engine import Derivation as Derivation
from .engine import Step as Step

# The derivation modules, in report order.
MODULES = (
  "softmax",
  "masks",
  "losses",
  "class_weights",
  "focal",
  "poly",
  "entropy",
  "kl_family",
  "linear",
)


def modules() -> tuple[ModuleType, ...]:
  """The registered derivation modules, imported."""
  return tuple(importlib.import_module(f"{__name__}.{name}") for name in MODULES)


def all_derivations() -> tuple[Derivation, ...]:
  """Every derivation, in report order."""
  return tuple(d for m in modules() for d in m.derivations())


def numeric_checks(derivations=None) -> tuple:
  """The numeric checks attached to the derivations' steps (default: all)."""
  from .agreement.numeric import attached

  return attached(all_derivations() if derivations is None else derivations)


def cases() -> tuple:
  """Every option, edge and dtype case, grouped by function."""
  by_key = {d.key: d for d in all_derivations()}
  return tuple(c for m in modules() if hasattr(m, "cases") for c in m.cases(by_key))


__all__ = [
  "MODULES",
  "DefinitionError",
  "Derivation",
  "Step",
  "VJPCheck",
  "all_derivations",
  "cases",
  "check_vjp",
  "modules",
  "numeric_checks",
]
