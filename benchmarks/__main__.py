"""``python -m benchmarks [--quick | --smoke] [--small-only | --low-precision-only]
[--out DIR]``: measure and write RESULTS.md."""

from __future__ import annotations

import os

# torch's OpenMP workers otherwise busy-wait after each call, stealing the
# cores from the JAX call timed next; set before torch is imported
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import pathlib
import sys
import time

from . import _cases, _low_precision, _report, _small, _timing

HERE = pathlib.Path(__file__).parent


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
  parser.add_argument(
    "--quick", action="store_true", help="small sizes and few runs (< 1 min)"
  )
  parser.add_argument(
    "--smoke",
    action="store_true",
    help="the smallest size of each case, to check that all of them run"
    " (seconds; the figures mean nothing)",
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
  parser.add_argument(
    "--low-precision-only",
    action="store_true",
    help="only the 16-bit rows (bfloat16 and float16): the fused loss in both"
    " modes and the integer-label CE against dense on float32 and 16-bit logits",
  )
  args = parser.parse_args(argv)

  if args.smoke:
    runs = args.runs or 1
    sizes = [(32, 10)]
    linear = [(64, 16, 256)]
    matmul_shape = (64, 16, 256)
    low_linear, low_ce = [(64, 16, 256)], [(64, 256)]
  elif args.quick:
    runs = args.runs or 3
    sizes = [(32, 10), (256, 1000)]
    linear = [(256, 64, 1024), (256, 64, 4096)]
    matmul_shape = (256, 64, 4096)
    low_linear, low_ce = [(256, 64, 1024)], [(256, 1024)]
  else:
    runs = args.runs or 9
    sizes = [(32, 10), (256, 1000), (2048, 32768)]
    linear = [(4096, 512, 8192), (4096, 512, 32768), (4096, 512, 131072)]
    matmul_shape = (4096, 512, 32768)
    vocab = (8192, 32768, 131072)
    # N = 2048: the 16-bit rows, in both dtypes and against two peers with
    # float64 references, are the longest part of the run
    low_linear = [(2048, 512, v) for v in vocab]
    low_ce = [(2048, v) for v in vocab]

  if args.small_only and args.low_precision_only:
    parser.error("--small-only and --low-precision-only exclude each other")
  if args.small_only:
    sizes, linear, low_linear, low_ce = [], [], [], []
  if args.low_precision_only:
    sizes, linear = [], []
  # the float32 cases at scale, the matmul throughput and the Gemma table
  everything = not (args.small_only or args.low_precision_only)

  start = time.perf_counter()
  rows: list[_cases.Row] = []
  # small models: per-call overhead (dispatch, effects) is what a user feels
  small_runs = runs if args.smoke else max(runs, 5)
  small = []
  if not args.low_precision_only:
    small = [r for c in (10, 1000) for r in _small.train_step(c, small_runs)]
    small += _small.eager_calls(small_runs)
  for r in small:
    print(f"{r.case:52s} {r.size:16s} vs {r.peer:28s} ratio {r.ratio:6.2f}", flush=True)
  rows += small
  for n, c in sizes:
    for case in (
      _cases.softmax_forward,
      _cases.log_softmax_vag,
      _cases.integer_ce_vag,
      _cases.soft_ce_vag,
      _cases.softmax_entropy_vag,
      *_cases.FAMILY,
    ):
      new = case(n, c, runs)
      rows += new
      for r in new:
        print(
          f"{r.case:34s} {r.size:12s} vs {r.peer:36s} ratio {r.ratio:6.2f}", flush=True
        )
  for n, h, v in linear:
    new = (
      _cases.linear_ce_vag(n, h, v, runs)
      + _cases.linear_ce_reduced_vag(n, h, v, runs)
      + _cases.linear_ce_class_weights_vag(n, h, v, runs)
    )
    rows += new
    for r in new:
      mem = "" if r.mem_ratio is None else f"  memory {r.mem_ratio:.3f}"
      print(
        f"{r.case:34s} {r.size:18s} vs {r.peer:22s} ratio {r.ratio:6.2f}{mem}",
        flush=True,
      )
  rows += _low_precision.all_rows(low_linear, low_ce, runs, report=_print_low)
  gflops = _cases.matmul_gflops(*matmul_shape, runs) if everything else 0.0
  # compile only (nothing runs), so the full Gemma 2 (2B) shape even in --quick
  sections = (
    {"Memory at Gemma 2 (2B) scale": _cases.gemma_memory_table()} if everything else {}
  )
  elapsed = time.perf_counter() - start
  extra = {
    "matmul throughput": f"{gflops:.0f} GFLOP/s (float32, {matmul_shape})"
    if everything
    else "–",
    "runs per contender": str(runs),
    "peak RSS": f"{_timing.peak_rss_mb():.0f} MB",
    "wall time": f"{elapsed:.0f} s",
  }
  notes_file = HERE / "NOTES.md"
  brief = args.quick or args.smoke
  notes = "" if brief or not notes_file.exists() else notes_file.read_text()
  flags = ("quick", "smoke", "small_only", "low_precision_only")
  command = "python -m benchmarks" + "".join(
    f" --{f.replace('_', '-')}" for f in flags if getattr(args, f)
  )
  _report.write(args.out, rows, _timing.machine_info(), extra, notes, command, sections)
  missed = [r for r in rows if not r.met]
  print(
    f"\n{len(rows) - len(missed)}/{len(rows)} comparisons meet their target;"
    f" wrote {args.out / 'RESULTS.md'} in {elapsed:.0f} s"
  )
  return 0


def _print_low(rows: list[_cases.Row]) -> None:
  for r in rows:
    print(
      f"{r.case:48s} {r.size:20s} vs {r.peer:32s} ratio {r.ratio:6.2f}"
      f"  memory {r.mem_ratio or 0:.3f}"
      f"  gradient error {r.err_ours:.1e} / {r.err_peer:.1e}",
      flush=True,
    )


if __name__ == "__main__":
  sys.exit(main())
