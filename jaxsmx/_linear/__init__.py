"""Fused linear softmax cross-entropy: the loss of ``x @ w`` without its logits.

Language models end in a projection onto the vocabulary followed by a
cross-entropy. The logits ``x @ w`` are ``N x V``, often gigabytes, and dense
autodiff keeps them and their gradient alive. Here the vocabulary is streamed
in chunks of ``w``'s columns, and no array of shape ``N x V`` exists.

The package, one concern a module:

* ``_api``: the public function, its checks, and the entry it compiles;
* ``_tiling``: the chunk and row-block choice, the loops, 16-bit slicing;
* ``_rows``: the row math: labels and flags, a chunk's logits, the losses,
  the reduced weights, and the one chunk-gradient formula every kernel uses;
* ``_chunked``: the loops over vocabulary chunks (statistics; gradients);
* ``_per_example``: the per-example custom_vjp (``reduction="none"``);
* ``_reduced``: the reduced custom_vjp (``"sum"``, ``"mean"``) and its
  one-pass row-block kernel;
* ``_sharding``: a kernel on one device's block, under ``shard_map`` or
  ``custom_partitioning``, described by a ``Kernel`` spec;
* ``_paths``: which kernel paths a trace took (:data:`PATHS`,
  :func:`record_paths`), so that tests can show the derivations reach each.
"""

from jaxsmx._linear._api import (
  linear_softmax_cross_entropy as linear_softmax_cross_entropy,
)
from jaxsmx._linear._paths import PATHS as PATHS
from jaxsmx._linear._paths import record_paths as record_paths
