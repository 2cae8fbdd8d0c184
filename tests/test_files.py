"""Grammar, task and data files: every shipped file loads; every bad field gets one clear error."""

import numpy as np
import pytest

from conftest import GRAMMARS, ROOT, TASKS
from rulesearch.data import ActivityData, load_activity, save_activity
from rulesearch.errors import DataError, GrammarError, TaskError
from rulesearch.grammar import load_grammar
from rulesearch.tasks import load_task


@pytest.mark.parametrize("path", GRAMMARS, ids=lambda p: p.name)
def test_shipped_grammars_load(path):
    g = load_grammar(path)
    assert g.terminals and g.operators


@pytest.mark.parametrize("path", TASKS, ids=lambda p: p.name)
def test_shipped_tasks_load(path, tmp_path):
    from rulesearch.choices import save_choices_npz
    from rulesearch.sims.choice import simulate_choices
    from rulesearch.sims.rate import simulate_activity
    task = load_task(path, seed=3, require_data=False)
    rules = ["x*y - y**2*w", "x*y"]
    if task.space.names == ("pre", "post"):  # a spiking task: event-driven parts
        rules = ["pre: x_post - 0.2; post: x_pre", "pre: x_post; post: x_pre"]
    elif task.space.names[0].endswith(".pre"):  # a spiking network: a rule on the first pathway's two parts
        rules = ["; ".join(f"{name}: {r[k] if k < 2 else 0}" for k, name in enumerate(task.space.names))
                 for r in (("x_post - 0.2", "x_pre"), ("x_post", "x_pre"))]
    elif task.space.multi:  # the rule on the first pathway, no plasticity on the others
        rules = ["; ".join(f"{name}: {r if k == 0 else 0}" for k, name in enumerate(task.space.names))
                 for r in rules]
    if task.objective == "fit_activity":  # data-fitting tasks: make data, then load with it
        save_activity(tmp_path / "d.npz", simulate_activity(task, task.parse(rules[0]), seed=3))
        task = load_task(path, data=tmp_path / "d.npz")
    if task.objective == "preserve_dynamics":  # scores over a synapse's weight and covariances
        rules = ["abs(w)*(c_pre + c_post - 2*sign(w)*c)", "abs(w)"]
    if task.objective in ("fit_choices", "fit_choice_activity"):
        rules = ["x*(r - rbar)", "x*r"]
        noise = 0.1 if task.objective == "fit_choice_activity" else None  # the recorded output, with noise
        save_choices_npz(tmp_path / "c.npz", simulate_choices(task, task.parse(rules[0]), animals=2, seed=3,
                                                              activity_noise=noise))
        task = load_task(path, data=tmp_path / "c.npz")
    losses = task.evaluate([task.parse(r) for r in rules])
    assert losses.shape == (2,) and np.all(np.isfinite(losses))


def _write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text)
    return p


GOOD_GRAMMAR = """
name = "g"
[terminals]
x = { symbol = "x_j" }
w = { symbol = "w" }
[operators]
use = ["add", "mul"]
"""


@pytest.mark.parametrize("text, message", [
    ("name = 'g'", "field 'terminals' is missing"),
    ("[terminals]\nz = {}", "field 'terminals.z' is not a known variable"),
    ("[terminals]\nx = { symbol = 3 }", "field 'terminals.x.symbol' is 3: expected a string"),
    ("[terminals]\nx = {}\n[operators]\nuse = ['add', 'pow']", "unknown operator 'pow'"),
    ("[terminals]\nx = {}\n[operators]\nuse = ['neg']", "has no binary operator"),
    ("[terminals]\nx = {}\n[constants]\nrange = [1, -1]", "expected low < high"),
    ("[terminals]\nx = {}\n[limits]\nmax_depth = 0", "field 'limits.max_depth' is 0: expected at least 1"),
    ("[terminals]\nx = {}\n[limit]\nmax_depth = 3", "field 'limit' is not a known field"),
    ("[terminals\nx = {}", "invalid TOML"),
])
def test_grammar_errors(tmp_path, text, message):
    path = _write(tmp_path, "bad.toml", text)
    with pytest.raises(GrammarError, match=message) as info:
        load_grammar(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_grammar_missing_file(tmp_path):
    with pytest.raises(GrammarError, match="file not found"):
        load_grammar(tmp_path / "none.toml")


ORIGINAL = (ROOT / "tasks" / "oja.toml").read_text()


@pytest.mark.parametrize("old, new, message", [
    ('name = "pca"', 'name = "pcaa"', "field 'objective.name' is 'pcaa': expected one of pca, pca_subspace, fit_activity, fit_choices"),
    ("n_in = 8", "", "field 'network.n_in' is missing: expected an integer"),
    ("n_in = 8", "n_in = 'eight'", "field 'network.n_in' is 'eight': expected an integer"),
    ('activation = "linear"', 'activation = "relu"', "field 'network.activation' is 'relu'"),
    ("eta = 0.005", "eta = -1.0", "field 'network.eta' is -1.0: expected at least 0.0"),
    ('grammar = "hebbian"', 'grammar = "nope"', "field 'grammar' is 'nope': no such grammar file"),
    ("n_out = 1", "n_out = 2", "objective 'pca' needs a single output neuron"),
    ("[search]", "[search]\npopulaton = 5", "field 'search.populaton' is not a known field"),
])
def test_task_errors(tmp_path, old, new, message):
    assert old in ORIGINAL
    path = _write(tmp_path, "task.toml", ORIGINAL.replace(old, new))
    with pytest.raises(TaskError, match=message) as info:
        load_task(path)
    assert str(path) in str(info.value)


PCA_NETWORK = (ROOT / "tasks" / "pca-network.toml").read_text()


@pytest.mark.parametrize("old, new, message", [
    ("[pathways.lat] ", "[pathways.rec] ", "field 'pathways.rec' is not a pathway of the 'rate' network "
                                          r"\(pathways: ff, lat\)"),
    ('activation = "linear"', 'activation = "tanh"', "a network with lateral weights has linear outputs"),
    ('lateral = "symmetric"', 'lateral = "full"', "field 'network.lateral' is 'full': expected one of none, "
                                                  "symmetric, hierarchical"),
    ('eta = 0.009', 'eta = 0.009\ngrammar = "reward"', "grammar 'reward' uses r, rbar, which the 'rate' "
                                                        "simulator does not provide on pathway 'lat'"),
    ("[inputs]", "[protocol]\nanimals = 3\n[inputs]", r"section \[protocol\] is not used by the 'rate' simulator"),
    ("eta = 0.009", "eta = 0.009\nsymbl = 'M'", "field 'pathways.lat.symbl' is not a known field"),
])
def test_pathway_task_errors(tmp_path, old, new, message):
    assert old in PCA_NETWORK
    path = _write(tmp_path, "task.toml", PCA_NETWORK.replace(old, new.replace("\\n", "\n"), 1))
    with pytest.raises(TaskError, match=message) as info:
        load_task(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_choice_task_refuses_fields_it_does_not_use(tmp_path):
    text = (ROOT / "tasks" / "fly-choice.toml").read_text()
    for old, new, message in [('activation = "tanh"', 'activation = "linear"', "expected one of tanh"),
                              ("init_std = 0.01", "init_std = 0.01\nsteps = 10", "field 'inputs.steps' is not a known field")]:
        path = _write(tmp_path, "fly.toml", text.replace(old, new.replace("\\n", "\n"), 1))
        with pytest.raises(TaskError, match=message):
            load_task(path, require_data=False)


def test_overrides_apply_and_are_validated():
    task = load_task(ROOT / "tasks" / "oja.toml", ["network.eta=0.01", "inputs.steps=50"])
    assert task.etas[0] == 0.01 and task.state.x.shape[1] == 50
    with pytest.raises(TaskError, match="field 'network.etta' is not a known field"):
        load_task(ROOT / "tasks" / "oja.toml", ["network.etta=0.01"])
    with pytest.raises(TaskError, match="expected section.key=value"):
        load_task(ROOT / "tasks" / "oja.toml", ["network.eta"])


def test_seeded_inputs_are_reproducible():
    a = load_task(ROOT / "tasks" / "oja.toml", seed=4)
    b = load_task(ROOT / "tasks" / "oja.toml", seed=4)
    c = load_task(ROOT / "tasks" / "oja.toml", seed=5)
    assert np.array_equal(a.state.x, b.state.x) and not np.array_equal(a.state.x, c.state.x)


def test_fit_activity_needs_data():
    with pytest.raises(TaskError, match="needs recorded activity: pass --data"):
        load_task(ROOT / "tasks" / "fit-activity.toml")


# ---------------------------------------------------------------- data files

def _good(rng, trials=2, steps=5, n_in=3, n_out=2):
    return {"x": rng.normal(size=(trials, steps, n_in)), "y": rng.normal(size=(trials, steps, n_out)),
            "w0": rng.normal(size=(trials, n_out, n_in))}


def test_data_round_trip(tmp_path, rng):
    arrays = _good(rng)
    arrays["y"][:, :, 1] = np.nan
    save_activity(tmp_path / "d.npz", ActivityData(arrays["x"], arrays["y"], arrays["w0"], {"rule": "x"}))
    data = load_activity(tmp_path / "d.npz")
    np.testing.assert_array_equal(data.y, arrays["y"])
    assert data.meta == {"rule": "x"}


def test_data_written_by_plain_numpy(tmp_path, rng):
    """Any program that follows the schema: float32, no meta."""
    arrays = {k: v.astype(np.float32) for k, v in _good(rng).items()}
    np.savez(tmp_path / "d.npz", **arrays)
    assert load_activity(tmp_path / "d.npz").x.dtype == np.float64


@pytest.mark.parametrize("change, message", [
    (lambda a: a.pop("y"), "array 'y' is missing: expected float \\(trials, steps, n_out\\)"),
    (lambda a: a.update(x=a["x"][0]), "array 'x' has shape \\(5, 3\\): expected \\(trials, steps, n_in\\)"),
    (lambda a: a.update(w0=a["w0"][:, :1]), "array 'w0' has shape \\(2, 1, 3\\): expected"),
    (lambda a: a.update(y=a["y"][:, :4]), "array 'y' has shape \\(2, 4, 2\\)"),
    (lambda a: a.update(y=np.full_like(a["y"], np.nan)), "array 'y' is all NaN"),
    (lambda a: a.update(x=a["x"].astype(str)), "array 'x' has dtype <U"),
    (lambda a: a.update(x=np.where(a["x"] > 1, np.inf, a["x"])), "array 'x' has NaN or inf"),
    (lambda a: a.update(x=np.array([None] * 30, dtype=object).reshape(2, 5, 3)), "holds Python objects"),
])
def test_data_errors(tmp_path, rng, change, message):
    arrays = _good(rng)
    change(arrays)
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(DataError, match=message) as info:
        load_activity(path)
    assert str(path) in str(info.value)


def test_data_not_npz(tmp_path):
    path = _write(tmp_path, "d.npz", "hello")
    with pytest.raises(DataError, match="not an NPZ file"):
        load_activity(path)
    with pytest.raises(DataError, match="file not found"):
        load_activity(tmp_path / "missing.npz")


def test_run_files_get_open_permissions_and_no_temp_left(tmp_path):
    import os
    from rulesearch.results import write_json
    mask = os.umask(0o027)
    try:
        write_json(tmp_path / "r.json", {"a": 1})
    finally:
        os.umask(mask)
    assert (tmp_path / "r.json").stat().st_mode & 0o777 == 0o640
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]


def test_importing_rulesearch_selects_no_matplotlib_backend():
    import subprocess
    import sys
    # (cma, a dependency, imports pyplot itself; rulesearch's figures never need it)
    code = "import sys, rulesearch.plots; print('matplotlib.pyplot' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "False"
