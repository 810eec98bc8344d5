"""Identity resolution: one ``customer_key`` per real person (DESIGN.md section 3).

Reads sources only; never imports segments, rules or activation.
"""
