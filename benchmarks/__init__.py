"""The project's benchmarks: ``python -m benchmarks`` (what ``make bench`` runs).

Each benchmark is one module in this package with a function::

    def run(*, quick: bool = False) -> Record: ...

``run`` measures, then returns a :class:`~benchmarks.record.Record`: its ``name`` (the
module name), ``figures`` (numbers whose keys carry their unit, e.g.
``lookup_hit_median_us``), the ``command`` that reproduces it, and ``notes`` saying
what was measured and how to read it. :func:`~benchmarks.record.make_record` fills in
the date and the machine. With ``quick=True`` the benchmark must do a tiny version
of the same work in about a second: ``python -m benchmarks --check`` runs that to prove
the benchmark still works, and quick figures are never written to the docs.

The runner imports every module here that defines ``run`` (or only those named on
the command line), merges the records into ``docs/benchmarks.json`` keyed by name
(other benchmarks' records are kept), and regenerates ``docs/benchmarks.md`` from
that JSON. So adding a benchmark is adding one module; nothing else to register.

Helpers: :mod:`benchmarks.timing` (batched ``perf_counter_ns`` timing, percentiles),
:mod:`benchmarks.record` (the record and machine facts), :mod:`benchmarks.report`
(JSON merge and Markdown rendering).
"""
