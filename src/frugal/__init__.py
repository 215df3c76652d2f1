"""frugal: turn a small open-weight language model into a cheap specialist that reasons."""

__version__ = "0.1.0"
