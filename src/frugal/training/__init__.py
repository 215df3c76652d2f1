"""Pieces of `frugal train` that TRL leaves to the caller: model set-up and callbacks."""
