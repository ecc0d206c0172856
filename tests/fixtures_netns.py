"""pytest fixtures for network-namespace test hosts (see acns_operator.local)."""
