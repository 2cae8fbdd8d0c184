"""Random and hostile rule strings for testing the parser, the VM and LaTeX export together.

``fuzz(n, seed)`` yields (text, outcome, seconds): outcome is "ok" (parsed, compiled, evaluated,
printed), "refused" (a one-line GrammarError) or "crash: <type>" (anything else, a defect).
"""
from __future__ import annotations

import random
import time
from typing import Iterator

import numpy as np

from .errors import GrammarError
from .grammar import Grammar
from .rules import parse_rule
from .vm import evaluate, pack

TOKENS = ["x", "y", "w", "r", "rbar", "z", "0", "1", "2.5", "-3", "1e308", "1e400", "1e-400", "nan", "inf", "+", "-",
          "*", "/", "**", "**64", "**-1", "(", ")", ",", " ", "tanh(", "exp(", "abs(", "square(", "cube(", "neg(",
          "__import__('os')", "lambda: 0", ";", ":", "ff:", "[", "]", ".", "'", '"', "\\", "@", "%", "//", "^", "~",
          "not ", " and ", " if ", " else ", "True", "None", "x.real", "{}", "0x1f", "1_000", "\n", "\t", "é"]


def _hostile(rng: random.Random) -> str:
    kind = rng.random()
    if kind < 0.5:  # random token soup
        return "".join(rng.choice(TOKENS) for _ in range(rng.randint(1, 40)))
    if kind < 0.7:  # deep nesting
        n = rng.choice([10, 100, 1000, 5000])
        return "(" * n + rng.choice(["x", "x*y", "x**64"]) + ")" * n
    if kind < 0.85:  # towers of powers
        e = "x"
        for _ in range(rng.randint(1, 6)):
            e = f"({e})**{rng.choice([2, 3, 16, 63, 64, 65, -64])}"
        return e
    return "+".join(rng.choice(["x*y", "w", "y**2*w", "tanh(x)", "1e308*x"]) for _ in range(rng.randint(1, 5000)))


def _probe(n_in: int = 5, n_out: int = 3):
    rng = np.random.default_rng(0)
    return (rng.normal(size=(1, 2, n_in)), rng.normal(size=(1, 2, n_out)), rng.normal(size=(1, 2 * n_out * n_in)),
            rng.normal(size=(2, 2)))


def fuzz(n: int, grammar: Grammar, seed: int = 0) -> Iterator[tuple[str, str, float]]:
    rng = random.Random(seed)
    pre, post, syn, trial = _probe()
    for _ in range(n):
        text = _hostile(rng)
        start = time.perf_counter()
        try:
            rule = parse_rule(text, grammar, limits=True)
            values = evaluate(pack(list(rule.programs())), pre, post, syn, trial[:1])
            assert values.shape[0] == 1
            rule.latex()
            outcome = "ok"
        except GrammarError as exc:
            outcome = "refused" if "\n" not in str(exc) else "crash: multi-line message"
        except Exception as exc:  # noqa: BLE001 - every other exception is a defect to report
            outcome = f"crash: {type(exc).__name__}: {exc}"
        yield text, outcome, time.perf_counter() - start
