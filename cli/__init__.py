"""mvd_cli: the `mvd` command line (typer)."""
