"""One module per ``acns`` subcommand: thin click wrappers over the library."""
