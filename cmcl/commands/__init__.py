"""The `cmcl` subcommands, one module per group (registered in cmcl/cli.py)."""
