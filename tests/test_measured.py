"""Measured runs (vaelib.experiments.measured): a Fig. 2 measurement grown in stages equals the same runs
trained straight to the final budget, every stage leaves all runs at one reach in the exported folder, and
the chapters draw what was exported."""

from __future__ import annotations

import json

import matplotlib
import pandas as pd
import pytest
import torch

from vaelib import figures
from vaelib.experiments import figure2, measured
from vaelib.experiments.measured import grow_figure2, load_figure2
from vaelib.train import fit_or_load

matplotlib.use("Agg")
TIMING = ["seconds", "eval_seconds"]


@pytest.fixture
def tiny_frey(monkeypatch):
    g = torch.Generator().manual_seed(0)
    x = (torch.rand(60, 560, generator=g) * 255).to(torch.uint8)
    from vaelib.data import Dataset

    data = Dataset("freyface", x[:40], None, x[40:], None, (1, 28, 20))
    monkeypatch.setattr("vaelib.train.load_dataset", lambda *a, **k: data)
    monkeypatch.setattr(measured, "train_set_size", lambda dataset, n: 40)
    return data


def test_staged_growth_equals_one_straight_run(tiny_frey, tmp_path) -> None:
    configs = figure2.figure2_configs("freyface", [2, 3], samples_budget=200, train_size=40, hidden_dim=8,
                                      device="cpu")
    out = tmp_path / "measured"
    grow_figure2(configs, [80], out, tmp_path / "cache", None, "inprocess")
    first = load_figure2(out)
    assert first.groupby(["method", "latent_dim"])["samples_seen"].max().eq(80).all()  # one reach for all

    grow_figure2(configs, [80, 200], out, tmp_path / "cache", None, "inprocess")
    grown = measured.load_measured(out)
    assert len(grown) == len(configs)
    for config in configs:
        straight = fit_or_load(config, tmp_path / "straight", progress=False)
        saved = [h for c, h in grown if c.method == config.method and c.latent_dim == config.latent_dim]
        assert len(saved) == 1 and saved[0]["epoch"].max() == config.epochs
        # The stage boundary adds a test evaluation at epoch 2 (80 samples) that the straight run lacks;
        # every other number is the same, bit for bit: resuming is exact.
        rows = saved[0][saved[0]["epoch"] != 2].drop(columns=TIMING).reset_index(drop=True)
        expected = straight.history[straight.history["epoch"] != 2].drop(columns=TIMING).reset_index(drop=True)
        pd.testing.assert_frame_equal(rows, expected)

    table = load_figure2(out)
    fig = figures.plot_figure2(table, "freyface", ylim=None,
                               measured=table, measured_label="10^7 samples, 2-core CPU")
    gids = {line.get_gid() for ax in fig.axes for line in ax.get_lines()}
    assert {f"measured|aevb|{d}|test" for d in (2, 3)} <= gids
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert "AEVB test, 10^7 samples, 2-core CPU" in labels and "AEVB test" in labels


def test_the_folder_records_every_call(tiny_frey, tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(measured, "_figure2_configs", lambda samples, datasets, seed: figure2.figure2_configs(
        "freyface", [2], samples, methods=("aevb",), train_size=40, hidden_dim=8, device="cpu"))
    monkeypatch.setattr(measured.step_size, "resolve_step_sizes", lambda configs, *a, **k: (configs, None))
    for samples in ("80", "120"):
        measured.main(["figure2", "--datasets", "freyface", "--samples", samples, "--out", str(tmp_path / "m"),
                       "--runs-dir", str(tmp_path / "cache"), "--executor", "inprocess"])
    calls = json.loads((tmp_path / "m" / "README.json").read_text())["calls"]
    assert [c["command"].split("--samples ")[1].split()[0] for c in calls] == ["80", "120"]
    summary = measured.describe(tmp_path / "m")
    assert summary["runs"] == 1 and summary["max_samples"] == 120
    assert not list((tmp_path / "m").glob("*/checkpoint.pt"))  # records only


def test_an_unknown_data_set_is_refused_before_training(tmp_path) -> None:
    from vaelib.config import ConfigError

    with pytest.raises(ConfigError, match="frey-face"):
        measured.main(["figure2", "--datasets", "frey-face", "--out", str(tmp_path / "m"),
                       "--runs-dir", str(tmp_path / "cache")])
    assert not (tmp_path / "cache").exists()


def test_paper_cost_scales_measured_seconds_to_the_paper_budget(tiny_frey, tmp_path, monkeypatch) -> None:
    configs = figure2.figure2_configs("freyface", [2], samples_budget=120, methods=("aevb",), train_size=40,
                                      hidden_dim=8, device="cpu")
    out = tmp_path / "book" / "measured" / "m"
    grow_figure2(configs, [120], out, tmp_path / "cache", None, "inprocess")
    monkeypatch.setattr(measured, "measured_dir", lambda name: tmp_path / "book" / "measured" / name)
    (config, history), = measured.load_measured(out)
    cost = measured.paper_cost(["m"], paper_samples=1e8)
    seconds = history["seconds"].sum()
    assert cost["core_hours"].iloc[0] == pytest.approx(seconds / 120 * 1e8 / 3600)
    assert cost["us_per_sample"].iloc[0] == pytest.approx(seconds / 120 * 1e6)


def test_a_measurement_stopped_between_stages_says_what_it_reached(tiny_frey, tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(measured, "_figure2_configs", lambda samples, datasets, seed: figure2.figure2_configs(
        "freyface", [2], samples, methods=("aevb",), train_size=40, hidden_dim=8, device="cpu"))
    monkeypatch.setattr(measured.step_size, "resolve_step_sizes", lambda configs, *a, **k: (configs, None))
    real_map_jobs, calls_made = measured.map_jobs, []

    def stop_at_second_stage(*args, **kwargs):
        calls_made.append(1)
        if len(calls_made) == 2:
            raise KeyboardInterrupt  # as the machine going away mid-stage
        return real_map_jobs(*args, **kwargs)

    monkeypatch.setattr(measured, "map_jobs", stop_at_second_stage)
    with pytest.raises(KeyboardInterrupt):
        measured.main(["figure2", "--datasets", "freyface", "--stages", "80", "--samples", "120",
                       "--out", str(tmp_path / "m"), "--runs-dir", str(tmp_path / "cache"), "--executor", "inprocess"])
    (call,) = json.loads((tmp_path / "m" / "README.json").read_text())["calls"]
    assert call["reached"] == "80 samples per run"
    assert measured.describe(tmp_path / "m")["max_samples"] == 80
    assert "80 samples per run" in (tmp_path / "m" / "README.md").read_text()


def test_step_size_trials_of_other_data_sets_are_kept(tmp_path) -> None:
    frey = pd.DataFrame({"lr": [0.01, 0.02], "score": [1.0, 2.0], "dataset": "freyface", "chosen": [False, True]})
    mnist = pd.DataFrame({"lr": [0.01], "score": [-3.0], "dataset": "binarized-mnist", "chosen": [True]})
    measured._keep_trials(tmp_path, frey)
    measured._keep_trials(tmp_path, mnist)
    measured._keep_trials(tmp_path, mnist.assign(score=-2.0))  # a later call for MNIST replaces MNIST's rows
    kept = pd.read_csv(tmp_path / measured.TRIALS_FILE)
    assert sorted(kept["dataset"]) == ["binarized-mnist", "freyface", "freyface"]
    assert kept.loc[kept["dataset"] == "binarized-mnist", "score"].tolist() == [-2.0]


def test_the_label_gives_the_range_of_budgets_the_runs_reached(tiny_frey, tmp_path, monkeypatch) -> None:
    configs = figure2.figure2_configs("freyface", [2], samples_budget=120, methods=("aevb", "wake-sleep"),
                                      train_size=40, hidden_dim=8, device="cpu")
    out = tmp_path / "book" / "measured" / "m"
    monkeypatch.setattr(measured, "measured_dir", lambda name: tmp_path / "book" / "measured" / name)
    grow_figure2(configs[:1], [4000], out, tmp_path / "cache", None, "inprocess")
    assert measured.label("m").startswith("measured to 4e3 samples")
    grow_figure2(configs[1:], [200], out, tmp_path / "cache", None, "inprocess")  # one run stops earlier
    assert measured.label("m").startswith("measured to 2e2–4e3 samples")
