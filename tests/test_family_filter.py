"""rulesearch families on a miniature network: two rounds end to end, and a run interrupted in
its second round and resumed ends exactly as an uninterrupted one."""
from dataclasses import replace

import pytest

from conftest import ROOT
from rulesearch.cli import main
from rulesearch.family_filter import (CONFIRMATIONS_FILE, FAMILY_FILE, ROUNDS_FILE, SIMULATIONS_FILE, FamilySpec,
                                      families_run, summarise)
from rulesearch.results import read_csv, read_json

# 20 neurons for 0.4 s; loose weight constraints so that some candidates pass and round 1 proposes
# from a model of them
MINI = ("network.n_exc=16", "network.n_inh=4", "network.p_connect=0.3", "inputs.plasticity_s=0.2",
        "inputs.score_s=0.2", "inputs.fano_bin_ms=50", "constraints.w_creep=[0, 0.5]", "constraints.w_blow=[0, 0.5]",
        "constraints.cv_isi=[0.3, 3]", "constraints.fano=[0, 3]", "constraints.rate_i=[1, 200]",
        "families.batch=8", "families.simulations=24", "families.rounds=2", "families.confirm=2")
SPEC = FamilySpec(str(ROOT / "tasks" / "ei-network.toml"), MINI, seed=3, workers=1)


def _table(path):
    return [dict(r) for r in read_csv(path)]


def test_two_rounds_then_show(tmp_path, capsys):
    info, out = families_run(SPEC, tmp_path / "run")
    sims = read_csv(out / SIMULATIONS_FILE)
    assert len(sims) == 48 and {r["round"] for r in sims} == {"0", "1"}
    rounds = read_csv(out / ROUNDS_FILE)
    assert [int(r["simulations"]) for r in rounds] == [24, 24]
    passed = [r for r in sims if r["pass"] == "1"]
    assert 2 <= len(passed) < 48  # the model of round 1 was fitted
    # a candidate passing every constraint joins the family only if its 2 confirmations pass too
    confirms = read_csv(out / CONFIRMATIONS_FILE)
    members = [r for r in sims if r["member"] == "1"]
    for row in sims:
        mine = [c for c in confirms if (c["round"], c["index"]) == (row["round"], row["index"])]
        assert [c["repeat"] for c in mine] == [str(k + 1) for k in range(len(mine))]
        if row["pass"] == "0":
            assert not mine and row["member"] == "0"
        elif row["member"] == "1":
            assert len(mine) == 2 and all(c["pass"] == "1" for c in mine)
        else:  # stopped at the first failed confirmation
            assert mine and mine[-1]["pass"] == "0" and all(c["pass"] == "1" for c in mine[:-1])
        assert row["seed"] not in {c["seed"] for c in mine} and len({c["seed"] for c in mine}) == len(mine)
    for c in confirms:  # pass = every constraint holds on the confirmation's own metrics
        lows = {"rate_e": 1, "rate_i": 1, "cv_isi": 0.3, "fano": 0, "w_blow": 0, "w_creep": 0}
        highs = {"rate_e": 50, "rate_i": 200, "cv_isi": 3, "fano": 3, "w_blow": 0.5, "w_creep": 0.5}
        ok = all(lows[k] <= float(c[k]) <= highs[k] for k in lows)
        assert c["pass"] == str(int(ok and all(0 <= float(c[f"w_{p}"]) <= (0.5 if p[0] == "e" else 5)
                                               for p in ("ee", "ei", "ie", "ii"))))
    assert 1 <= len(members) <= len(passed) and any(c["pass"] == "0" for c in confirms)
    family = read_csv(out / FAMILY_FILE)
    assert len(family) == len(members) == info["family_size"]
    assert [(r["round"], r["index"]) for r in family] == [(r["round"], r["index"]) for r in members]
    assert all((r["recheck_failed"] == "") == (r["recheck_pass"] == "1") for r in family)
    assert sum(info["recheck_failures"].values()) >= sum(r["recheck_pass"] == "0" for r in family)
    assert family[0]["ee"].startswith("pre: ") and "tau_pre" in family[0]["ee"]
    for row in members:  # every plausible row passes every constraint
        assert all(row[k] == "1" for k in row if k.startswith("pass_"))
    for row in sims:  # candidates stay in the prior's support
        for p in ("ee", "ei", "ie", "ii"):
            assert 10 <= float(row[f"{p}.tau_pre_ms"]) <= 100 and -2 <= float(row[f"{p}.kappa"]) <= 2
        assert 5 <= float(row["drive_rate_hz"]) <= 15
    run = read_json(out / "run.json")
    assert run["kind"] == "families" and run["status"] == "done" and run["seed"] == 3
    assert run["evaluations"] == 48 + len(confirms) + len(members) and 0 <= run["recheck_pass_fraction"] <= 1
    assert run["confirmations"] == len(confirms) and run["confirm"] == 2
    assert "numpy" in run["versions"] and run["elapsed_seconds"] > 0
    for png in ("pass_fraction.png", "metrics.png", "pairs_ee.png", "pairs_ii.png"):
        assert (out / png).stat().st_size > 1000
    s = summarise(out)
    assert s["size"] == len(members) and len(s["parameters"]) == 25
    assert main(["show", str(out)]) == 0
    shown = capsys.readouterr().out
    assert f"family of {len(members)} plausible rule combinations" in shown and "ee.kappa" in shown
    # per round, the fraction passing the round's constraints and the fraction passing all of them
    assert "pass fraction per round, the round's constraints / all: " + ", ".join(
        f"{float(r['pass_fraction']):.1%} / {float(r['pass_fraction_all']):.1%}" for r in rounds) in shown
    assert main(["latex", str(out)]) == 2  # a family has no front of rules: said so, not "not finished"
    assert "a families run, which has no front of rules" in capsys.readouterr().err


def test_resume_equals_uninterrupted(tmp_path):
    spec = replace(SPEC, overrides=SPEC.overrides + ("families.figures=false",))  # figures: the test above
    _, full = families_run(spec, tmp_path / "full")
    calls = []

    def stop(r, rounds, done, total, frac):  # Ctrl-C after the first batch of round 1
        calls.append((r, done))
        if r == 1:
            raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        families_run(spec, tmp_path / "cut", progress=stop)
    assert calls[-1] == (1, 8)
    assert len(read_csv(tmp_path / "cut" / SIMULATIONS_FILE)) == 32  # nothing lost
    assert read_json(tmp_path / "cut" / "run.json")["status"] == "interrupted"
    info, cut = families_run(FamilySpec(SPEC.task), tmp_path / "cut", resume=True)
    for name in (SIMULATIONS_FILE, CONFIRMATIONS_FILE, ROUNDS_FILE, FAMILY_FILE):
        assert _table(cut / name) == _table(full / name), name
    assert info["status"] == "done"


def test_resume_refusals(tmp_path, capsys):
    assert main(["families", SPEC.task, "--resume", str(tmp_path)]) == 2
    assert "no run.json and checkpoint.json to resume from" in capsys.readouterr().err
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "a").write_text("")
    assert main(["families", SPEC.task, "--out", str(tmp_path / "x")]) == 2
    assert "the folder exists and is not empty" in capsys.readouterr().err


def test_pinned_pathway_is_fixed_and_shown(tmp_path, capsys):
    """A rule pinned on II leaves the sampled space, and simulates exactly as the same doublet rule
    sampled there; family.csv shows it; a bad pinned rule is one line, exit 2."""
    import numpy as np
    from rulesearch.family_filter import Space
    from rulesearch.tasks import load_task
    pin = "families.pinned=ii.pre: 0.5 - 1.0*x_post; ii.post: -0.3 + 0.7*x_pre"
    task = load_task(SPEC.task, MINI + (pin,), seed=3)
    free = load_task(SPEC.task, MINI, seed=3)
    pinned, full = Space(task), Space(free)
    assert pinned.pathways == ["ee", "ei", "ie"] and pinned.all_pathways == ["ee", "ei", "ie", "ii"]
    assert pinned.dim == full.dim - 6 and not any(n.startswith("ii.") for n in pinned.names)
    values = pinned.to_values(np.random.default_rng(0).random((6, pinned.dim)))
    # the same candidates with II sampled at the pinned rule (taus: the network's 20 ms)
    ii = np.tile([20.0, 20.0, 0.5, -0.3, 0.7, -1.0], (6, 1))
    same = np.concatenate([values[:, :18], ii, values[:, 18:]], axis=1)
    seeds = np.arange(6) + 11
    a, b = task.metrics(pinned.pack(values, seeds)), free.metrics(full.pack(same, seeds))
    for k in ("rate_e", "rate_i", "w_ii", "w_creep", "w_blow"):
        np.testing.assert_array_equal(a[k], b[k])
    assert len(np.unique(a["w_ii"])) > 1  # the pinned rule acts in networks that differ elsewhere
    info, out = families_run(replace(SPEC, overrides=MINI + (pin, "families.figures=false", "families.confirm=0")),
                             tmp_path / "pin")
    family = read_csv(out / FAMILY_FILE)
    assert info["pinned"] == {"ii": ["0.5 - 1.0*x_post", "-0.3 + 0.7*x_pre"]} and family
    assert all(r["ii"].startswith("pre: 0.5 - 1.0*x_post; post: -0.3 + 0.7*x_pre (pinned") for r in family)
    assert "ii.alpha" not in read_csv(out / SIMULATIONS_FILE)[0]
    assert main(["show", str(out)]) == 0
    assert "pinned (not sampled): ii.pre: 0.5 - 1.0*x_post; ii.post: -0.3 + 0.7*x_pre" in capsys.readouterr().out
    assert main(["families", SPEC.task, "--set", "families.pinned=ii.pre: x_pre + y", "--out",
                 str(tmp_path / "bad")]) == 2
    err = capsys.readouterr().err.strip()
    assert "field 'families.pinned'" in err and "unknown name 'y'" in err and len(err.splitlines()) == 1


def test_violation_and_elite_by_hand():
    """The distance outside each range relative to the bound crossed, NaN counted as the cap; the
    elite set is every candidate passing when there are enough, else the least violating."""
    import numpy as np
    from rulesearch.family_filter import VIOLATION_CAP, elite, violation
    from rulesearch.sims.lif_network.metrics import Constraint
    cons = [Constraint("rate_e", 1.0, 50.0, 0), Constraint("w_creep", 0.0, 0.05, 1)]
    rows = [{"rate_e": "60", "w_creep": "0.1"}, {"rate_e": "0.5", "w_creep": "0.0"},
            {"rate_e": "nan", "w_creep": "nan"}, {"rate_e": "10", "w_creep": "0.05"}]
    np.testing.assert_allclose(violation(rows, cons, ["rate_e", "w_creep"]), [0.2 + 1.0, 0.5, 2 * VIOLATION_CAP, 0])
    np.testing.assert_allclose(violation(rows, cons, ["rate_e"]), [0.2, 0.5, VIOLATION_CAP, 0])
    many = [{"rate_e": "10", "w_creep": repr(0.01 * k)} for k in range(30)]  # k <= 5 pass
    e = elite(many, cons, ["rate_e", "w_creep"], fraction=0.1, minimum=8)
    assert e.tolist() == [k < 8 for k in range(30)]  # 6 pass: topped up with the two nearest
    e = elite(many, cons, ["rate_e", "w_creep"], fraction=0.1, minimum=3)
    assert e.tolist() == [k <= 5 for k in range(30)]  # enough pass: exactly those


def test_worst_violation_counts_failed_confirmations():
    """A candidate's violation is the largest over its own simulation and its confirmations, so one
    that passed once and failed a confirmation is not in the elite set."""
    import numpy as np
    from rulesearch.family_filter import elite, worst_violation
    from rulesearch.sims.lif_network.metrics import Constraint
    cons = [Constraint("w_creep", 0.0, 0.05, 1)]
    rows = [{"round": "0", "index": str(k), "w_creep": "0.01"} for k in range(3)]
    confirms = [{"round": "0", "index": "1", "w_creep": "0.04"}, {"round": "0", "index": "2", "w_creep": "0.1"},
                {"round": "0", "index": "2", "w_creep": "0.075"}, {"round": "1", "index": "0", "w_creep": "1"}]
    np.testing.assert_allclose(worst_violation(rows, cons, ["w_creep"], confirms), [0, 0, 1.0])
    np.testing.assert_allclose(worst_violation(rows, cons, ["w_creep"]), [0, 0, 0])
    assert elite(rows, cons, ["w_creep"], fraction=0.1, minimum=2, confirmations=confirms).tolist() == \
        [True, True, False]


def test_seed_noise_and_aimed_constraints_by_hand():
    """The seed noise is the 90 % quantile of |own - first confirmation| / sqrt(2); the aimed
    ranges are narrowed by it on finite sides other than a lower bound of 0."""
    import numpy as np
    from rulesearch.family_filter import aimed, seed_noise
    from rulesearch.sims.lif_network.metrics import Constraint
    rows = [{"round": "0", "index": str(k), "w_creep": "0.01", "rate_e": "10"} for k in range(11)]
    confirms = [{"round": "0", "index": str(k), "repeat": "1", "w_creep": repr(0.01 + 0.001 * k),
                 "rate_e": "10"} for k in range(11)]
    confirms.append({"round": "0", "index": "0", "repeat": "2", "w_creep": "5", "rate_e": "10"})  # not a pair
    noise = seed_noise(rows, confirms, ["w_creep", "rate_e"])
    np.testing.assert_allclose(noise["w_creep"], np.quantile(0.001 * np.arange(11), 0.9) / np.sqrt(2))
    assert noise["rate_e"] == 0.0
    assert seed_noise(rows, confirms[:9], ["w_creep"]) == {"w_creep": 0.0}  # too few pairs
    cons = [Constraint("w_creep", 0.0, 0.05, 1), Constraint("rate_e", 1.0, 50.0, 0), Constraint("fano", 0.5, 0.6, 2)]
    a = aimed(cons, {"w_creep": 0.01, "rate_e": 2.0, "fano": 0.2}, 1.5)
    assert [(k.low, k.high) for k in a] == [(0.0, 0.035), (4.0, 47.0), (0.55, 0.55)]


def test_budget_bounds_every_simulation(tmp_path, capsys):
    """families.budget bounds the simulations of the rounds, the confirmations and the re-check
    together: the run stops before a batch that could pass it, and says so."""
    out = tmp_path / "b"
    sets = [x for o in MINI + ("families.budget=70", "families.figures=false") for x in ("--set", o)]
    assert main(["families", SPEC.task, "--seed", "3", "--workers", "1", "--out", str(out)] + sets) == 0
    shown = capsys.readouterr().out
    info = read_json(out / "run.json")
    assert "stopped by families.budget (70 simulations in all)" in shown
    assert "(each passed 2 confirmation simulations); " in shown and f"({info['evaluations']} simulations" in shown
    sims, confirms = read_csv(out / SIMULATIONS_FILE), read_csv(out / CONFIRMATIONS_FILE)
    assert info["stopped_by_budget"] and info["budget"] == 70
    assert info["evaluations"] == len(sims) + len(confirms) + info["family_size"] <= 70
    assert len(sims) < 48 and len(sims) % 8 == 0  # whole batches (families.batch = 8)
    assert [int(r["simulations"]) for r in read_csv(out / ROUNDS_FILE)] == [24, len(sims) - 24] and len(sims) > 24
