"""fqdn."""
