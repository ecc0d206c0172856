"""The agent <-> DNS proxy contract: ``fqdndata.proto`` and its generated stubs.

The stubs are committed (no build step for users); ``make proto`` regenerates them
and a unit test fails when they drift from the ``.proto`` file.
"""
