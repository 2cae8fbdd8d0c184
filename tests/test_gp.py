"""The search: semantic de-duplication, selection, seeded recovery of Oja's rule, resume."""
import json

import pytest
import sympy

from conftest import ROOT
from rulesearch.fronts import FrontEntry, pareto_front, select_rule
from rulesearch.gp import Languages, Search, evolve, semantic_keys, subtree_end
from rulesearch.rules import RuleSpace, parse_rule, symbol
from rulesearch.tasks import WORST_LOSS, load_task

OJA = ROOT / "tasks" / "oja.toml"
SMALL = ["inputs.steps=600", "network.eta=0.01"]


def is_oja(rule):
    x, y, w = (symbol(n) for n in "xyw")
    ratio = sympy.simplify(rule.to_sympy()[0] / (x * y - y**2 * w))
    return ratio.is_number and float(ratio) > 0


def test_semantic_keys_merge_equal_functions(full):
    rules = [parse_rule(t, full) for t in ["x*y", "y*x", "(x*y + w) - w", "x*y + 1e-3", "y*(x - y*w)",
                                              "x*y - square(y)*w"]]
    keys = semantic_keys(rules)
    assert keys[0] == keys[1] == keys[2]
    assert keys[3] != keys[0]
    assert keys[4] == keys[5]


def test_pareto_and_selection(hebbian):
    front = [FrontEntry(parse_rule("x", hebbian), 0.5, 1), FrontEntry(parse_rule("x*y", hebbian), 0.011, 3),
             FrontEntry(parse_rule("x*y - w", hebbian), 0.010, 5)]
    assert select_rule(front, rel_tol=0.2, abs_tol=0.0) == 1
    assert select_rule(front, rel_tol=0.0, abs_tol=0.0) == 2
    assert [c for _, c, _ in pareto_front([(0.3, 3, "a"), (0.2, 5, "b"), (0.4, 4, "c"), (0.3, 2, "d")])] == [2, 5]


def test_language_round_trip(hebbian):
    lang = Languages.from_space(RuleSpace.single(hebbian))
    rule = parse_rule("0.25*x*y - square(y)*w", hebbian)
    ind = lang.individual(rule)
    assert lang.rule(ind) == rule
    assert str(ind[0]).startswith("sub(")


def test_subtree_end(hebbian):
    expr = parse_rule("x*y - square(y)*w", hebbian).exprs[0]
    assert subtree_end(expr, 0) == len(expr)
    assert subtree_end(expr, 1) == 4  # mul x y


def test_blow_up_gets_worst_loss():
    task = load_task(OJA, SMALL, seed=1)
    losses = task.evaluate([task.parse("x*y"), task.parse("x*y - y**2*w"), task.parse("w*100")])
    assert losses[0] == WORST_LOSS and losses[2] == WORST_LOSS
    assert losses[1] < 0.05


@pytest.mark.slow
def test_small_search_finds_oja():
    task = load_task(OJA, SMALL, seed=2)
    result = evolve(task, population=400, generations=25)
    assert is_oja(result.selected.rule), result.selected.expression
    assert sum(e.selected for e in result.front) == 1
    assert [e.complexity for e in result.front] == sorted(e.complexity for e in result.front)
    # each function once: x*y - w*y**2 and y*(x - w*y) differ only in rounding, not in meaning
    expanded = [sympy.expand(e.rule.to_sympy()[0]) for e in result.front]
    assert len(set(expanded)) == len(expanded), [e.expression for e in result.front]


@pytest.mark.parametrize("restart_every", [0, 2])
def test_resume_equals_uninterrupted(restart_every):
    task = load_task(OJA, SMALL + ["inputs.trials=2", f"search.restart_every={restart_every}"], seed=5)
    saved = []
    full = Search(task, seed=5, population=60, generations=6).run(checkpoint=lambda s: saved.append(json.dumps(s)))
    search = Search(task, seed=5, population=60, generations=6)
    state = search.state_from_json(json.loads(saved[3]))  # after generation 3
    resumed = search.run(state)
    assert [(e.expression, e.loss) for e in resumed.front] == [(e.expression, e.loss) for e in full.front]
    assert resumed.evaluations == full.evaluations
    assert json.loads(saved[-1])["population"] == search.state_to_json(state)["population"]


def test_same_seed_same_front():
    task = load_task(OJA, SMALL + ["inputs.trials=2"], seed=7)
    a = evolve(task, population=50, generations=3)
    b = evolve(task, population=50, generations=3)
    assert [(e.expression, e.loss) for e in a.front] == [(e.expression, e.loss) for e in b.front]


PCA = ROOT / "tasks" / "pca-network.toml"
PCA_SMALL = ["inputs.steps=300", "inputs.trials=2"]


def test_two_pathway_resume_equals_uninterrupted_and_varies_pathways_jointly():
    task = load_task(PCA, PCA_SMALL, seed=3)
    saved = []
    full = Search(task, seed=3, population=40, generations=4).run(checkpoint=lambda s: saved.append(json.dumps(s)))
    search = Search(task, seed=3, population=40, generations=4)
    resumed = search.run(search.state_from_json(json.loads(saved[2])))
    assert [(e.expression, e.loss) for e in resumed.front] == [(e.expression, e.loss) for e in full.front]
    assert all(e.rule.space.names == ("ff", "lat") and e.expression.startswith("ff: ") for e in full.front)
    assert all(e.complexity == sum(map(len, e.rule.exprs)) for e in full.front)
    # the coordinate-wise enumeration put anti-Hebbian lateral rules with 0 feed-forward in the archive
    first = json.loads(saved[0])
    assert first["evaluations"] > 2 * 771


def test_semantic_keys_cover_every_pathway():
    task = load_task(PCA, PCA_SMALL)
    a, b, c = (task.parse(t) for t in ("ff: x*y; lat: -x*y", "ff: x*y; lat: x*y", "ff: y*x; lat: -(y*x)"))
    ka, kb, kc = semantic_keys([a, b, c])
    assert ka != kb and ka == kc


def test_evolve_on_activity_starts_from_the_taylor_fit(tmp_path):
    """A three-term rule a tiny search does not reach is found because the exact Taylor fit seeds it;
    run.json records the seed and that it does not beat the selected rule."""
    import numpy as np
    from rulesearch.runs import RunSpec, evolve_run
    fit = ROOT / "tasks" / "fit-activity.toml"
    sets = ("inputs.steps=100", "inputs.trials=4")
    task = load_task(fit, sets, require_data=False, seed=3)
    truth = task.parse("x*y - 0.5*y**2*w - 0.2*w")
    task.sim.synthesize(task, truth, tmp_path / "d.npz", 0.0, 1.0, None)
    runs = {}
    for seeded in (True, False):
        runs[seeded], out = evolve_run(RunSpec(str(fit), sets + (f"search.seed_with_fit={str(seeded).lower()}",),
                                               str(tmp_path / "d.npz"), 3, population=20, generations=1),
                                       tmp_path / f"run-{seeded}")
        info = json.loads((out / "run.json").read_text())
        assert ("fit_seed" in info) is seeded
    info = json.loads((tmp_path / "run-True" / "run.json").read_text())
    assert info["fit_seed"]["used"] and info["fit_seed"]["beats_selected"] is False
    expand = lambda r: sympy.expand(r.to_sympy()[0])  # noqa: E731
    assert sympy.simplify(expand(runs[True].selected.rule) - expand(truth)) == 0
    assert runs[True].selected.loss < 1e-20 < runs[False].selected.loss
    assert np.isfinite(info["fit_seed"]["loss"]) and info["fit_seed"]["loss"] < 1e-20


def test_the_taylor_fit_overrules_a_tolerance_looser_than_the_noise(tmp_path):
    """Oja's rule, tanh outputs, eta 0.1, inputs in [0, 1] (benchmarks/activity_cases.py's independent
    generator): activity of variance 5e-4, so the task's absolute tolerance of 1e-6 lets 0.64*x stand
    for the rule (0.64*x at the default population, y*(-w + x) at 50). The fit's exact rule beats it beyond the noise (paired over held-out trials), so the
    simplest front rule the fit does not beat is selected instead, and run.json says so."""
    import sys
    import numpy as np
    from rulesearch.runs import RunSpec, evolve_run
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from activity_cases import generate_rule
    np.savez(tmp_path / "d.npz", **generate_rule("x*y - y**2*w", lambda x, y, w: x * y - y * y * w, "tanh", 0.1))
    sets = ("network.activation=tanh", "network.eta=0.1", "network.n_in=20", "network.n_out=5")
    result, out = evolve_run(RunSpec(str(ROOT / "tasks" / "fit-activity.toml"), sets, str(tmp_path / "d.npz"), 0,
                                     population=50, generations=0), tmp_path / "run")
    info = json.loads((out / "run.json").read_text())
    check = info["fit_seed"]
    x, y, w = (symbol(n) for n in "xyw")
    previous = parse_rule(check["reselected"]["previous"], result.selected.rule.space)
    assert check["beats_selected"] and sympy.expand(previous.to_sympy()[0] - (x * y - y**2 * w)) != 0
    assert check["selected_minus_fit"] > check["se"] > 0  # the margin that overruled, recorded
    assert sympy.expand(result.selected.rule.to_sympy()[0] - (x * y - y**2 * w)) == 0
    assert info["selected"] == check["reselected"]["selected"] == result.selected.expression
    assert info["heldout"]["weight_r2"] > 0.9999


def test_decay_seed_reaches_a_rule_whose_weights_run_away_alone():
    """Flies from x*(r - rbar) - 0.1*w at eta 1: x*(r - rbar) alone runs away (worse than no
    plasticity), so no front rule leads to it; search.decay_seed puts -0.1*w on every enumerated rule."""
    from rulesearch.gp import small_exprs, with_decay
    from rulesearch.sims.choice import simulate_choices
    from rulesearch.tasks import with_data
    fly = ROOT / "tasks" / "fly-choice.toml"
    x, r, rbar, w = (symbol(n) for n in ("x", "r", "rbar", "w"))
    best = {}
    for decay in (0.1, 0.0):
        sets = ("network.eta=1", "protocol.readout=0.5", "protocol.trials_per_block=40", "protocol.animals=6",
                f"search.decay_seed={decay}")
        task = load_task(fly, sets, require_data=False, seed=1)
        task = with_data(task, simulate_choices(task, task.parse("x*(r - rbar) - 0.1*w"), seed=1))
        train, _ = task.split()
        result = evolve(train, population=20, generations=0)
        best[decay] = min(e.loss for e in result.front)
        terms = [set(sympy.expand(e.rule.to_sympy()[0]).as_coefficients_dict()) for e in result.front]
        if decay:
            assert {x * r, x * rbar, w} in terms  # e.g. -0.1*w + x*(r - rbar)
    assert best[0.1] < best[0.0] - 0.05
    g = load_task(fly, require_data=False).space.grammar(0)
    exprs = small_exprs(g)
    decayed = with_decay(exprs, g, 0.1)
    assert len(decayed) == len(exprs) - 1 and decayed[0][-3:] == (("op", "mul"), ("const", 0.1), ("var", "w"))
    assert with_decay(exprs, g, 0.0) == [] and len(small_exprs(g)) == len(exprs)  # the enumeration is not mutated
