"""Tests of the Fig. 2 / Fig. 3 drivers: budgets become the right epochs, tiny runs give the long tables the
plots expect, and the plots draw one line per (method, Nz or N_train, split)."""

from __future__ import annotations

import math

import matplotlib
import numpy as np
import pandas as pd
import pytest
import torch

from vaelib import figures, runs
from vaelib.config import ConfigError, RunConfig
from vaelib.data import Dataset
from vaelib.experiments import figure2, figure3, settings, step_size

matplotlib.use("Agg")


def _tiny_dataset(n_train: int = 40, n_test: int = 20, seed: int = 0) -> Dataset:
    """A Frey Face-shaped stand-in (28x20 grey images), so no data file is needed."""
    g = torch.Generator().manual_seed(seed)
    x = (torch.rand(n_train + n_test, 560, generator=g) * 255).to(torch.uint8)
    return Dataset("freyface", x[:n_train], None, x[n_train:], None, (1, 28, 20))


# --- budgets -------------------------------------------------------------------------------------------------
def test_epochs_cover_the_samples_budget() -> None:
    for samples, n in [(1e6, 60_000), (1e8, 1572), (2e4, 1000), (5, 1000), (60_000, 60_000)]:
        epochs = settings.epochs_for_samples(samples, n)
        assert epochs * n >= samples  # the budget is reached
        assert epochs == 1 or (epochs - 1) * n < samples  # by no more than one epoch too many


def test_figure2_configs_derive_epochs_and_paper_settings() -> None:
    configs = figure2.figure2_configs("binarized-mnist", samples_budget=1e6)
    assert [(c.latent_dim, c.method) for c in configs[:2]] == [(3, "aevb"), (3, "wake-sleep")]
    assert sorted({c.latent_dim for c in configs}) == [3, 5, 10, 20, 200]
    for c in configs:
        assert c.epochs == math.ceil(1e6 / 60_000)
        assert c.hidden_dim == 500 and c.likelihood == "bernoulli" and c.activation == "tanh"
        assert c.optimizer == "adagrad" and c.batch_size == 100 and c.n_samples == 1
        assert c.eval_schedule == "log"
        assert c.weight_decay == pytest.approx(1 / 60_000)
    frey = figure2.figure2_configs("freyface", samples_budget=1e8, lr={"aevb": 0.1, "wake-sleep": 0.01})
    assert {c.latent_dim for c in frey} == {2, 5, 10, 20}
    assert all(c.epochs * 1572 >= 1e8 and c.hidden_dim == 200 and c.likelihood == "gaussian" for c in frey)
    assert {(c.method, c.lr) for c in frey} == {("aevb", 0.1), ("wake-sleep", 0.01)}
    # Frey Face epochs are 16 steps: checkpoints must not be written every epoch.
    assert all(c.checkpoint_every >= 50 for c in frey)


def test_subset_changes_the_epochs() -> None:
    configs = figure2.figure2_configs("binarized-mnist", [2], samples_budget=1e4, train_size=2000)
    assert all(c.epochs == 5 and c.weight_decay == pytest.approx(1 / 2000) for c in configs)


@pytest.mark.parametrize("kwargs, word", [
    ({"dataset": "cifar10"}, "cifar10"),
    ({"dataset": "freyface", "latent_dims": [0]}, "latent_dims"),
    ({"dataset": "freyface", "methods": ["aevb", "gibbs"]}, "gibbs"),
    ({"dataset": "freyface", "samples_budget": -1}, "samples budget"),
    ({"dataset": "freyface", "lr": {"aevb": 0.1}}, "wake-sleep"),
])
def test_bad_input_is_refused_with_the_value(kwargs, word) -> None:
    with pytest.raises(ConfigError, match=word):
        figure2.figure2_configs(**kwargs)


def test_figure3_configs_and_stages() -> None:
    configs = figure3.figure3_configs(samples_budget={"aevb": 1e6, "wake-sleep": 1e6, "mcem": 1e5},
                                    mcem_settings={"hmc_transitions": 3})
    assert [(c.train_size, c.method) for c in configs] == [
        (1000, "aevb"), (1000, "wake-sleep"), (1000, "mcem"),
        (50_000, "aevb"), (50_000, "wake-sleep"), (50_000, "mcem")]
    assert all(c.latent_dim == 3 and c.hidden_dim == 100 for c in configs)
    epochs = {(c.train_size, c.method): c.epochs for c in configs}
    assert epochs[(1000, "aevb")] == 1000 and epochs[(1000, "mcem")] == 100
    assert epochs[(50_000, "aevb")] == 20 and epochs[(50_000, "mcem")] == 2
    assert [c.extra for c in configs if c.method == "mcem"] == [{"hmc_transitions": 3}] * 2
    assert all(c.extra == {} for c in configs if c.method != "mcem")

    stages = figure3.stage_epochs(1000, 1000, points_per_decade=2, min_samples=1e4)
    assert stages == sorted(set(stages)) and stages[-1] == 1000 and stages[0] == 10
    samples = np.array(stages) * 1000
    assert np.allclose(np.diff(np.log10(samples)), 0.5, atol=0.02)  # two per decade
    assert figure3.stage_epochs(3, 50_000)[-1] == 3 and figure3.stage_epochs(1, 50_000) == [1]


# --- tiny runs -----------------------------------------------------------------------------------------------
def test_run_figure2_long_table(tmp_path, monkeypatch) -> None:
    data = _tiny_dataset()
    monkeypatch.setattr("vaelib.train.load_dataset", lambda *a, **k: data)
    configs = figure2.figure2_configs("freyface", [2, 3], samples_budget=200, train_size=40, hidden_dim=8)
    assert all(c.epochs == 5 for c in configs)
    df = figure2.run_figure2(configs, runs_dir=tmp_path, progress=False)
    assert list(df.columns) == figure2.FIG2_COLUMNS
    assert set(df["method"]) == {"aevb", "wake-sleep"} and set(df["latent_dim"]) == {2, 3}
    assert set(df["split"]) == {"train", "test"}
    train = df[df["split"] == "train"]
    assert len(train) == 4 * 5  # one train row per epoch and run
    assert sorted(train["samples_seen"].unique()) == [40, 80, 120, 160, 200]
    test = df[df["split"] == "test"]
    assert test.groupby(["method", "latent_dim"])["samples_seen"].max().eq(200).all()  # last epoch evaluated
    assert np.isfinite(df["elbo"]).all()
    # A second call loads the cached runs instead of training: the same table.
    again = figure2.run_figure2(configs, runs_dir=tmp_path, progress=False)
    pd.testing.assert_frame_equal(df, again)

    summary = figure2.figure2_summary(df)
    assert set(summary["latent_dim"]) == {2, 3}
    assert np.allclose(summary["aevb_minus_ws_test"], summary["aevb_test"] - summary["wake-sleep_test"])
    assert all(isinstance(s, str) and s for s in figure2.figure2_findings(df))

    fig = figures.plot_figure2(df, "freyface", ylim=None)
    lines = [line for ax in fig.axes for line in ax.get_lines() if line.get_gid()]
    assert sorted(line.get_gid() for line in lines) == sorted(
        f"{m}|{d}|{s}" for m in ("aevb", "wake-sleep") for d in (2, 3) for s in ("train", "test"))
    styles = {line.get_gid().split("|")[2]: line.get_linestyle() for line in lines}
    assert styles == {"train": "-", "test": "--"}  # the book's one convention: training solid, test dashed
    assert all(ax.get_xscale() == "log" for ax in fig.axes if ax.get_visible())


def test_plot_figure2_paper_range_and_note() -> None:
    rows = [{"dataset": "binarized-mnist", "method": m, "latent_dim": 3, "epoch": e, "samples_seen": e * 60_000,
             "split": s, "elbo": -170.0 + 10 * e} for m in ("aevb", "wake-sleep") for e in (1, 2, 3)
            for s in ("train", "test")]
    fig = figures.plot_figure2(pd.DataFrame(rows), "binarized-mnist")
    ax = fig.axes[0]
    assert ax.get_ylim() == (-150.0, -100.0)
    assert any("outside" in t.get_text() for t in ax.texts) is False  # every end point (-140) is inside
    five = pd.DataFrame([dict(r, latent_dim=d) for r in rows for d in (3, 5, 10, 20, 200)])
    grid = {a.get_subplotspec().get_geometry()[:2] for a in figures.plot_figure2(five, "binarized-mnist").axes}
    assert grid == {(2, 3)}  # five panels in two rows of three, not one row of thin panels
    rows = [dict(r, elbo=r["elbo"] - 50) for r in rows]
    ax = figures.plot_figure2(pd.DataFrame(rows), "binarized-mnist").axes[0]
    assert any("outside" in t.get_text() for t in ax.texts)


def test_run_figure3_stages_and_table(tmp_path, monkeypatch) -> None:
    data = _tiny_dataset(n_train=30, n_test=20)
    monkeypatch.setattr("vaelib.experiments.figure3.load_dataset", lambda *a, **k: data)
    configs = figure3.figure3_configs(train_sizes=(30,), methods=("aevb", "wake-sleep"), samples_budget=300,
                                    hidden_dim=8, dataset="freyface", test_size=20)
    kwargs = dict(k=20, n_points=10, min_samples=30, estimators=("is", "paper"), last_stage={"paper": ["test"]},
                  estimator_kwargs={"paper": {"n_posterior_samples": 10, "n_chains": 2, "n_burnin": 5}})
    df = figure3.run_figure3(configs, runs_dir=tmp_path, progress=False, **kwargs)
    assert list(df.columns) == figure3.FIG3_COLUMNS
    stages = figure3.stage_epochs(10, 30, min_samples=30)
    # The paper's estimator: only after the last stage, only on the test points.
    hmc = df[df["estimator"] == "paper"]
    assert sorted(zip(hmc["method"], hmc["epoch"], hmc["split"], strict=True)) == [
        ("aevb", 10, "test"), ("wake-sleep", 10, "test")]
    assert set(figure3.compare_estimators(df, ("is", "paper"))["split"]) == {"test"}
    df = df[df["estimator"] == "is"]
    for method in ("aevb", "wake-sleep"):
        part = df[df["method"] == method]
        assert sorted(part["epoch"].unique()) == stages
        assert set(part["split"]) == {"train", "test"} and (part["n_points"] == 10).all()
        assert (part["proposal"] == "encoder q(z|x)").all()
    assert np.isfinite(df["log_likelihood"]).all() and (df["sem"] >= 0).all()
    # Each stage kept its weights; the run directory grew to the last stage.
    out = runs.staged_run_dir(configs[0], tmp_path)
    assert sorted(p.name for p in out.glob("model-epoch*.pt")) == [f"model-epoch{e:06d}.pt" for e in stages]
    # Asking again trains and estimates nothing: the cached estimates come back unchanged.
    again = figure3.run_figure3(configs, runs_dir=tmp_path, progress=False, **kwargs)
    pd.testing.assert_frame_equal(df, again[again["estimator"] == "is"])

    fig = figures.plot_figure3(df)
    gids = sorted(line.get_gid() for ax in fig.axes for line in ax.get_lines() if line.get_gid())
    assert gids == sorted(f"{m}|30|{s}" for m in ("aevb", "wake-sleep") for s in ("train", "test"))
    assert all(isinstance(s, str) and s for s in figure3.figure3_findings(df))
    records = list(figure3.records(df))
    assert {r["key"] for r in records} == {"aevb_n30_test_log_px", "wake-sleep_n30_test_log_px"}


def test_staged_training_matches_one_run(tmp_path, monkeypatch) -> None:
    """Stopping at stages and resuming must give the same weights as training straight through."""
    from vaelib.train import fit

    data = _tiny_dataset(n_train=30, n_test=20)
    monkeypatch.setattr("vaelib.experiments.figure3.load_dataset", lambda *a, **k: data)
    config = figure3.figure3_configs(train_sizes=(30,), methods=("aevb",), samples_budget=150, hidden_dim=8,
                                   dataset="freyface", test_size=20)[0]
    figure3.run_figure3([config], runs_dir=tmp_path, k=5, n_points=5, min_samples=30, progress=False)
    staged = torch.load(runs.staged_run_dir(config, tmp_path) / f"model-epoch{config.epochs:06d}.pt")
    straight = fit(config, tmp_path / "straight", progress=False, dataset=data).model.state_dict()
    for name, value in straight.items():
        torch.testing.assert_close(staged[name], value)


def test_figure3_rejects_unknown_estimator(tmp_path) -> None:
    configs = [RunConfig(dataset="freyface", train_size=30, epochs=1)]
    with pytest.raises(ConfigError, match="harmonic"):
        figure3.run_figure3(configs, runs_dir=tmp_path, estimators=("harmonic",), progress=False)


def test_resolve_step_sizes(tmp_path, monkeypatch) -> None:
    data = _tiny_dataset()
    monkeypatch.setattr("vaelib.train.load_dataset", lambda *a, **k: data)
    configs = figure2.figure2_configs("freyface", [2], samples_budget=80, train_size=40, hidden_dim=8)
    fixed, trials = step_size.resolve_step_sizes(configs, {"aevb": 0.1, "wake-sleep": 0.01}, runs_dir=tmp_path)
    assert trials is None and [c.lr for c in fixed] == [0.1, 0.01]
    with pytest.raises(ConfigError, match="fast"):
        step_size.resolve_step_sizes(configs, "fast")
    # "auto": a step size so large that training breaks down must lose against a sane one.
    chosen, trials = step_size.resolve_step_sizes(configs, {"aevb": "auto", "wake-sleep": 0.01}, candidates=(0.01, 1e3),
                                              samples=80, runs_dir=tmp_path, progress=False)
    assert chosen[0].lr == 0.01 and chosen[1].lr == 0.01
    assert set(trials["method"]) == {"aevb"} and trials["chosen"].sum() == 1
    assert trials.loc[trials["chosen"], "score"].item() == trials["score"].max()


def test_findings_report_the_orderings_in_the_table() -> None:
    """The sentences follow the numbers: AEVB ahead at Nz=2, behind at Nz=5; Nz=5 worse than Nz=2."""
    rows = []
    for latent_dim, aevb_end, ws_end in [(2, 500.0, 400.0), (5, 300.0, 350.0)]:
        for method, end in (("aevb", aevb_end), ("wake-sleep", ws_end)):
            for epoch in (1, 2, 3):
                for split in ("train", "test"):
                    rows.append({"dataset": "freyface", "method": method, "latent_dim": latent_dim, "epoch": epoch,
                                 "samples_seen": 1000 * epoch, "split": split, "elbo": end * epoch / 3})
    df = pd.DataFrame(rows)
    summary = figure2.figure2_summary(df).set_index("latent_dim")
    assert summary.loc[2, "aevb_minus_ws_test"] == pytest.approx(100.0)
    assert summary.loc[5, "aevb_ahead_share"] == 0.0
    text = " ".join(figure2.figure2_findings(df))
    assert "for Nz in [2] but not for Nz in [5]" in text
    assert "below the best Nz (Nz=2)" in text


def test_a_decoder_that_ignores_z_scores_the_pixelwise_gaussian() -> None:
    # Chapter 7 explains wake-sleep's Frey Face plateau by this equality: a VAE whose decoder is constant
    # (the per-pixel training mean and variance) and whose encoder outputs the prior has KL = 0, and its
    # ELBO is the pixelwise Gaussian's log-density, computed here independently by evaluate_elbo.
    from vaelib.evaluate import evaluate_elbo
    from vaelib.models import build_model

    data = _tiny_dataset(n_train=60, n_test=30)
    config = RunConfig(dataset="freyface", latent_dim=3, hidden_dim=8)
    model = build_model(config, (1, 28, 20))
    x_train = torch.cat(list(data.split_batches("train", 100))).double()
    loc, var = x_train.mean(0), x_train.var(0, unbiased=False)
    last_decoder, last_encoder = model.decoder[-1], [m for m in model.encoder.modules()
                                                     if isinstance(m, torch.nn.Linear)][-1]
    with torch.no_grad():
        for layer in (last_decoder, last_encoder):
            layer.weight.zero_()
            layer.bias.zero_()
        last_decoder.bias.copy_(torch.cat([torch.logit(loc), torch.log(var)]).float())
    bound = evaluate_elbo(model, data.split_batches("test", 100))
    expected = figure2.pixelwise_gaussian(data)
    assert bound["kl"] == pytest.approx(0.0, abs=1e-6)
    assert bound["elbo"] == pytest.approx(expected["test"], rel=1e-5)
    assert expected["train"] > expected["test"]  # fitted on the training frames


def _fig2_table(ends: dict[int, tuple[float, float]]) -> pd.DataFrame:
    """AEVB only: for each Nz its final (train, test) ELBO, reached linearly over three epochs."""
    rows = []
    for latent_dim, (train_end, test_end) in ends.items():
        for epoch in (1, 2, 3):
            for split, end in (("train", train_end), ("test", test_end)):
                rows.append({"dataset": "freyface", "method": "aevb", "latent_dim": latent_dim, "epoch": epoch,
                             "samples_seen": 1000 * epoch, "split": split, "elbo": end * epoch / 3})
    return pd.DataFrame(rows)


@pytest.mark.parametrize("ends, wording", [
    ({2: (500.0, 490.0), 20: (560.0, 520.0)}, "gap grows with Nz"),     # gap 10 -> 40 nats
    ({2: (500.0, 470.0), 20: (530.0, 505.0)}, "gap does not grow with Nz"),  # gap 30 -> 25 nats
])
def test_the_gap_sentence_follows_the_gaps(ends, wording) -> None:
    text = " ".join(figure2.figure2_findings(_fig2_table(ends)))
    assert wording in text
    gaps = {z: train - test for z, (train, test) in ends.items()}
    assert f"{gaps[2]:.1f} nats at Nz=2, {gaps[20]:.1f} at Nz=20" in text


@pytest.mark.parametrize("ws_elbo, ws_spread, verdict", [(558.9, 0.001, "its decoder ignores z"),
                                                         (590.0, 0.05, "every run uses z")])
def test_z_usage_findings_on_both_sides(ws_elbo, ws_spread, verdict) -> None:
    table = pd.DataFrame([
        {"method": "AEVB", "Nz": 2, "test ELBO": 700.0, "decoder spread over z": 0.06, "KL (nats)": 9.0,
         "active units": 2},
        {"method": "Wake-Sleep", "Nz": 2, "test ELBO": ws_elbo, "decoder spread over z": ws_spread,
         "KL (nats)": 0.01 if ws_spread < 0.01 else 5.0, "active units": 0},
        {"method": "no z (pixelwise Gaussian)", "Nz": 0, "test ELBO": 558.3, "decoder spread over z": 0.0,
         "KL (nats)": 0.0, "active units": 0}])
    sentences = figure2.z_usage_findings(table, data_spread=0.1)
    assert "558.3 nats" in sentences[0]
    assert sentences[1].startswith("AEVB: every run uses z")
    assert sentences[2].startswith("Wake-Sleep") and verdict in sentences[2]


def test_budget_table_has_one_row_per_data_set_and_method() -> None:
    configs = (figure2.figure2_configs("binarized-mnist", None, 3.6e5)
               + figure2.figure2_configs("freyface", None, 5e5))
    table = figure2.budget_table(configs)
    assert len(table) == 4 and len(configs) == 18
    assert table.loc[("MNIST", "AEVB", "60,000"), "latent sizes Nz"] == "3, 5, 10, 20, 200"
    assert table.loc[("MNIST", "AEVB", "60,000"), "epochs"] == "6"
    assert table.loc[("Frey Face", "Wake-Sleep", "1,572"), "samples per run"] == f"{319 * 1572:,}"
    fig3 = figure2.budget_table(figure3.figure3_configs([1000, 50_000], ["aevb", "mcem"], {"aevb": 1e6, "mcem": 5e4}))
    assert len(fig3) == 4  # one row per training-set size, not one per method
    assert fig3.loc[("MNIST", "MCEM", "1,000"), "epochs"] == "50"


@pytest.mark.parametrize("aevb_fast", [True, False])
def test_race_findings_on_samples_and_seconds(aevb_fast: bool) -> None:
    # MCEM: 4 s per 1,000 samples, ends at -145 after 5,000. AEVB: 0.1 s per 1,000 samples, rising.
    rows = []
    for method, seconds_per_k, curve in (("mcem", 4.0, {1000: -160.0, 5000: -145.0}),
                                         ("aevb", 0.1, {1000: -170.0, 5000: -150.0, 200_000: -140.0 if aevb_fast
                                                        else -148.0})):
        for samples, value in curve.items():
            rows.append({"method": method, "train_size": 50_000, "split": "test", "estimator": "is",
                         "samples_seen": samples, "train_seconds": seconds_per_k * samples / 1000,
                         "log_likelihood": value})
    text = " ".join(figure3.race_findings(pd.DataFrame(rows)))
    assert "MCEM is ahead of AEVB at the same 5,000 samples (AEVB: -150.0, -5.0)" in text
    # 20 s of MCEM training buy AEVB its 200,000-sample point (20 s).
    if aevb_fast:
        assert "MCEM is behind AEVB at the same 20 s of training (AEVB: -140.0, +5.0)" in text
        assert "is -140.0, above MCEM's" in text
    else:
        assert "MCEM is ahead of AEVB at the same 20 s of training (AEVB: -148.0, -3.0)" in text
        assert "below MCEM's" in text
    assert "costs MCEM 40 times" in text


def test_trials_table_marks_divergence_and_the_choice() -> None:
    trials = pd.DataFrame([
        {"dataset": "binarized-mnist", "method": "aevb", "lr": 0.01, "score": -210.0, "chosen": False},
        {"dataset": "binarized-mnist", "method": "aevb", "lr": 0.02, "score": -200.0, "chosen": True},
        {"dataset": "binarized-mnist", "method": "aevb", "lr": 0.1, "score": -197_943_104.0, "chosen": False},
        {"dataset": "freyface", "method": "aevb", "lr": 0.01, "score": 560.0, "chosen": True},
        {"dataset": "freyface", "method": "aevb", "lr": 0.02, "score": -math.inf, "chosen": False},
        {"dataset": "freyface", "method": "aevb", "lr": 0.1, "score": 300.0, "chosen": False}])
    table = step_size.trials_table(trials)
    assert table.loc[("binarized-mnist", "aevb")].tolist() == ["-210.0", "-200.0 *", "diverged"]
    assert table.loc[("freyface", "aevb")].tolist() == ["560.0 *", "diverged", "300.0"]
