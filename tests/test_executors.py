"""train_many through every executor (vaelib.executors): a local process pool and submitit's local executor
(real subprocesses, Slurm's code path without the scheduler) train real quick runs whose directories and
numbers equal the in-process ones; a second call loads instead of training; bad settings are refused."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch

from vaelib import executors, runs
from vaelib.config import ConfigError, RunConfig

TIMING = ["seconds", "eval_seconds"]


def _configs(tiny_config: RunConfig) -> list[RunConfig]:
    base = tiny_config.replace(epochs=2, train_size=200, test_size=50)
    return [base.replace(latent_dim=2), base.replace(latent_dim=3)]


@pytest.fixture
def one_torch_thread():
    # The workers get one thread each on this 2-core machine: compare against in-process runs at the same
    # thread count, where the numbers are identical (another count changes float32 rounding in the last bits).
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _assert_same_runs(a: list, b: list) -> None:
    for x, y in zip(a, b, strict=True):
        assert x.path.name == y.path.name
        pd.testing.assert_frame_equal(x.history.drop(columns=TIMING), y.history.drop(columns=TIMING))
        for name, value in x.model.state_dict().items():
            torch.testing.assert_close(y.model.state_dict()[name], value, rtol=0, atol=0, msg=name)


@pytest.mark.parametrize("kind", ["local:2", "submitit-local"])
def test_executors_train_what_the_process_trains(kind: str, tiny_config: RunConfig, data_dir: Path, tmp_path: Path,
                                                 one_torch_thread, monkeypatch) -> None:
    monkeypatch.setattr(executors, "threads_per_worker", lambda jobs: 1)
    configs = _configs(tiny_config)
    here = executors.train_many(configs, tmp_path / "here", data_dir, executor="inprocess", progress=False)
    there = executors.train_many(configs, tmp_path / "there", data_dir, executor=kind, progress=False)
    _assert_same_runs(here, there)
    assert sorted(p.name for p in (tmp_path / "there").iterdir() if not p.name.startswith(".")) == sorted(
        c.run_name() for c in configs)

    def no_training(*args, **kwargs):
        raise AssertionError("train_many dispatched a run that the cache already holds")

    monkeypatch.setattr(executors, "map_jobs", no_training)
    again = executors.train_many(configs, tmp_path / "there", data_dir, executor=kind, progress=False)
    _assert_same_runs(there, again)


@pytest.mark.parametrize("text, word", [("lcoal:2", "local"), ("local:0", "local:N"), ("local", "local:N"),
                                        ("slurm:4", "only local takes a count")])
def test_bad_executors_are_refused_naming_the_value(text: str, word: str) -> None:
    with pytest.raises(ConfigError, match=word):
        executors.parse_executor(text)


def test_the_executor_comes_from_the_environment(monkeypatch) -> None:
    monkeypatch.setenv("VAELIB_EXECUTOR", "slurm")
    monkeypatch.setenv("VAELIB_SLURM_PARTITION", "gpu")
    monkeypatch.setenv("VAELIB_SLURM_GPUS", "1")
    monkeypatch.setenv("VAELIB_SLURM_TIME", "90")
    spec = executors.executor_from_environment()
    assert (spec.kind, spec.partition, spec.gpus_per_job, spec.time_minutes) == ("slurm", "gpu", 1, 90)
    monkeypatch.setenv("VAELIB_SLURM_TIME", "1h")
    with pytest.raises(ConfigError, match="VAELIB_SLURM_TIME='1h'"):
        executors.executor_from_environment()
    monkeypatch.delenv("VAELIB_EXECUTOR")
    assert executors.executor_from_environment().kind == "inprocess"


def test_train_many_checks_every_config_first(tiny_config: RunConfig, tmp_path: Path) -> None:
    with pytest.raises(TypeError, match=r"configs\[1\]"):
        executors.train_many([tiny_config, tiny_config.to_dict()], tmp_path, executor="local:2")
    assert not (tmp_path / runs.run_dir(tiny_config, tmp_path).name).exists()


def test_figure3_staged_runs_through_a_pool_equal_the_process(tiny_config: RunConfig, data_dir: Path,
                                                              tmp_path: Path, one_torch_thread, monkeypatch) -> None:
    from vaelib.experiments import figure3

    monkeypatch.setattr(executors, "threads_per_worker", lambda jobs: 1)
    configs = [c.replace(epochs=3) for c in figure3.figure3_configs([200], ["aevb", "wake-sleep"], 600,
                                                                     hidden_dim=16, test_size=50, device="cpu")]
    kwargs = dict(data_dir=data_dir, k=8, n_points=40, points_per_decade=1, min_samples=200, progress=False)
    here = figure3.run_figure3(configs, tmp_path / "here", executor="inprocess", **kwargs)
    there = figure3.run_figure3(configs, tmp_path / "there", executor="local:2", **kwargs)
    assert len(here) == len(there) > 0
    pd.testing.assert_frame_equal(here.drop(columns=["seconds", "train_seconds"]),
                                  there.drop(columns=["seconds", "train_seconds"]))


def test_a_failing_job_names_itself(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="job-b failed in its worker: ZeroDivisionError"):
        executors.map_jobs(divmod, [(1, 1), (1, 0)], ["job-a", "job-b"], executors.parse_executor("local:2"),
                           progress=False)


def test_another_thread_count_changes_only_float32_rounding(data_dir: Path, tmp_path: Path) -> None:
    # `report build --jobs 2` gives each notebook one thread where a sequential build gives two. Matrix
    # products then sum in another order: after 60 steps the bounds differ by about 6e-5 nats here (measured),
    # so the tolerance is 1e-3 nats; over thousands of steps the difference grows like any float noise, and
    # the headline numbers of a --jobs build move within their stated uncertainty (book/rerun.md).
    config = RunConfig(dataset="binarized-mnist", latent_dim=5, hidden_dim=200, epochs=3, train_size=2000,
                       test_size=500, device="cpu")
    before = torch.get_num_threads()
    histories = []
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            run = executors.train_many([config], tmp_path / f"threads{threads}", data_dir, executor="inprocess",
                                       progress=False)[0]
            histories.append(run.history)
    finally:
        torch.set_num_threads(before)
    one, two = histories
    for column in ("train_elbo", "test_elbo"):
        assert (one[column] - two[column]).abs().max() < 1e-3, column
