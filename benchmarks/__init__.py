"""Side-by-side benchmarks of jaxsmx against jax.nn, optax, torch and jax-cce.

Run ``python -m benchmarks`` (or ``make bench``); ``--quick`` runs a reduced
set in under a minute. Every case runs its contenders interleaved (ours, peer,
ours, peer, ...) in one process and reports the ratio of medians, which holds
on a noisy shared machine where absolute times drift. Memory claims come from
XLA's compiled ``memory_analysis()``, which is deterministic.
"""
