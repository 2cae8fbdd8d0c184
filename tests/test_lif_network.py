"""The recurrent E/I network: metrics against hand-computed cases, the kernel's bookkeeping
against its own recorded spikes, the reference rules, constraints and their bad input."""
import numpy as np
import pytest

from conftest import ROOT
from rulesearch.cli import main
from rulesearch.errors import TaskError
from rulesearch.sims.lif_network import metrics as M
from rulesearch.sims.lif_network import network_metrics, passes
from rulesearch.tasks import load_task, pack_rules

NET = ROOT / "tasks" / "ei-network.toml"
TINY = ("network.n_exc=16", "network.n_inh=4", "network.p_connect=0.3", "inputs.plasticity_s=0.2",
        "inputs.score_s=0.3", "inputs.fano_bin_ms=50")


def _isi_summary(trains):
    """Per neuron: number, sum and sum of squares of its inter-spike intervals."""
    isis = [np.diff(t) for t in trains]
    return (np.array([[len(d) for d in isis]], float), np.array([[d.sum() for d in isis]], float),
            np.array([[(d ** 2).sum() for d in isis]], float))


def test_cv_isi_by_hand():
    # ISIs 10, 20, 30: mean 20, population std sqrt(200 / 3); a regular neuron: CV 0; two ISIs: left out
    n, s, s2 = _isi_summary([np.array([0, 10, 30, 60]), np.array([0, 5, 10, 15, 20]), np.array([0, 7, 50])])
    assert M.cv_isi(n, s, s2)[0] == pytest.approx((np.sqrt(200 / 3) / 20 + 0.0) / 2)
    assert np.isnan(M.cv_isi(n[:, 2:], s[:, 2:], s2[:, 2:])[0])  # no neuron with 3 intervals


def test_fano_by_hand():
    counts = np.array([[[2, 0, 4, 2], [1, 1, 1, 1], [3, 0, 0, 0]]])
    # (var 2 / mean 2) = 1; a constant count: 0; 3 spikes: left out
    assert M.fano(counts)[0] == pytest.approx(0.5)
    assert np.isnan(M.fano(counts[:, 2:])[0])


def test_weight_metrics_by_hand():
    assert M.w_blow(np.array([[0.1, 0.0, 0.2, 0.1]]))[0] == pytest.approx(0.1)
    start = np.array([[0.1, 0.02, 2.0, 1.0]])
    end = np.array([[0.12, 0.06, 2.0, 0.9]])
    # ee: 2 * 0.02 / 0.22; ei: below the floor (0.08), left out; ii: 2 * 0.1 / 1.9
    assert M.w_creep(start, end)[0] == pytest.approx(2 * 0.02 / 0.22)
    assert M.w_creep(start[:, 1:], end[:, 1:])[0] == pytest.approx(0.2 / 1.9)


def test_rates_by_hand():
    counts = np.zeros((2, 3, 2), np.int64)
    counts[0] = [[1, 2], [3, 0], [4, 2]]  # 12 spikes, 3 neurons, 2 s
    assert M.rates(counts, np.array([2.0, 0.0]))[0] == pytest.approx(2.0)
    assert np.isnan(M.rates(counts, np.array([2.0, 0.0]))[1])


def test_constraint_holds_and_nan_fails():
    k = M.Constraint("fano", 0.5, 2.5, 2)
    np.testing.assert_array_equal(k.holds([0.5, 2.5, 2.6, 0.4, np.nan]), [True, True, False, False, False])


def test_kernel_bookkeeping_matches_its_recorded_spikes():
    """Bin counts, ISIs in the scoring window and mean weights, recomputed from the recorded spikes."""
    task = load_task(NET, TINY, seed=2)
    c, s = task.config, task.state
    rule = task.parse("; ".join(f"{n}: {'x_post - 0.1' if n.endswith('pre') else 'x_pre - 0.3*w'}"
                                for n in task.space.names))
    res = task.sim.simulate(task, pack_rules([rule]), record=True, drive_rate_hz=12.0)
    steps, neurons = res.spike_steps[0], res.spike_neurons[0]
    keep = steps >= 0
    steps, neurons = steps[keep], neurons[keep]
    assert len(steps) > 50 and not res.exploded[0]
    n_bins = res.counts.shape[2]
    for i in range(c.n):
        mine = steps[(neurons == i) & (steps >= s.score_from)]
        expect = np.bincount((mine - s.score_from) // s.bin_steps, minlength=n_bins)
        np.testing.assert_array_equal(res.counts[0, i], expect)
        d = np.diff(mine)
        assert res.isi_n[0, i] == len(d) and res.isi_sum[0, i] == d.sum() and res.isi_sum2[0, i] == (d ** 2).sum()
    for k in range(4):
        on = s.syn_path == k
        assert res.w_end[0, k] == pytest.approx(res.w_final[0, on].mean())


def test_w_blow_averages_the_weight_snapshots_inside_the_window():
    """w_blow as published (fSBI: a weight monitor every 100 ms, snapshots strictly inside the scoring
    window): the kernel's average equals the fractions at a bound in the final weights of the same
    simulation stopped at each snapshot (a simulation's first steps do not depend on its length)."""
    snap = ("inputs.weight_snapshot_ms=50",)
    task = load_task(NET, TINY + snap, seed=2)
    c, s = task.config, task.state
    res = task.sim.simulate(task, pack_rules([_rules(task, ee_pre="-0.2")]), record=True, drive_rate_hz=12.0)
    assert not res.exploded[0] and not res.blown[0]
    fractions = []
    for stop_ms in (250, 300, 350, 400, 450):  # inside the window (200, 500) ms, every 50 ms
        short = load_task(NET, TINY + snap + (f"inputs.score_s={(stop_ms - 200) / 1000}",), seed=2)
        r = short.sim.simulate(short, pack_rules([_rules(short, ee_pre="-0.2")]), record=True, drive_rate_hz=12.0)
        at = (r.w_final[0] <= 0) | (r.w_final[0] >= c.w_max)
        fractions.append([at[s.syn_path == k].mean() for k in range(4)])
    want = np.mean(fractions, axis=0)
    np.testing.assert_allclose(res.w_bound[0], want, rtol=1e-12)
    # E->E weights reach 0 during the window (0.09 on average, 0.15 at the end): the case tests something
    assert 0 < want[0] < (res.w_final[0][s.syn_path == 0] <= 0).mean()


def _rules(task, **parts):
    text = {n: "0" for n in task.space.names}
    text.update({k.replace("_", "."): v for k, v in parts.items()})
    return task.parse("; ".join(f"{k}: {v}" for k, v in text.items()))


def test_reference_cases():
    """No plasticity and an I->E Vogels-like rule pass every constraint at the low and high drive;
    purely Hebbian E->E (alpha = beta = 0, gamma = kappa = 1) runs away."""
    task = load_task(NET, ("inputs.plasticity_s=2.0", "inputs.score_s=1.0"), seed=1)
    rules = [_rules(task), _rules(task, ie_pre="x_post - 0.2", ie_post="x_pre"),
             _rules(task, ee_pre="x_post", ee_post="x_pre")]
    for drive in (5.0, 15.0):
        res = task.sim.simulate(task, pack_rules(rules), drive_rate_hz=drive)
        m = network_metrics(task, res)
        ok = passes(task, m)
        for k in (0, 1):
            assert all(v[k] for v in ok.values()), {q: float(v[k]) for q, v in m.items()}
        assert 5 < m["rate_e"][0] < 30 and m["cv_isi"][0] > 0.8 and 0.8 < m["fano"][0] < 2.0
        # runaway: E->E weights 50x their start, E near its maximal rate (stopped early if above max_rate_hz)
        assert not ok["rate_e"][2] and not ok["w_ee"][2] and not ok["cv_isi"][2]
        assert res.exploded[2] or (m["rate_e"][2] > 80 and m["w_ee"][2] > 2.0)


@pytest.mark.parametrize("override, message", [
    ("constraints.rate_e=[50, 1]", r"field 'constraints.rate_e' is \[50.0, 1.0\]: expected \[low, high\] with low <= high"),
    ("constraints.rate_x=[1, 2]", r"field 'constraints.rate_x' is not a metric of this network \(metrics: rate_e"),
    ("constraints.fano=[1, 2, 3]", r"field 'constraints.fano' is \[1.0, 2.0, 3.0\]: expected \[low, high\]"),
    ("constraints.cv_isi='high'", r"field 'constraints.cv_isi' is 'high': expected a list"),
    ("inputs.drive_rate_hz=[15, 5]", r"field 'inputs.drive_rate_hz' is \[15.0, 5.0\]: expected \[low, high\] in Hz"),
    ('network.plastic=["ee", "xx"]', r"field 'network.plastic' is \['ee', 'xx'\]: expected a list of distinct pathways"),
    ("network.w_max=1.5", r"field 'network.w_max' is 1.5: expected at least every initial weight"),
    ("inputs.fano_bin_ms=5000", r"field 'inputs.fano_bin_ms' is 5000: expected at most the scoring window"),
    ("families.rounds=0", r"field 'families.rounds' is 0: expected at least 1"),
    ("families.backend='torch'", r"field 'families.backend' is 'torch': expected one of sklearn, sbi"),
    ("families.tau_range_ms=[100, 10]", r"field 'families.tau_range_ms' is \[100.0, 10.0\]: expected \[low, high\]"),
    ("families.colour=1", r"field 'families.colour' is not a known field"),
])
def test_bad_fields_one_line(override, message):
    with pytest.raises(TaskError, match=message) as info:
        load_task(NET, (override,))
    assert str(NET) in str(info.value) and "\n" not in str(info.value)


def test_bad_constraint_on_the_command_line_exit_2(tmp_path, capsys):
    code = main(["families", str(NET), "--set", "constraints.w_blow=[1, 0]", "--out", str(tmp_path / "f")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err
    assert "field 'constraints.w_blow' is [1.0, 0.0]: expected [low, high]" in err
    assert not (tmp_path / "f").exists()  # nothing written


def test_families_needs_constraints_and_a_backend(tmp_path, capsys):
    code = main(["families", str(ROOT / "tasks" / "oja.toml"), "--out", str(tmp_path / "f")])
    err = capsys.readouterr().err
    assert code == 2 and "the 'rate' simulator has no constraints" in err
    code = main(["families", str(NET), "--set", "families.backend='sbi'", "--out", str(tmp_path / "g")])
    err = capsys.readouterr().err
    assert code == 2 and "families backend 'sbi' needs the sbi package" in err
    task = load_task(ROOT / "tasks" / "oja.toml")
    with pytest.raises(ValueError, match="the 'rate' simulator has no metrics or constraints"):
        task.metrics(pack_rules([task.parse("x*y")]))


def test_extras_width_is_checked():
    task = load_task(NET, TINY)
    packed = pack_rules([_rules(task)])
    from dataclasses import replace
    with pytest.raises(ValueError, match="packed.extras has 3 columns: expected 8"):
        task.sim.simulate(task, replace(packed, extras=np.zeros((1, 3))))
