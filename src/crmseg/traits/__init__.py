"""Traits: per-customer values (built-in library in builtin.py)."""
