"""Data-quality checks on the sources, before identity resolution and segments.

Reads sources only; never imports identity, segments, rules or activation.
"""
