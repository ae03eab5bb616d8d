"""The run cache (vaelib.runs, vaelib.paths): one cache wherever a run is asked for, keyed by the code
version, with one trainer per run directory. Several tests use real processes: two trainers racing for one
run, a lock holder killed with SIGKILL, a chapter's code run from two working directories."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

import vaelib.config as config_module
from vaelib import paths, runs
from vaelib.config import RunConfig
from vaelib.evaluate import cached
from vaelib.train import fit, fit_or_load

ROOT = Path(__file__).resolve().parents[1]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VAELIB_")}
    return {**env, "OMP_NUM_THREADS": "1", **extra}


def _python(code: str, cwd: Path, env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


# --- one cache, wherever the code runs -----------------------------------------------------------------
@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """A throwaway checkout: this repository's vaelib/, pyproject.toml and an empty notebooks/ folder, so its
    run cache (<checkout>/runs) is not the real one."""
    root = tmp_path / "checkout"
    shutil.copytree(ROOT / "vaelib", root / "vaelib", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy2(ROOT / "pyproject.toml", root / "pyproject.toml")
    (root / "notebooks").mkdir()
    return root


def test_the_run_cache_is_the_same_from_the_root_and_from_notebooks(checkout: Path, data_dir: Path) -> None:
    code = """
        import torch; torch.set_num_threads(1)
        from vaelib import paths, runs
        from vaelib.config import RunConfig
        from vaelib.train import fit_or_load
        config = RunConfig(latent_dim=2, hidden_dim=16, epochs=1, batch_size=50, train_size=100, test_size=50,
                           device="cpu")
        trained = not runs.run_dir(config).exists()
        run = fit_or_load(config, progress=False)
        print(paths.runs_dir(), run.path, "trained" if trained else "loaded")
    """
    env = _env(PYTHONPATH=str(checkout), VAELIB_DATA=str(data_dir))
    first = _python(code, checkout, env)
    second = _python(code, checkout / "notebooks", env)  # a kernel started in notebooks/, as papermill's is
    assert first.returncode == 0 and second.returncode == 0, first.stderr + second.stderr
    (cache_a, dir_a, what_a), (cache_b, dir_b, what_b) = first.stdout.split(), second.stdout.split()
    assert cache_a == cache_b == str(checkout / "runs")
    assert dir_a == dir_b and (what_a, what_b) == ("trained", "loaded")
    assert not (checkout / "notebooks" / "runs").exists(), "a second cache appeared under notebooks/"


def test_environment_variables_override_the_checkout(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("VAELIB_RUNS", str(tmp_path / "elsewhere"))
    monkeypatch.delenv("VAELIB_RESULTS", raising=False)
    assert paths.runs_dir() == tmp_path / "elsewhere"
    assert paths.results_dir() == tmp_path / "elsewhere" / "results"
    monkeypatch.chdir(tmp_path)
    assert paths.runs_dir("relative") == tmp_path / "relative"  # an argument wins, made absolute
    monkeypatch.delenv("VAELIB_RUNS")
    assert paths.runs_dir() == ROOT / "runs"


# --- a cache keyed by the code that makes the numbers ----------------------------------------------------
def test_a_run_made_by_another_code_version_is_never_loaded(tiny_config: RunConfig, data_dir: Path,
                                                             tmp_path: Path, monkeypatch) -> None:
    config = tiny_config.replace(epochs=1, train_size=100)
    old = fit_or_load(config, tmp_path, data_dir=data_dir, progress=False)
    assert json.loads((old.path / "config.json").read_text())["code_version"] == config_module.CODE_VERSION
    monkeypatch.setattr(config_module, "CODE_VERSION", config_module.CODE_VERSION + 1)

    new = fit_or_load(config, tmp_path, data_dir=data_dir, progress=False)  # retrained, elsewhere
    assert new.path != old.path and new.path.name == config.run_name()
    with pytest.raises(runs.StaleRunError, match=rf"{old.path.name}.*version {config_module.CODE_VERSION - 1}"):
        runs.load_run(old.path)
    with pytest.raises(runs.StaleRunError, match="Delete the directory"):
        fit(config.replace(epochs=2), old.path, resume=True, data_dir=data_dir, progress=False)


def test_runs_from_before_code_versions_count_as_another_version(tiny_config: RunConfig, data_dir: Path,
                                                                 tmp_path: Path) -> None:
    config = tiny_config.replace(epochs=1, train_size=100)
    run = fit(config, tmp_path / "run", data_dir=data_dir, progress=False)
    saved = json.loads((run.path / "config.json").read_text())
    del saved["code_version"]  # what every cache written before this change holds
    (run.path / "config.json").write_text(json.dumps(saved))
    with pytest.raises(runs.StaleRunError, match="version 0"):
        runs.load_run(run.path)
    assert runs.completed_run(run.path, config) is None


def test_evaluations_cached_by_other_code_are_recomputed(tmp_path: Path, monkeypatch) -> None:
    calls = []

    def compute() -> dict:
        calls.append(1)
        return {"value": float(len(calls))}

    assert cached(tmp_path, {"what": "x"}, compute) == {"value": 1.0}
    assert cached(tmp_path, {"what": "x"}, compute) == {"value": 1.0} and len(calls) == 1
    monkeypatch.setattr(config_module, "CODE_VERSION", config_module.CODE_VERSION + 1)
    assert cached(tmp_path, {"what": "x"}, compute) == {"value": 2.0}  # not the old file's value
    for path in tmp_path.glob("eval-*.json"):  # a file under this name whose stored key is another one
        path.write_text(json.dumps({"key": {"what": "other"}, "result": {"value": -1.0}}))
    assert cached(tmp_path, {"what": "x"}, compute) == {"value": 3.0}


# --- one trainer per run ------------------------------------------------------------------------------
_TRAIN_TWO_EPOCHS = """
    import sys, torch; torch.set_num_threads(1)
    from vaelib.config import RunConfig
    from vaelib.train import fit_or_load
    config = RunConfig(latent_dim=3, hidden_dim=32, epochs=2, batch_size=50, train_size=300, test_size=50,
                       device="cpu")
    run = fit_or_load(config, sys.argv[1], data_dir=sys.argv[2], progress=False)
    print(run.path, float(sum(p.sum() for p in run.model.parameters())))
"""


def test_two_processes_asking_for_one_run_train_it_once(tmp_path: Path, data_dir: Path) -> None:
    script = tmp_path / "train.py"
    script.write_text(textwrap.dedent(_TRAIN_TWO_EPOCHS))
    env = _env(PYTHONPATH=str(ROOT))
    procs = [subprocess.Popen([sys.executable, str(script), str(tmp_path / "runs"), str(data_dir)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err for _, err in outs]
    (path_a, weights_a), (path_b, weights_b) = (out.split() for out, _ in outs)
    assert path_a == path_b and weights_a == weights_b
    history = Path(path_a) / "history.csv"
    assert len(history.read_text().strip().splitlines()) == 1 + 2, "two trainers wrote into one history"
    assert any("waiting for run" in err for _, err in outs), "the second process did not wait for the first"


def test_a_lock_whose_holder_was_killed_is_taken_over(tmp_path: Path) -> None:
    out = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import time
            from vaelib.runs import run_lock
            with run_lock({str(out)!r}):
                print("locked", flush=True)
                time.sleep(600)
        """)], env=_env(PYTHONPATH=str(ROOT)), stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        waiter = _python(f"""
            import sys, threading
            from vaelib.runs import run_lock
            threading.Timer(5.0, lambda: (sys.stdout.flush(), __import__("os")._exit(3))).start()
            with run_lock({str(out)!r}, log=lambda m: print(m, flush=True)):
                print("never while the holder lives")
            __import__("os")._exit(0)
        """, tmp_path, _env(PYTHONPATH=str(ROOT)), timeout=60)
        assert waiter.returncode == 3 and "waiting for run" in waiter.stdout and "pid" in waiter.stdout
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
        started = time.monotonic()
        taker = _python(f"""
            from vaelib.runs import run_lock
            with run_lock({str(out)!r}):
                print("taken over")
        """, tmp_path, _env(PYTHONPATH=str(ROOT)), timeout=60)
        assert taker.returncode == 0 and taker.stdout.strip() == "taken over", taker.stderr
        assert time.monotonic() - started < 30
    finally:
        if holder.poll() is None:
            holder.kill()


def test_the_lock_is_reentrant_within_a_process(tmp_path: Path) -> None:
    with runs.run_lock(tmp_path / "run"), runs.run_lock(tmp_path / "run"):
        pass  # fit_or_load holds the lock and calls fit, which takes it again: no self-deadlock
    with runs.run_lock(tmp_path / "run"):  # released after the outer block
        pass


def test_a_half_written_checkpoint_is_never_loaded(tiny_config: RunConfig, data_dir: Path, tmp_path: Path) -> None:
    config = tiny_config.replace(epochs=1, train_size=100)
    run = fit(config, tmp_path / "run", data_dir=data_dir, progress=False)
    good = runs.load_checkpoint(run.path)
    # What a process killed inside torch.save leaves: a truncated temporary file beside the checkpoint.
    (run.path / ".checkpoint.pt.abc123.tmp").write_bytes(b"PK\x03\x04 truncated")
    assert runs.checkpoint_epoch(run.path) == 1
    loaded = runs.load_run(run.path, "cpu")
    for name, value in good["model"].items():
        torch.testing.assert_close(loaded.model.state_dict()[name], value, rtol=0, atol=0)
