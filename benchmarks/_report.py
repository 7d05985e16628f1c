"""Writes RESULTS.md, results.json and the two plots from measured rows."""

from __future__ import annotations

import dataclasses
import json
import pathlib

from ._cases import Row


def _ms(t: float) -> str:
  return f"{t * 1e3:.3g}"


def _mb(b: int | None) -> str:
  return "–" if b is None else f"{b / 2**20:.1f}"


def _target(row: Row) -> str:
  parts = []
  if row.target is not None:
    parts.append(f"time <= {row.target:.2f}")
  if row.mem_target is not None:
    parts.append(f"memory <= 1/{round(1 / row.mem_target)}")
  return ", ".join(parts) or "–"


def table(rows: list[Row]) -> str:
  head = (
    "| case | size | peer | ours (ms) | peer (ms) | ratio | temp MB ours / peer"
    " | memory ratio | target | met | limit (ms) | ours at % of limit |\n"
    "|---|---|---|---|---|---|---|---|---|---|---|---|\n"
  )
  lines = []
  for r in rows:
    mem = f"{_mb(r.mem_ours)} / {_mb(r.mem_peer)}"
    mem_ratio = "–" if r.mem_ratio is None else f"{r.mem_ratio:.3f}"
    limit = "–" if r.t_limit is None else f"{_ms(r.t_limit)} ({r.limit_name})"
    frac = "–" if r.t_limit is None else f"{100 * r.t_limit / r.t_ours:.0f}%"
    lines.append(
      f"| {r.case} | {r.size} | {r.peer} | {_ms(r.t_ours)} | {_ms(r.t_peer)}"
      f" | **{r.ratio:.2f}** | {mem} | {mem_ratio} | {_target(r)}"
      f" | {'yes' if r.met else '**no**'} | {limit} | {frac} |"
    )
  return head + "\n".join(lines) + "\n"


def error_table(rows: list[Row]) -> str:
  """The gradient error against float64 of each contender in the rows that
  measured it (the 16-bit rows), beside the time ratio."""
  head = (
    "| case | size | peer | ratio | gradient error ours | gradient error peer |\n"
    "|---|---|---|---|---|---|\n"
  )
  lines = [
    f"| {r.case} | {r.size} | {r.peer} | {r.ratio:.2f} | {r.err_ours:.2e}"
    f" | {r.err_peer:.2e} |"
    for r in rows
    if r.err_ours is not None and r.err_peer is not None
  ]
  return head + "\n".join(lines) + "\n" if lines else ""


def notes_section(notes: str) -> str:
  """RESULTS.md's closing notes: benchmarks/NOTES.md as it stands (one source;
  a test checks that the committed RESULTS.md ends with it)."""
  return "\n" + notes.strip() + "\n" if notes.strip() else ""


def write(
  out: pathlib.Path,
  rows: list[Row],
  info: dict[str, str],
  extra: dict[str, str],
  notes: str,
  command: str,
  sections: dict[str, str] | None = None,
) -> None:
  out.mkdir(parents=True, exist_ok=True)
  facts = "\n".join(f"- {k}: {v}" for k, v in {**info, **extra}.items())
  text = (
    "# Benchmark results\n\n"
    f"Written by `{command}` from a real run of the committed code."
    " Every ratio is ours / peer, as medians over interleaved runs in one"
    " process; memory is XLA's compiled temp allocation"
    " (`memory_analysis().temp_size_in_bytes`), which is deterministic."
    " The limit column is the physical bound measured in the same run: a"
    " jitted elementwise exp over the same array, or three plain matmuls"
    " of the linear CE's shapes.\n\n"
    f"## Machine\n\n{facts}\n\n## Results\n\n{table(rows)}\n"
    "![ratios](ratios.png)\n\n![linear CE memory](linear_memory.png)\n"
  )
  errors = error_table(rows)
  if errors:
    text += (
      "\n## 16-bit inputs: gradient error against float64\n\n"
      "Each contender's gradient, `max |g - g64| / max |g64|` over its entries"
      " (the worse of dx and dw), against plain autodiff in float64 of the"
      " same 16-bit inputs. Rounding the exact gradient gives 2.0e-3 to 3.9e-3"
      " in bfloat16 and 2.4e-4 to 4.9e-4 in float16.\n\n" + errors
    )
  for title, body in (sections or {}).items():
    text += f"\n## {title}\n\n{body.strip()}\n"
  (out / "RESULTS.md").write_text(text + notes_section(notes))
  payload = {
    "machine": info,
    "extra": extra,
    "rows": [
      {
        **dataclasses.asdict(r),
        "ratio": r.ratio,
        "mem_ratio": r.mem_ratio,
        "met": r.met,
      }
      for r in rows
    ],
  }
  (out / "results.json").write_text(json.dumps(payload, indent=1) + "\n")
  _plots(out, rows, info)


def _plots(out: pathlib.Path, rows: list[Row], info: dict[str, str]) -> None:
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  fig, ax = plt.subplots(figsize=(10, 0.32 * len(rows) + 1.6))
  labels = [f"{r.case} {r.size} vs {r.peer}" for r in rows]
  ratios = [r.ratio for r in rows]
  colors = ["tab:green" if r.met else "tab:red" for r in rows]
  ys = range(len(rows))
  ax.barh(ys, ratios, color=colors)
  for y, r in zip(ys, rows, strict=True):
    if r.target is not None:
      ax.plot([r.target, r.target], [y - 0.4, y + 0.4], color="black", lw=1.5)
  ax.axvline(1.0, color="gray", ls=":", lw=1)
  ax.set_yticks(list(ys), labels, fontsize=7)
  ax.invert_yaxis()
  ax.set_xscale("log")
  ax.set_xlabel("time ratio ours / peer (log scale; black tick = target)")
  ax.set_title(f"jaxsmx vs peers, {info['cpu']}, {info['cores']} cores", fontsize=9)
  fig.tight_layout()
  fig.savefig(out / "ratios.png", dpi=110)
  plt.close(fig)

  # float32 inputs (the 16-bit rows have their own case names)
  lin = [r for r in rows if r.case == "fused linear CE value_and_grad" and r.mem_ours]
  fig, ax = plt.subplots(figsize=(6, 4))
  vs = sorted({int(r.size.split("V=")[1]) for r in lin})
  if vs:
    ours = {int(r.size.split("V=")[1]): r.mem_ours for r in lin}
    ax.plot(vs, [ours[v] / 2**20 for v in vs], "o-", label="jaxsmx (fused)")
    for peer in sorted({r.peer for r in lin}):
      pts = sorted(
        (int(r.size.split("V=")[1]), r.mem_peer)
        for r in lin
        if r.peer == peer and r.mem_peer
      )
      ax.plot([p[0] for p in pts], [p[1] / 2**20 for p in pts], "s--", label=peer)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("vocabulary size V")
    ax.set_ylabel("XLA temp memory (MiB), value_and_grad")
    ax.set_title(f"Linear CE memory, N={lin[0].size.split()[0][2:]}", fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(True, which="both", alpha=0.3)
  fig.tight_layout()
  fig.savefig(out / "linear_memory.png", dpi=110)
  plt.close(fig)
