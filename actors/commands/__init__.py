"""Subcommands of the ``ensemble`` CLI, one per file."""
