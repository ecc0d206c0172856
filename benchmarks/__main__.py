"""``python -m benchmarks [NAME...] [--check] [--list]``; see :mod:`benchmarks`."""

from __future__ import annotations

from benchmarks.runner import main

raise SystemExit(main())
