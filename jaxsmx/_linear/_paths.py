"""Which kernel paths a call took: recorded at trace time, for the derivations.

Every branch of the fused loss that runs different code (a kernel, a loop
over several chunks or row blocks, a short tail, the 16-bit backward) names
itself here when it is traced. :func:`record_paths` collects those names, so
that a test can show that the derivations' numeric cases reach each of them.
Recording is a Python-side set update while tracing: nothing enters the
program.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

PATHS = (
  # the per-example custom_vjp: the chunked statistics, then the chunked
  # gradient in the backward pass
  "per_example",
  # the reduced (sum/mean) custom_vjp, one pass over row blocks against all
  # of w (32/64-bit, one device)
  "reduced_one_pass",
  # the reduced custom_vjp over vocabulary chunks: statistics, then gradient
  "reduced_chunked",
  # a loop over two or more full vocabulary chunks, and a short last chunk
  "chunk_loop",
  "chunk_tail",
  # the one-pass kernel's loop over two or more row blocks, and a short tail
  "row_block_loop",
  "row_block_tail",
  # the backward pass's dx summed in place over blocks of rows (large N H)
  "dx_rows_loop",
  "dx_rows_tail",
  # the gradient of 16-bit x and w: through 16-bit hi + lo parts, or with x
  # widened to float32 (a small x)
  "backward_16bit",
  "backward_16bit_widened",
)

_recorders: list[set[str]] = []


def take(name: str) -> None:
  """Marks the path `name` as taken by the trace in progress."""
  assert name in PATHS, name
  for taken in _recorders:
    taken.add(name)


@contextlib.contextmanager
def record_paths() -> Iterator[set[str]]:
  """Collects the names of the paths traced inside the block.

  The loss's compiled entry points are cleared first, so that calls whose
  trace is cached are traced again and recorded.
  """
  from jaxsmx._linear import _api  # the entry points, cleared for a fresh trace

  _api.clear_caches()
  taken: set[str] = set()
  _recorders.append(taken)
  try:
    yield taken
  finally:
    # by identity: two recorders may hold equal sets
    del _recorders[next(i for i, r in enumerate(_recorders) if r is taken)]
