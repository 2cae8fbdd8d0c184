"""Parametric rule families that run on the same VM as GP rules (first part of issue 4).

``TaylorFamily``: dw = sum over exponent tuples (a, b, c, ...) of theta_abc x^a y^b w^c,
powers 0..max_power per variable (27 terms for x, y, w at power 2). A coefficient
vector becomes an ordinary ``Rule``, so a family fit is evaluated exactly like a
GP population.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .grammar import Grammar
from .rules import Rule, integer_power


@dataclass(frozen=True)
class TaylorFamily:
    """Truncated Taylor (Volterra) expansion over chosen grammar terminals."""

    grammar: Grammar
    variables: tuple[str, ...]
    max_power: int = 2

    def __post_init__(self):
        unknown = [v for v in self.variables if v not in self.grammar.names]
        if unknown:
            raise ValueError(f"Invalid variable {unknown[0]!r} for the Taylor family. "
                             f"Valid options: {', '.join(self.grammar.names)}")
        if not 0 <= self.max_power <= 6:
            raise ValueError(f"max_power {self.max_power}: expected 0..6")

    @property
    def terms(self) -> list[tuple[int, ...]]:
        """Exponent tuples in a fixed order (the order of coefficient vectors)."""
        return list(itertools.product(range(self.max_power + 1), repeat=len(self.variables)))

    def term_name(self, exponents: Sequence[int]) -> str:
        """``theta_x1_y1_w0`` for x*y."""
        return "theta_" + "_".join(f"{v}{p}" for v, p in zip(self.variables, exponents))

    @property
    def names(self) -> list[str]:
        return [self.term_name(e) for e in self.terms]

    def monomial_text(self, exponents: Sequence[int]) -> str:
        """``x*y`` for (1, 1, 0); ``1`` for the constant term."""
        parts = [v if p == 1 else f"{v}**{p}" for v, p in zip(self.variables, exponents) if p]
        return "*".join(parts) or "1"

    def rule(self, coefficients: Sequence[float]) -> Rule:
        """The rule sum_k coefficients[k] * monomial_k (zero coefficients are left out)."""
        coefficients = np.asarray(coefficients, float)
        if coefficients.shape != (len(self.terms),):
            raise ValueError(f"expected {len(self.terms)} coefficients, got shape {coefficients.shape}")
        g = self.grammar
        expr: list = []
        for c, exps in zip(coefficients, self.terms):
            if c == 0.0:
                continue
            term = [("const", float(c))]
            for v, p in zip(self.variables, exps):
                if p:
                    term = [("op", "mul")] + term + integer_power([("var", v)], p, g)
            expr = term if not expr else [("op", "add")] + expr + term
        return Rule((tuple(expr or [("const", 0.0)]),), g)
