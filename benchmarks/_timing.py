"""Interleaved timing, compiled memory figures and machine facts."""

from __future__ import annotations

import dataclasses
import datetime
import importlib.metadata
import os
import platform
import resource
import statistics
import time
from collections.abc import Callable, Sequence

import jax


@dataclasses.dataclass
class Contender:
  """One implementation of a case: a callable and the arguments it takes."""

  name: str
  fn: Callable
  args: Sequence
  jax_fn: Callable | None = None  # the un-jitted JAX function, for memory

  def run(self):
    out = self.fn(*self.args)
    jax.block_until_ready(out)
    return out


def _block(out):
  # torch tensors are synchronous on the CPU; JAX arrays need a block.
  try:
    jax.block_until_ready(out)
  except Exception:
    pass


def interleaved_medians(
  contenders: list[Contender], runs: int, min_sample_s: float = 0.05
) -> dict[str, float]:
  """Median seconds per call of each contender, over interleaved samples.

  After one warm-up call each (compilation), every sample times a batch of
  calls long enough to dwarf timer overhead, and samples alternate between
  contenders so that drift on a shared machine hits all of them alike.
  """
  reps = {}
  for c in contenders:
    _block(c.fn(*c.args))
    t0 = time.perf_counter()
    _block(c.fn(*c.args))
    once = max(time.perf_counter() - t0, 1e-7)
    reps[c.name] = max(1, min(1000, int(min_sample_s / once)))
  samples: dict[str, list[float]] = {c.name: [] for c in contenders}
  for r in range(runs):
    # rotate the order each round: no contender always runs right after
    # another (torch's worker threads, say, still spinning down)
    for c in contenders[r % len(contenders) :] + contenders[: r % len(contenders)]:
      k = reps[c.name]
      t0 = time.perf_counter()
      for _ in range(k):
        out = c.fn(*c.args)
      _block(out)
      samples[c.name].append((time.perf_counter() - t0) / k)
  return {name: statistics.median(s) for name, s in samples.items()}


def temp_bytes(fn: Callable, *args) -> int | None:
  """XLA's temp allocation for the compiled function (deterministic)."""
  analysis = jax.jit(fn).lower(*args).compile().memory_analysis()
  if analysis is None:
    return None
  return int(analysis.temp_size_in_bytes)


def peak_rss_mb() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _version(name: str) -> str:
  try:
    return importlib.metadata.version(name)
  except importlib.metadata.PackageNotFoundError:
    return "not installed"


def machine_info() -> dict[str, str]:
  cpu = platform.processor() or "unknown"
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("model name"):
          cpu = line.split(":", 1)[1].strip()
          break
  except OSError:
    pass
  return {
    "date": datetime.date.today().isoformat(),
    "cpu": cpu,
    "cores": str(os.cpu_count()),
    "device": str(jax.devices()[0].device_kind),
    "python": platform.python_version(),
    "jax": jax.__version__,
    "jaxlib": _version("jaxlib"),
    "jaxsmx": _version("jaxsmx"),
    "optax": _version("optax"),
    "torch": _version("torch"),
    "jax-cce": _version("jax-cce"),
  }
