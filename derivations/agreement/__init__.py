r"""The JAX agreement: the derivations' closed forms against jaxsmx, numerically.

Where the engine proves each step on paper, this layer ties the closed forms
to the code:

* ``_lambdify``: :func:`lambdify_general` turns a general-:math:`n` closed
  form into one array program over several sizes;
* :mod:`.numeric`: :class:`~.numeric.Numeric`, data attached to a derivation
  step (``Step(..., agrees=...)``), compares its closed form with
  ``jax.jacrev`` / ``grad`` / ``hessian`` / ``vjp`` of the jaxsmx function in
  float64; :class:`~.numeric.AgreesWithJax` checks a displayed definition
  against jaxsmx's value;
* :mod:`.cases`: :class:`~.cases.Case`, the options, edges and dtypes of each
  function through ``jax.vjp``, evaluated against the closed form on the
  slices the options define.

It imports the engine, never a derivation module: each derivation module
attaches its checks and lists its cases, and ``derivations.all_derivations``,
``derivations.numeric_checks`` and ``derivations.cases`` collect them.
"""

from ._lambdify import lambdify_general

__all__ = ["lambdify_general"]
