"""The `ndm` command line: one module per group of subcommands."""
