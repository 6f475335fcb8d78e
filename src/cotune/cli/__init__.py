"""The `cotune` command line."""

from cotune.cli.app import app, main

__all__ = ["app", "main"]
