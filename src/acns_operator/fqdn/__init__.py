"""FQDN names and the matchName / matchPattern language, exactly as Cilium 1.19.

Pure code, no I/O; every other layer (validation, the proxy's rule check, the agent's
selector cache) matches names through it so they cannot disagree.

* :mod:`.names`: normalisation (lower-case, dot-terminated).
* :mod:`.patterns`: validation, sanitising and the per-pattern regex (the reference).
* :mod:`.matcher`: selectors, and one compiled matcher per endpoint for fast lookups.
"""
