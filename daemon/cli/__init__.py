"""The `sottovoce` command line: one module per group of subcommands."""
