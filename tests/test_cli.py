"""The command line as a user meets it: run folders, data, LaTeX, and one-line errors."""
import csv
import json
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT
from rulesearch.cli import main
from rulesearch.data import load_activity

OJA = str(ROOT / "tasks" / "oja.toml")
FIT = str(ROOT / "tasks" / "fit-activity.toml")
FAST = ["--set", "inputs.steps=400", "--set", "network.eta=0.01", "--set", "inputs.trials=2"]


def test_evolve_writes_run_folder(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["evolve", OJA, "--seed", "3", "--population", "40", "--generations", "2",
                 "--out", str(out)] + FAST) == 0
    rows = list(csv.DictReader(open(out / "pareto.csv")))
    assert list(rows[0]) == ["complexity", "loss", "expression", "latex", "selected"]
    assert sum(int(r["selected"]) for r in rows) == 1
    info = json.loads((out / "run.json").read_text())
    for key in ("seed", "overrides", "versions", "elapsed_seconds", "evaluations", "task"):
        assert key in info
    assert info["seed"] == 3 and info["overrides"] == FAST[1::2]
    assert (out / "front.png").stat().st_size > 1000
    assert json.loads((out / "checkpoint.json").read_text())["generation"] == 2
    printed = capsys.readouterr().out
    assert "selected:" in printed

    # show and latex read the folder
    assert main(["show", str(out)]) == 0
    assert main(["latex", str(out)]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith(r"\Delta w_{ij} = ")
    assert main(["latex", str(out), "--table"]) == 0
    assert r"\begin{tabular}" in capsys.readouterr().out

    # resume continues the same folder; a fresh run may not overwrite it
    assert main(["evolve", OJA, "--resume", str(out), "--generations", "3"]) == 0
    assert json.loads((out / "checkpoint.json").read_text())["generation"] == 3
    assert main(["evolve", OJA, "--out", str(out)] + FAST) == 2
    assert "already holds an 'evolve' run of task 'oja'" in capsys.readouterr().err


def test_latex_of_rule(capsys):
    assert main(["latex", "--rule", "y*(x - y*w)", "--simplify"]) == 0
    assert capsys.readouterr().out.strip() == r"\Delta w_{ij} = - w_{ij} y_i^{2} + x_j y_i"


def test_simulate_schema_noise_and_sparsity(tmp_path):
    out = tmp_path / "d.npz"
    assert main(["simulate", FIT, "--rule", "x*y - 0.5*y**2*w", "--out", str(out), "--seed", "2",
                 "--noise", "0.1", "--observed", "0.34"]) == 0
    data = load_activity(out)
    trials, steps, n_out = data.y.shape
    recorded = ~np.isnan(data.y[0, 0])
    assert recorded.sum() == 1 and np.all(np.isnan(data.y[:, :, ~recorded]))
    assert data.meta["rule"] == "-0.5*w*y**2 + x*y" and data.meta["noise"] == 0.1
    assert data.w0.shape == (trials, n_out, data.x.shape[2])


@pytest.mark.parametrize("args, message", [
    (["evolve", "nope.toml"], "nope.toml: file not found"),
    (["evolve", OJA, "--set", "network.eta=-1"], "field 'network.eta' is -1"),
    (["evolve", FIT], "needs recorded activity"),
    (["evolve", FIT, "--data", "missing.npz"], "missing.npz: file not found"),
    (["simulate", OJA, "--rule", "x*q", "--out", "o.npz"], "unknown name 'q'"),
    (["simulate", OJA, "--rule", "x*y", "--out", "o.npz"], "blows up"),
    (["simulate", OJA, "--rule", "x", "--out", "o.npz", "--observed", "0"], "--observed 0.0"),
    (["show", "nowhere"], "nowhere: no such folder"),
    (["evolve", OJA, "--workers", "99"], "--workers 99: expected 1.."),
])
def test_bad_input_is_one_line_exit_2(tmp_path, monkeypatch, capsys, args, message):
    monkeypatch.chdir(tmp_path)
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "o.npz").exists()


def test_console_script_exit_code(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("name = 3\n")
    proc = subprocess.run([sys.executable, "-m", "rulesearch.cli", "evolve", str(bad)],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"rulesearch evolve: error: {bad}: field 'name' is 3: expected a string"


def test_ctrl_c_saves_and_exits_cleanly(tmp_path):
    import signal
    import time
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "rulesearch.cli", "evolve", OJA, "--population", "60",
                             "--generations", "100000", "--out", str(out)] + FAST,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (out / "checkpoint.json").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    time.sleep(1.0)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert "--resume" in stdout
    info = json.loads((out / "run.json").read_text())
    assert info["status"] == "interrupted"
    assert sum(int(r["selected"]) for r in csv.DictReader(open(out / "pareto.csv"))) == 1
    # a complete file, not a torn one, holding the last generation run (checkpoints are otherwise
    # written at most every 2 s; an interrupted run writes its last whole generation)
    assert json.loads((out / "checkpoint.json").read_text())["generation"] == info["generations_run"]
