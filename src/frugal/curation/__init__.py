"""Curation: the s1K selection pipeline, one module per concern."""
