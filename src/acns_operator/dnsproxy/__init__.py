"""dnsproxy."""
