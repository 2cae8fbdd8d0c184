"""Noise-aware selection: the simplest rule within the sampling noise of the best, paired over units."""
import numpy as np
import pytest

from conftest import ROOT
from rulesearch.errors import TaskError
from rulesearch.fronts import FrontEntry, select_rule, select_within_noise
from rulesearch.sims.choice import simulate_choices
from rulesearch.tasks import load_task, with_data

FLY = str(ROOT / "tasks" / "fly-choice.toml")


def _front(task, losses):
    texts = ("x*r", "x*(r - rbar)", "1.14*x*(r - rbar)", "x*(r - rbar) - 0.01*y")
    rules = [task.parse(t) for t in texts]
    return [FrontEntry(r, l, r.complexity) for r, l in zip(rules, losses)]


def test_noise_selection_on_a_constructed_front():
    task = load_task(FLY, require_data=False)
    rng = np.random.default_rng(0)
    n = 6
    base = rng.uniform(50, 60, n)  # the best rule's loss per animal
    units = np.stack([base + np.array([9, 11, 10, 12, 8, 10.0]),  # clearly worse: excess 60, SE sqrt(6)*1.4
                      base + np.array([1.0, -1.0, 2.0, -2.0, 1.5, -0.5]),  # excess 1, SE ~ sqrt(6)*1.5: noise
                      base + np.array([0.5, -0.5, 0.2, 0.1, 0.1, 0.0]),  # excess 0.4
                      base])
    front = _front(task, units.sum(axis=1))
    index, info = select_within_noise(front, units, 1.0, "animals")
    assert index == 1 and front[index].expression == "x*(r - rbar)"
    d = units[1] - units[3]
    assert info["excess"][1] == pytest.approx(d.sum()) and info["se"][1] == pytest.approx(np.sqrt(n) * d.std(ddof=1))
    assert info["within_noise"] == [False, True, True, True] and info["units"] == "animals" and info["n_units"] == 6
    # no tolerance for noise: only the best; the fixed relative tolerance (0.2 %) also stays available
    assert select_within_noise(front, units, 0.0)[0] == 3
    assert select_rule(front, 0.002, 0.0) == 2
    # a rule with a blown-up unit never qualifies, however simple
    units[1, 2] = np.inf
    index, info = select_within_noise(front, units, 1.0)
    assert index == 2 and info["excess"][1] is None and info["within_noise"][1] is False


def test_unit_losses_sum_to_the_loss_and_noise_selection_needs_them():
    task = load_task(FLY, ("protocol.trials_per_block=20", "protocol.animals=3", "search.selection=\"noise\""),
                     require_data=False, seed=1)
    task = with_data(task, simulate_choices(task, task.parse("x*(r - rbar)"), seed=1))
    rules = [task.parse(t) for t in ("x*(r - rbar)", "0", "rbar + w")]
    units = task.unit_losses(rules)
    assert units.shape == (3, 3)
    np.testing.assert_allclose(units[:2].sum(axis=1), task.evaluate(rules)[:2], rtol=1e-12)
    assert np.all(np.isinf(units[2]))  # blew up
    with pytest.raises(TaskError, match="'search.selection' is 'noise': objective 'pca' has no per-animal"):
        load_task(ROOT / "tasks" / "oja.toml", ("search.selection=\"noise\"",))
    with pytest.raises(TaskError, match="search.selection"):
        load_task(FLY, ("search.selection=\"best\"",), require_data=False)
