"""Lockstep constant optimisation: the same results as one rule at a time, in fewer calls."""
import numpy as np
import pytest

from rulesearch.fronts import optimise_constants
from rulesearch.lockstep import run_lockstep
from rulesearch.grammar import find_grammar, load_grammar
from rulesearch.rules import parse_rule

TARGETS = np.array([0.7, -0.3, 1.9])


def _loss(rules):
    """A smooth loss of each rule's constants (distance to TARGETS) that counts its calls."""
    _loss.calls += 1
    out = []
    for r in rules:
        c = np.array(r.constants(), float)
        out.append(float(np.sum((c - TARGETS[:len(c)]) ** 2) + 0.1 * np.sum(c ** 4)))
    return np.array(out)


_loss.calls = 0


@pytest.fixture
def rules():
    g = load_grammar(find_grammar("hebbian"))
    return [parse_rule(t, g) for t in ["0.5*x*y", "0.1*x - 0.2*w", "0.3*y*(x - 0.9*w)", "x*y"]]


def test_lockstep_equals_sequential_in_fewer_calls(rules):
    _loss.calls = 0
    alone = [optimise_constants(r, _loss, float(_loss([r])[0]), max_iter=30) for r in rules]
    sequential_calls = _loss.calls
    starts = [float(_loss([r])[0]) for r in rules]
    _loss.calls = 0
    together = run_lockstep([lambda loss, r=r, s=s: optimise_constants(r, loss, s, max_iter=30)
                             for r, s in zip(rules, starts)], _loss)
    assert [None if r is None else r.constants() for r in together] == \
        [None if r is None else r.constants() for r in alone]
    assert alone[-1] is None  # a rule without constants has nothing to tune
    assert _loss.calls < sequential_calls / 2


def test_lockstep_raises_a_jobs_error(rules):
    def bad(loss):
        loss(rules[:1])
        raise ValueError("job failed")
    with pytest.raises(ValueError, match="job failed"):
        run_lockstep([bad, lambda loss: loss(rules) is not None], _loss)


def test_lockstep_raises_an_evaluation_error(rules):
    def broken(batch):
        raise RuntimeError("evaluator down")
    with pytest.raises(RuntimeError, match="evaluator down"):
        run_lockstep([lambda loss: loss(rules)] * 3, broken)
