"""``python -m benchmarks [--quick] [--out DIR]``: measure and write RESULTS.md."""

from __future__ import annotations

import os

# torch's OpenMP workers otherwise busy-wait after each call, stealing the
# cores from the JAX call timed next; set before torch is imported
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import pathlib
import sys
import time

from . import _cases, _report, _small, _timing

HERE = pathlib.Path(__file__).parent


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
  parser.add_argument(
    "--quick", action="store_true", help="small sizes and few runs (< 1 min)"
  )
  parser.add_argument(
    "--out", type=pathlib.Path, default=HERE, help="folder for RESULTS.md etc."
  )
  parser.add_argument("--runs", type=int, default=None, help="samples per contender")
  parser.add_argument(
    "--small-only",
    action="store_true",
    help="only the small-model cases (MLP training steps, eager calls)",
  )
  args = parser.parse_args(argv)

  if args.quick:
    runs = args.runs or 3
    sizes = [(32, 10), (256, 1000)]
    linear = [(256, 64, 1024), (256, 64, 4096)]
    matmul_shape = (256, 64, 4096)
  else:
    runs = args.runs or 9
    sizes = [(32, 10), (256, 1000), (2048, 32768)]
    linear = [(4096, 512, 8192), (4096, 512, 32768), (4096, 512, 131072)]
    matmul_shape = (4096, 512, 32768)

  start = time.perf_counter()
  rows: list[_cases.Row] = []
  # small models: per-call overhead (dispatch, effects) is what a user feels
  small = [r for c in (10, 1000) for r in _small.train_step(c, max(runs, 5))]
  small += _small.eager_calls(max(runs, 5))
  for r in small:
    print(f"{r.case:52s} {r.size:16s} vs {r.peer:28s} ratio {r.ratio:6.2f}", flush=True)
  rows += small
  if args.small_only:
    sizes, linear = [], []
  for n, c in sizes:
    for case in (
      _cases.softmax_forward,
      _cases.log_softmax_vag,
      _cases.integer_ce_vag,
      _cases.soft_ce_vag,
      _cases.softmax_entropy_vag,
    ):
      new = case(n, c, runs)
      rows += new
      for r in new:
        print(
          f"{r.case:34s} {r.size:12s} vs {r.peer:36s} ratio {r.ratio:6.2f}", flush=True
        )
  for n, h, v in linear:
    new = _cases.linear_ce_vag(n, h, v, runs) + _cases.linear_ce_reduced_vag(
      n, h, v, runs
    )
    rows += new
    for r in new:
      mem = "" if r.mem_ratio is None else f"  memory {r.mem_ratio:.3f}"
      print(
        f"{r.case:34s} {r.size:18s} vs {r.peer:22s} ratio {r.ratio:6.2f}{mem}",
        flush=True,
      )
  gflops = 0.0 if args.small_only else _cases.matmul_gflops(*matmul_shape, runs)
  # compile only (nothing runs), so the full Gemma 2 (2B) shape even in --quick
  sections = (
    {}
    if args.small_only
    else {"Memory at Gemma 2 (2B) scale": _cases.gemma_memory_table()}
  )
  elapsed = time.perf_counter() - start
  extra = {
    "matmul throughput": "–"
    if args.small_only
    else f"{gflops:.0f} GFLOP/s (float32, {matmul_shape})",
    "runs per contender": str(runs),
    "peak RSS": f"{_timing.peak_rss_mb():.0f} MB",
    "wall time": f"{elapsed:.0f} s",
  }
  notes_file = HERE / "NOTES.md"
  notes = "" if args.quick or not notes_file.exists() else notes_file.read_text()
  command = (
    "python -m benchmarks"
    + (" --quick" if args.quick else "")
    + (" --small-only" if args.small_only else "")
  )
  _report.write(args.out, rows, _timing.machine_info(), extra, notes, command, sections)
  missed = [r for r in rows if not r.met]
  print(
    f"\n{len(rows) - len(missed)}/{len(rows)} comparisons meet their target;"
    f" wrote {args.out / 'RESULTS.md'} in {elapsed:.0f} s"
  )
  return 0


if __name__ == "__main__":
  sys.exit(main())
