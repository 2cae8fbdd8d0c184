"""The spiking simulator: Brian2 as the independent reference, traces against their closed form,
clipping, refractoriness, the known answer of tasks/istdp.toml and its bad input."""
import numpy as np
import pytest

from conftest import ROOT
from rulesearch.cli import main
from rulesearch.errors import TaskError
from rulesearch.sims.lif.brian2_twin import vogels_network
from rulesearch.sims.lif.objectives import balance, output_rates
from rulesearch.tasks import load_task, pack_rules

ISTDP = ROOT / "tasks" / "istdp.toml"
SHORT = ("inputs.trial_s=2.0", "inputs.score_s=1.0", "inputs.drives=[1.0]")


def _spike_times(task, b=0):
    """(step, afferent) of every input spike of trial b."""
    s = task.state
    ptr = s.spk_ptr[b]
    steps = np.repeat(np.arange(s.n_steps), np.diff(ptr))
    return steps, s.spk_aff[ptr[0]:ptr[-1]]


def test_brian2_agrees_on_spike_times_and_weights():
    """The same neuron, input spikes and Vogels rule in Brian2 (on_pre/on_post, exponential Euler):
    output spikes to the time step over 2 s and final weights to 1e-6 relative."""
    b2 = pytest.importorskip("brian2")
    task = load_task(ISTDP, SHORT)
    c, s = task.config, task.state
    ours = task.simulate([task.parse("pre: x_post - 0.2; post: x_pre")], record=True)
    b2.prefs.codegen.target = "numpy"  # no C compilation in the test
    net, inh, monitor = vogels_network(b2, task)
    inh.a, inh.b = 0.2, 1.0
    net.run(s.n_steps * c.dt_ms * b2.ms)

    theirs = np.round(np.asarray(monitor.t / b2.ms) / c.dt_ms).astype(np.int64)
    mine = ours.spike_steps[0, 0]
    assert len(theirs) >= 10
    np.testing.assert_array_equal(mine[mine >= 0], theirs)
    np.testing.assert_allclose(ours.w_final[0, 0, 0, ~s.exc], np.asarray(inh.w), rtol=1e-6, atol=1e-12)
    assert np.ptp(np.asarray(inh.w)) > 0.05  # the weights did move


def _trace(spike_steps, at_steps, tau_steps, strict):
    """sum over spikes k of exp(-(t - t_k) / tau), t_k <= t (strict: t_k < t), per t in at_steps."""
    d = at_steps[:, None] - spike_steps[None, :]
    ok = d > 0 if strict else d >= 0
    return np.where(ok, np.exp(-np.where(ok, d, 0) / tau_steps), 0.0).sum(axis=1)


@pytest.mark.parametrize("rule, part", [("pre: 0; post: x_pre", "post"), ("pre: x_post; post: 0", "pre")])
def test_traces_match_their_closed_form(rule, part):
    """With weights that only grow (no clipping), each weight's total change is eta times the sum of
    the trace at its events: x_pre at the output spikes (including input spikes of the same step),
    x_post at the afferent's spikes (output spikes of earlier steps only)."""
    task = load_task(ISTDP, SHORT + ("network.w_max=1e6", "network.eta=0.001", "network.tau_pre_ms=15",
                                     "network.tau_post_ms=30"))
    c, s = task.config, task.state
    res = task.simulate([task.parse(rule)], record=True)
    out = res.spike_steps[0, 0]
    out = out[out >= 0]
    assert len(out) >= 5
    steps, affs = _spike_times(task)
    inh = np.flatnonzero(~s.exc)
    dw = res.w_final[0, 0, 0] - s.w0[0, 0]
    for j in inh[:40]:
        mine = steps[affs == j]
        if part == "post":
            want = _trace(mine, out, c.tau_pre_ms / c.dt_ms, strict=False).sum()
        else:
            want = _trace(out, mine, c.tau_post_ms / c.dt_ms, strict=True).sum()
        assert dw[j] == pytest.approx(c.eta * want, rel=1e-9, abs=1e-15)
    assert np.all(dw[s.exc] == 0)


def test_weights_are_clipped_to_zero_and_w_max():
    task = load_task(ISTDP, SHORT + ("network.w_max=3.0",))
    res = task.simulate([task.parse(r) for r in ("pre: 100; post: 0", "pre: -100; post: 0")])
    s = task.state
    inh = ~s.exc
    assert np.all(res.w_final[0, 0, 0, inh] == 3.0) and np.all(res.w_final[1, 0, 0, inh] == 0.0)
    assert np.all(res.w_final[:, 0, 0, s.exc] == s.w0[0, 0, s.exc])


def test_refractory_period_bounds_the_interspike_intervals():
    """Driven hard, the neuron fires again soon after the refractory period ends: a 12 ms period
    bounds every interval at 120 steps, where 2 ms lets shorter ones through."""
    def intervals(refractory_ms):
        task = load_task(ISTDP, SHORT + (f"network.refractory_ms={refractory_ms}", "inputs.rate_hz=60",
                                         "inputs.inh_per_channel=0"))
        out = task.simulate([task.parse("pre: 0; post: 0")], record=True).spike_steps[0, 0]
        return np.diff(out[out >= 0])
    long, short = intervals(12), intervals(2)
    assert len(long) > 50 and long.min() >= 120
    assert np.sum(short < 120) > 10


def test_vogels_rule_holds_the_target_rate_on_heldout_drives_and_others_do_not():
    """The known answer: on drives the task never trains on, the Vogels rule keeps 5 +- 0.5 Hz with
    inhibition tuned like excitation; no plasticity and plain Hebbian inhibition do not."""
    task = load_task(ISTDP)
    _, test = task.split()
    rules = [task.parse(r) for r in ("pre: x_post - 0.22; post: x_pre", "pre: 0; post: 0",
                                     "pre: x_post; post: x_pre")]
    res = task.sim.simulate(test, pack_rules(rules))
    rates, corr = output_rates(test, res), balance(test, res)
    assert np.all(np.abs(rates[0] - 5.0) <= 0.5) and np.all(corr[0] >= 0.8), (rates[0], corr[0])
    assert np.all(rates[1] > 15)  # no plasticity: the drive sets the rate
    assert np.all(rates[2] < 2)  # Hebbian inhibition grows until the neuron is nearly silent
    losses = task.evaluate(rules)
    assert losses[0] < 0.05 and losses[1] > 1 and losses[2] > 0.5


def test_target_rate_moves_the_set_point():
    task = load_task(ISTDP, ("objective.target_rate=10",))
    good, old = task.evaluate([task.parse(r) for r in ("pre: x_post - 0.42; post: x_pre",
                                                       "pre: x_post - 0.22; post: x_pre")])
    assert good < 0.05 < old


@pytest.mark.parametrize("override, message", [
    ('network.plastic=["ei"]', "field 'network.plastic' is ['ei']: expected a list of distinct pathways from ee, ie"),
    ("network.plastic=[]", "field 'network.plastic' is []"),
    ("network.dt_ms=2", "field 'network.dt_ms' is 2: expected at most 1 ms"),
    ("network.dt_ms=0", "field 'network.dt_ms' is 0: expected a positive number"),
    ("network.v_threshold_mv=-70", "field 'network.v_threshold_mv' is -70: expected above e_leak_mv"),
    ("network.tau_pre_ms=-5", "field 'network.tau_pre_ms' is -5"),
    ("network.w_max=0", "field 'network.w_max' is 0: expected a positive number"),
    ("network.capacitance=200", "network.capacitance"),
    ("inputs.score_s=30", "field 'inputs.score_s' is 30: expected at most trial_s (20)"),
    ("inputs.drives=[]", "field 'inputs.drives' is empty"),
    ("inputs.drives=[1, -1]", "field 'inputs.drives' is [1.0, -1.0]: expected non-negative"),
    ("inputs.preferred_channel=9", "field 'inputs.preferred_channel' is 9"),
    ("inputs.trial_s=1e6", "field 'inputs.trial_s' is 1e+06"),
    ("inputs.exc_per_channel=0", "field 'inputs.exc_per_channel' and inh_per_channel are 0"),
    ("objective.target_rate=0", "field 'objective.target_rate' is 0: expected a positive number"),
    ("objective.max_rate=4", "field 'objective.max_rate' is 4: expected above target_rate (5)"),
    ("objective.target=5", "objective.target"),
])
def test_bad_fields_name_the_field(override, message):
    if "inh_per_channel are 0" in message:
        override = (override, "inputs.inh_per_channel=0")
    with pytest.raises(TaskError, match=None) as err:
        load_task(ISTDP, (override,) if isinstance(override, str) else override)
    assert message in str(err.value) and str(ISTDP) in str(err.value)


@pytest.mark.parametrize("rule, message", [
    ("x_post - 0.2", "names no pathway"),
    ("pre: x_post - 0.2", "no expression for pathway post"),
    ("pre: x_post; post: y", "unknown name 'y'"),
    ("ie.pre: x_post; ie.post: x_pre", "unknown pathway 'ie.pre'"),
])
def test_bad_rules_are_one_line_exit_2(rule, message, tmp_path, capsys):
    assert main(["simulate", str(ISTDP), "--rule", rule, "--out", str(tmp_path / "o.npz")]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "o.npz").exists()


def test_simulate_writes_spikes_weights_and_figure(tmp_path, capsys):
    out = tmp_path / "istdp.npz"
    assert main(["simulate", str(ISTDP), "--rule", "pre: x_post - 0.2; post: x_pre", "--out", str(out),
                 "--set", "inputs.trial_s=3", "--set", "inputs.score_s=1", "--set", "inputs.drives=[1.0, 1.5]"]) == 0
    assert "wrote" in capsys.readouterr().out
    with np.load(out, allow_pickle=False) as d:
        assert d["w"].shape == (2, 30, 1000) and d["drives"].tolist() == [1.0, 1.5]
        assert d["output_spike_times_s"].shape == d["output_spike_trial"].shape
        assert d["output_spike_times_s"].max() < 3.0 and set(d["output_spike_trial"]) == {0, 1}
        assert d["input_spike_afferent"].max() < 1000 and d["rate_hz"].shape == (2,)
        assert np.all(d["w"][:, 0, ~d["exc"]] == 0.1) and np.any(d["w"][:, -1, ~d["exc"]] != 0.1)
    assert (tmp_path / "istdp.png").stat().st_size > 10_000


def test_doublet_family_carries_its_time_constants_to_the_simulator():
    """A doublet candidate with tau_pre 30 ms, tau_post 12 ms simulates exactly like its rule on a task
    whose traces have those time constants; the parameters read back as the rule and the taus."""
    from rulesearch.families import DoubletFamily
    task = load_task(ISTDP, SHORT)
    family = DoubletFamily(task.space)
    assert family.names == ["log_tau_pre", "log_tau_post", "alpha", "beta", "gamma", "kappa"]
    params = np.array([np.log(30 / 20), np.log(12 / 20), -0.2, 0.05, 0.8, 1.1])
    fitted = task.sim.simulate(task, family.pack(params))
    same = load_task(ISTDP, SHORT + ("network.tau_pre_ms=30", "network.tau_post_ms=12"))
    rule = family.rule(params)
    assert rule.text() == "pre: 1.1*x_post - 0.2; post: 0.8*x_pre + 0.05"
    reference = same.simulate([rule])
    np.testing.assert_array_equal(fitted.spikes_total, reference.spikes_total)
    np.testing.assert_allclose(fitted.w_final, reference.w_final, rtol=1e-12)
    assert not np.allclose(fitted.w_final, task.simulate([rule]).w_final)  # the taus matter
    np.testing.assert_allclose(family.taus_ms(params), [[30.0, 12.0]])


def test_doublet_fit_writes_coefficients_and_heldout_scores(tmp_path, capsys):
    out = tmp_path / "fit"
    assert main(["fit", str(ISTDP), "--family", "doublet", "--generations", "2", "--out", str(out),
                 "--set", "inputs.trial_s=2", "--set", "inputs.score_s=1", "--set", "inputs.heldout_trial_s=2",
                 "--set", "inputs.heldout_score_s=1"]) == 0
    text = capsys.readouterr().out
    assert "tau_pre" in text and "held-out drives" in text
    rows = (out / "coefficients.csv").read_text().splitlines()
    assert rows[0] == "term,monomial,value" and rows[1].startswith("tau_pre_ms,") and len(rows) == 7
    assert main(["latex", str(out)]) == 0
    assert "x_{\\mathrm{post}}" in capsys.readouterr().out


def test_doublet_family_needs_a_spiking_task():
    with pytest.raises(TaskError, match="'doublet'.*'rate' simulator does not run"):
        from rulesearch.fit import make_family
        make_family(load_task(ROOT / "tasks" / "oja.toml", ('fit.family="doublet"',)))
