"""Segments: the catalog of definitions, runs and membership history."""
