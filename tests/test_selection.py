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
    # judged by the search's own likelihood (the particle filter's units are tested in test_choice.py)
    task = load_task(FLY, ("protocol.trials_per_block=20", "protocol.animals=3", "search.selection=\"noise\"",
                           "protocol.judge_particles=0"), require_data=False, seed=1)
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


def test_indistinguishable_on_constructed_units():
    """Paired held-out differences against the selected rule, judged by Student's t on n - 1 dof."""
    from scipy.stats import t as student_t
    from rulesearch.fronts import indistinguishable
    rng = np.random.default_rng(3)
    n = 8
    base = rng.uniform(40, 50, n)  # the selected rule's held-out loss per animal
    noise = np.array([1.0, -1.2, 0.8, -0.6, 1.1, -0.9, 0.4, -0.7])
    units = np.stack([base + 5 + 0.3 * noise,  # clearly worse: D = 40, SE ~ 2.4
                      base + 0.2 + noise,  # D = 1.5, SE ~ 8: within the noise
                      base,  # the selected rule
                      base - 3 + 0.2 * noise,  # clearly better on held-out data
                      np.where(np.arange(n) == 2, np.inf, base)])  # blew up on one animal
    names = ["a", "b", "sel", "c", "d"]
    r = indistinguishable(units, 2, names, "animals")
    assert r["verdict"] == ["worse", "indistinguishable", "selected", "better", "blown"]
    assert r["rules"] == ["b"] and r["selected"] == "sel" and r["expressions"] == names
    assert r["critical_t"] == pytest.approx(student_t.ppf(0.975, n - 1))
    d = units[1] - units[2]
    assert r["difference"][1] == pytest.approx(d.sum()) and r["se"][1] == pytest.approx(np.sqrt(n) * d.std(ddof=1))
    assert r["heldout_loss"][4] is None and r["difference"][2] == 0.0
    # the same difference with a quarter of the noise is resolved: the verdict follows the paired SE
    units[1] = base + 0.2 + 0.05 * noise
    assert indistinguishable(units, 2, names)["verdict"][1] == "worse"
    # one held-out unit: no estimate of the sampling noise, so no verdict
    one = indistinguishable(units[:, :1], 2, names)
    assert one["verdict"] == ["unknown", "unknown", "selected", "unknown", "unknown"] and one["critical_t"] is None
    with pytest.raises(ValueError, match="row 7"):
        indistinguishable(units, 7)


def test_evolve_reports_front_rules_indistinguishable_on_heldout_data(tmp_path, capsys):
    import csv
    import json
    from rulesearch.cli import main
    flies, sets = tmp_path / "flies", ["--set", "protocol.trials_per_block=40"]
    assert main(["simulate", FLY, "--rule", "x*(r - rbar)", "--animals", "6", "--out", str(flies), "--seed", "2"]
                + sets) == 0
    out = tmp_path / "run"
    assert main(["evolve", FLY, "--data", str(flies), "--out", str(out), "--population", "30", "--generations", "1",
                 "--seed", "2"] + sets) == 0
    printed = capsys.readouterr().out
    info = json.loads((out / "run.json").read_text())
    rows = list(csv.DictReader((out / "pareto.csv").open()))
    report = info["indistinguishable"]
    assert report["n_units"] == 6 and report["units"] == "animals" and len(rows) > 1
    # the task's selection "auto": with fewer than 10 animals, the held-out losses judge
    assert info["selection"]["method"] == "heldout" and info["selection"]["losses"] == "held-out"
    assert info["selection"]["auto"] == "6 animals in the fitted trials: fewer than 10"
    # recomputed independently from the held-out view's per-animal losses
    _, test = load_task(FLY, ("protocol.trials_per_block=40",), data=flies, seed=2).split()
    units = test.unit_losses([test.parse(r["expression"]) for r in rows])
    k = next(i for i, r in enumerate(rows) if r["selected"] == "1")
    d = units - units[k]
    se = np.sqrt(6) * d.std(axis=1, ddof=1)
    expected = ["selected" if i == k else "indistinguishable" if abs(d[i].sum()) <= report["critical_t"] * se[i]
                else "worse" if d[i].sum() > 0 else "better" for i in range(len(rows))]
    assert [r["heldout_verdict"] for r in rows] == report["verdict"] == expected
    np.testing.assert_allclose([float(r["heldout_difference"]) for r in rows], d.sum(axis=1), rtol=1e-9, atol=1e-9)
    assert report["rules"] == [r["expression"] for r, v in zip(rows, expected) if v == "indistinguishable"]
    assert "indistinguishable" in printed and "paired over 6 held-out animals" in printed
    assert main(["show", str(out)]) == 0
    shown = capsys.readouterr().out
    assert "paired over 6 held-out animals" in shown
    for name in report["rules"]:
        assert name in shown


def test_auto_selection_judges_by_the_fitted_trials_from_10_animals(tmp_path):
    import json
    from rulesearch.cli import main
    flies, sets = tmp_path / "flies", ["--set", "protocol.trials_per_block=20", "--set", "protocol.judge_particles=0"]
    assert main(["simulate", FLY, "--rule", "x*(r - rbar)", "--animals", "10", "--out", str(flies), "--seed", "3"]
                + sets[:2]) == 0
    assert main(["evolve", FLY, "--data", str(flies), "--out", str(tmp_path / "run"), "--population", "20",
                 "--generations", "0", "--seed", "3"] + sets) == 0
    selection = json.loads((tmp_path / "run" / "run.json").read_text())["selection"]
    assert selection["method"] == "noise" and selection["losses"] == "fitted" and selection["n_units"] == 10
    assert selection["auto"] == "10 animals in the fitted trials: at least 10"
    # nothing held out: the fitted trials judge, and run.json says why
    assert main(["evolve", FLY, "--data", str(flies), "--out", str(tmp_path / "none"), "--population", "20",
                 "--generations", "0", "--seed", "3", "--set", "protocol.heldout_every=0"] + sets) == 0
    selection = json.loads((tmp_path / "none" / "run.json").read_text())["selection"]
    assert selection["method"] == "noise" and selection["auto"] == "no held-out trials: the fitted trials' losses"
