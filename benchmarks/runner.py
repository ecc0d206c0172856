"""Find the benchmark modules, run them, check their records, write the reports."""

from __future__ import annotations

import argparse
import importlib
import math
import pkgutil
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

import benchmarks
from benchmarks.record import Record
from benchmarks.report import write_reports

__all__ = ["Benchmark", "check_record", "discover", "main", "run_benchmarks"]

DOCS = Path(__file__).resolve().parent.parent / "docs"


class Benchmark(Protocol):
    """The one function a benchmark module provides."""

    def __call__(self, *, quick: bool = False) -> Record: ...


def discover() -> dict[str, Benchmark]:
    """Return every module of the package that defines ``run``, by module name."""
    found: dict[str, Benchmark] = {}
    for info in pkgutil.iter_modules(benchmarks.__path__):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"benchmarks.{info.name}")
        run: Callable[..., Record] | None = getattr(module, "run", None)
        if callable(run):
            found[info.name] = run
    return dict(sorted(found.items()))


def check_record(record: Record, name: str) -> list[str]:
    """List what is wrong with ``record`` as the result of benchmark ``name``."""
    problems = []
    if record.name != name:
        problems.append(f"record is named {record.name!r}, module is {name!r}")
    if not record.figures:
        problems.append("no figures")
    for key, value in record.figures.items():
        if not isinstance(value, int | float) or not math.isfinite(value):
            problems.append(f"figure {key!r} is not a finite number: {value!r}")
    if not record.command:
        problems.append("no reproducing command")
    return problems


def run_benchmarks(names: Sequence[str], *, quick: bool) -> list[Record]:
    """Run the named benchmarks (all when ``names`` is empty) and return their records."""
    available = discover()
    unknown = [name for name in names if name not in available]
    if unknown:
        raise SystemExit(
            f"unknown benchmark(s): {', '.join(unknown)}; available: {', '.join(available)}"
        )
    records = []
    for name in names or list(available):
        print(f"running {name}{' (quick)' if quick else ''} ...", file=sys.stderr, flush=True)
        records.append(available[name](quick=quick))
    return records


def _print(record: Record) -> None:
    print(f"{record.name}:")
    for key, value in record.figures.items():
        print(f"  {key:<40} {value:g}")


def main(argv: Sequence[str] | None = None) -> int:
    """Run benchmarks from the command line; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Run the benchmarks and record them in docs/benchmarks.{json,md}.",
    )
    parser.add_argument("names", nargs="*", help="benchmarks to run (default: all)")
    parser.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    parser.add_argument(
        "--check",
        action="store_true",
        help="run a tiny version of each and validate the records; writes nothing",
    )
    parser.add_argument(
        "--docs", type=Path, default=DOCS, help="where benchmarks.json/.md live (default: docs/)"
    )
    args = parser.parse_args(argv)
    if args.list:
        print("\n".join(discover()))
        return 0
    records = run_benchmarks(args.names, quick=args.check)
    failed = False
    for record in records:
        _print(record)
        for problem in check_record(record, record.name):
            failed = True
            print(f"  PROBLEM: {problem}", file=sys.stderr)
    if args.check:
        return 1 if failed else 0
    if failed:
        print("not writing reports: some records are invalid", file=sys.stderr)
        return 1
    write_reports(records, args.docs)
    print(f"wrote {args.docs / 'benchmarks.json'} and {args.docs / 'benchmarks.md'}")
    return 0
