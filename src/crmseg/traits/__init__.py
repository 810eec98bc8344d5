"""Traits: per-customer values (built-in library in builtin.py)."""

from crmseg.traits.builtin import library

__all__ = ["library"]
