"""A seeded generator of rule texts, valid and hostile, for the rule fuzz test.

Rules are built from the language's own pieces (traits, attributes, aggregates, did() and
sequences, functions, case, in, between, like) with literals chosen at the edges: numbers at
and beyond the 64-bit range, durations beyond any timestamp, empty and odd strings (quotes,
NUL, lone surrogates, long text). A share of them is then mutated (cut short, a character
dropped or inserted) so syntax errors are exercised too.
"""

from __future__ import annotations

import random

NUMBERS = [
    "0", "1", "2.5", "-3", "100", "0.0001", "9223372036854775807", "9223372036854775808",
    "18446744073709551616", "1e308", "1e309", "123456789012345678901234567890", "1" * 400,
    "1" * 400 + ".5", "2233775807", ".5",
]  # fmt: skip
DURATIONS = ["1h", "1d", "30d", "8w", "6mo", "1y", "999y", "2471y", "9471y", "99999999mo", "0d"]
STRINGS = [
    "''", "'a'", "'DE'", "'skincare'", "'it''s'", "'%x%'", "'\x00'", "'a\x00b'", "'\udcff'",
    "'ü'", "'" + "x" * 3000 + "'", "' '",
]  # fmt: skip
NUMERIC_TRAITS = [
    "ltv", "orders_count", "aov", "days_since_last_order", "tenure_days", "orders_90d",
    "revenue_total", "discount_share", "return_rate", "median_order_gap_days", "tickets_90d",
    "avg_csat", "mrr", "email_opens_90d", "categories_count", "rfm.score",
]  # fmt: skip
TEXT = ["country", "plan", "top_category", "lifecycle.stage", "email", "rfm.segment"]
TIMES = ["signup_at", "last_order_at", "first_order_at", "now", "date('2024-01-01')"]
TABLES = {"orders": ["amount", "discount", "category", "channel"], "tickets": ["csat"]}
EVENTS = ["'login'", "'checkout'", "'a'", "''", "'x\x00'"]
COMPARE = ["=", "!=", "<", "<=", ">", ">="]


class RuleGen:
    def __init__(self, seed: int) -> None:
        self.r = random.Random(seed)

    def pick(self, items: list[str]) -> str:
        return self.r.choice(items)

    def number(self, depth: int = 0) -> str:
        r = self.r.random()
        if depth > 2 or r < 0.3:
            return self.pick(NUMBERS) if self.r.random() < 0.4 else self.pick(NUMERIC_TRAITS)
        if r < 0.45:
            t, cols = self.r.choice(list(TABLES.items()))
            fn = self.pick(["sum", "avg", "min", "max", "count_distinct", "median"])
            where = f" where {self.pick(cols)} is not null" if self.r.random() < 0.3 else ""
            within = f" within {self.pick(DURATIONS)}" if self.r.random() < 0.3 else ""
            if fn == "count_distinct" or self.r.random() < 0.2:
                return f"count({t}{where}{within})"
            return f"{fn}({t}.{self.pick(cols)}{where}{within})"
        if r < 0.6:
            op = self.pick(["+", "-", "*", "/"])
            return f"({self.number(depth + 1)} {op} {self.number(depth + 1)})"
        if r < 0.7:
            return f"round({self.number(depth + 1)}, {self.pick(['0', '2', '-1', '2233775807'])})"
        if r < 0.78:
            fn = self.pick(["abs", "coalesce", "least", "greatest"])
            args = [self.number(depth + 1) for _ in range(1 if fn == "abs" else 2)]
            return f"{fn}({', '.join(args)})"
        if r < 0.86:
            return f"days_since({self.pick(TIMES)})"
        if r < 0.92:
            return f"-{self.number(depth + 1)}"
        return f"ntile({self.pick(NUMERIC_TRAITS)}, {self.pick(['4', '10', '0'])})"

    def text(self) -> str:
        r = self.r.random()
        if r < 0.6:
            return self.pick(TEXT)
        if r < 0.8:
            return self.pick(STRINGS)
        return f"{self.pick(['lower', 'upper'])}({self.pick(TEXT)})"

    def time(self) -> str:
        base = self.pick(TIMES)
        if self.r.random() < 0.5:
            return f"{base} {self.pick(['+', '-'])} {self.pick(DURATIONS)}"
        return base

    def cond(self, depth: int = 0) -> str:
        r = self.r.random()
        if depth > 3:
            r = r * 0.5
        if r < 0.25:
            return f"{self.number()} {self.pick(COMPARE)} {self.number()}"
        if r < 0.35:
            return f"{self.text()} {self.pick(['=', '!='])} {self.text()}"
        if r < 0.42:
            return f"{self.time()} {self.pick(COMPARE)} {self.time()}"
        if r < 0.5:
            items = ", ".join(self.pick(STRINGS) for _ in range(self.r.randint(1, 4)))
            return f"{self.pick(TEXT)} in ({items})"
        if r < 0.55:
            return f"{self.number()} between {self.number()} and {self.number()}"
        if r < 0.6:
            return f"{self.pick(TEXT)} like {self.pick(STRINGS)}"
        if r < 0.65:
            return f"{self.pick([*TEXT, *NUMERIC_TRAITS])} is {self.pick(['', 'not '])}null"
        if r < 0.72:
            within = f" within {self.pick(DURATIONS)}" if self.r.random() < 0.5 else ""
            return f"{self.pick(['did', 'did_not'])}({self.pick(EVENTS)}{within})"
        if r < 0.76:
            neg = self.pick(["", "not "])
            return (
                f"did({self.pick(EVENTS)}) then {neg}did({self.pick(EVENTS)}) "
                f"within {self.pick(DURATIONS)}"
            )
        if r < 0.8:
            segment = self.pick(["'value.buyers'", "'nope.x'", "''"])
            return f"in_segment({segment})"
        if r < 0.84:
            return f"contains({self.text()}, {self.pick(STRINGS)})"
        if r < 0.88:
            return (
                f"case when {self.cond(depth + 1)} then {self.number()} "
                f"else {self.number()} end > {self.number()}"
            )
        if r < 0.93:
            return f"not ({self.cond(depth + 1)})"
        return f"({self.cond(depth + 1)}) {self.pick(['and', 'or'])} ({self.cond(depth + 1)})"

    def rule(self) -> str:
        text = self.cond()
        if self.r.random() < 0.15:  # a typo: cut short, a character dropped or inserted
            i = self.r.randrange(len(text) + 1)
            kind = self.r.random()
            if kind < 0.33:
                text = text[:i]
            elif kind < 0.66:
                text = text[:i] + text[i + 1 :]
            else:
                text = text[:i] + self.pick(list("()',.=<>!*%\"\\;#x0 ")) + text[i:]
        return text
