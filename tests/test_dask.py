"""Population evaluation on a real Dask cluster (LocalCluster worker processes): same answers as
the local evaluator, faults, and one-line errors."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import ROOT
from rulesearch.cli import main
from rulesearch.data import save_activity
from rulesearch.evaluators import DaskEvaluator
from rulesearch.gp import Search
from rulesearch.sims.rate import simulate_activity
from rulesearch.tasks import load_task

distributed = pytest.importorskip("distributed")

OJA = str(ROOT / "tasks" / "oja.toml")
FIT = str(ROOT / "tasks" / "fit-activity.toml")
PCA = ROOT / "tasks" / "pca-network.toml"
FAST = ["--set", "inputs.steps=400", "--set", "network.eta=0.01", "--set", "inputs.trials=2"]


@pytest.fixture(scope="module")
def cluster():
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                                  silence_logs=50) as c:
        yield c


def _files(folder, *names):
    return {n: (folder / n).read_text() for n in names}


def test_evolve_on_a_local_cluster_writes_the_same_front(tmp_path):
    args = ["evolve", OJA, "--seed", "3", "--population", "60", "--generations", "3"] + FAST
    assert main(args + ["--out", str(tmp_path / "local")]) == 0
    assert main(args + ["--out", str(tmp_path / "dask"), "--evaluator", "dask", "--workers", "2"]) == 0
    assert _files(tmp_path / "local", "pareto.csv") == _files(tmp_path / "dask", "pareto.csv")
    info = json.loads((tmp_path / "dask" / "run.json").read_text())
    assert info["evaluator"] == "dask" and info["workers"] == 2 and info["scheduler"] is None


def test_fit_and_a_data_task_give_the_same_results(tmp_path, cluster):
    task = load_task(FIT, ("inputs.trials=4", "inputs.steps=150"), require_data=False, seed=1)
    save_activity(tmp_path / "d.npz", simulate_activity(task, task.parse("x*y - 0.5*y**2*w")))
    small = ["--set", "inputs.trials=4", "--set", "inputs.steps=150", "--data", str(tmp_path / "d.npz")]
    # CMA-ES: its generations go through the evaluator (an LM fit simulates in-process)
    for kind, extra, files in (("fit", ["--generations", "15", "--set", "fit.optimizer=cmaes"],
                                ("coefficients.csv", "params.json")),
                               ("evolve", ["--population", "40", "--generations", "2"], ("pareto.csv",))):
        assert main([kind, FIT, "--seed", "2", "--out", str(tmp_path / f"{kind}-local")] + small + extra) == 0
        assert main([kind, FIT, "--seed", "2", "--out", str(tmp_path / f"{kind}-dask"), "--evaluator", "dask",
                     "--scheduler", cluster.scheduler_address] + small + extra) == 0
        assert _files(tmp_path / f"{kind}-local", *files) == _files(tmp_path / f"{kind}-dask", *files)


def test_each_worker_has_its_own_numba_cache(tmp_path):
    task = load_task(OJA, ("inputs.steps=100", "inputs.trials=2"))
    ev = DaskEvaluator(task, workers=2, cache_dir=str(tmp_path / "numba"))  # fresh worker processes
    try:
        seen = ev.client.run(lambda dask_worker: dask_worker.rulesearch_numba["cache_dir"])
    finally:
        ev.close()
    folders = sorted(seen.values())
    assert len(set(folders)) == 2 and all(f.startswith(str(tmp_path / "numba")) for f in folders)
    # the warm-up compiled the kernels into each worker's own folder
    assert all(any(p.suffix == ".nbi" for p in (tmp_path / "numba").rglob("*") if str(p).startswith(f))
               for f in folders)


def test_a_worker_killed_mid_search_changes_nothing(cluster):
    task = load_task(PCA, ("inputs.steps=400", "inputs.trials=2"), seed=4)
    reference = Search(task, seed=4, population=60, generations=4).run()
    ev = DaskEvaluator(task, cluster.scheduler_address)
    pids = list(ev.client.run(os.getpid).values())
    killed = []

    def kill_one(state):
        if state["generation"] == 1 and not killed:  # in the middle of the search
            os.kill(pids[0], signal.SIGKILL)
            killed.append(pids[0])
    try:
        result = Search(task, ev, seed=4, population=60, generations=4).run(checkpoint=kill_one)
    finally:
        ev.close()
    assert killed
    assert [(e.expression, e.loss) for e in result.front] == [(e.expression, e.loss) for e in reference.front]
    assert result.evaluations == reference.evaluations


def test_dask_missing_is_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "distributed", None)  # as if it were not installed
    out = tmp_path / "run"
    assert main(["evolve", OJA, "--evaluator", "dask", "--out", str(out)] + FAST) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pip install 'rulesearch[dask]'" in err and not out.exists()


def test_bad_scheduler_address_is_one_line(tmp_path, capsys, monkeypatch):
    import rulesearch.evaluators
    monkeypatch.setattr(rulesearch.evaluators, "CONNECT_TIMEOUT_S", 2)
    assert main(["evolve", OJA, "--evaluator", "dask", "--scheduler", "tcp://127.0.0.1:9",
                 "--out", str(tmp_path / "run")] + FAST) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--scheduler tcp://127.0.0.1:9: cannot connect" in err
    assert main(["evolve", OJA, "--scheduler", "tcp://127.0.0.1:9"] + FAST) == 2
    assert "--scheduler is for --evaluator dask" in capsys.readouterr().err


def _generation(checkpoint) -> int:
    """The generation of a checkpoint file (written atomically), -1 before there is one."""
    return json.loads(checkpoint.read_text())["generation"] if checkpoint.exists() else -1


def test_scheduler_lost_mid_run_keeps_the_checkpoint_and_resumes_locally(tmp_path):
    out = tmp_path / "run"
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None,
                                  silence_logs=50) as c:
        proc = subprocess.Popen([sys.executable, "-m", "rulesearch.cli", "evolve", OJA, "--population", "60",
                                 "--generations", "100000", "--evaluator", "dask", "--scheduler",
                                 c.scheduler_address, "--out", str(out)] + FAST,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.time() + 120
        # checkpoints are written at most every 2 s: wait for one past the first generation
        while _generation(out / "checkpoint.json") < 1 and time.time() < deadline and proc.poll() is None:
            time.sleep(0.2)
        time.sleep(1.0)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 2, stderr
    assert "Traceback" not in stderr and stderr.strip().count("\n") == 0
    assert "lost the Dask scheduler" in stderr and "--resume" in stderr
    state = json.loads((out / "checkpoint.json").read_text())  # a complete file, not a torn one
    assert state["generation"] >= 1
    assert main(["evolve", OJA, "--resume", str(out), "--generations", str(state["generation"] + 1)]) == 0
    assert json.loads((out / "run.json").read_text())["evaluator"] == "local"
