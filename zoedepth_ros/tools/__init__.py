"""Command-line tools, one file per command."""
