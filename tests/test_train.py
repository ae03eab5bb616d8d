"""The training loop (vaelib.train) on the tiny MNIST fixture: learning, exact resume, the run cache, the NaN
guard and crash-safe checkpoints."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import vaelib.train as train
from vaelib.config import ConfigError, RunConfig
from vaelib.evaluate import evaluate_elbo
from vaelib.methods import NonFiniteLossError
from vaelib.runs import HISTORY_COLUMNS, load_run
from vaelib.train import fit, fit_or_load, kl_weight, learning_rate

TIMING_COLUMNS = ["seconds", "eval_seconds"]


def assert_same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        torch.testing.assert_close(sa[key], sb[key], rtol=0, atol=0, msg=key)


def test_training_raises_the_test_elbo(tiny_config: RunConfig, data_dir: Path, tmp_path: Path) -> None:
    run = fit(tiny_config.replace(epochs=4), tmp_path / "run", data_dir=data_dir, progress=False)
    history = run.history
    assert list(history.columns) == HISTORY_COLUMNS and list(history.epoch) == [1, 2, 3, 4]
    assert list(history.samples_seen) == [500, 1000, 1500, 2000]
    assert history[["train_elbo", "test_elbo", "train_kl", "test_kl"]].notna().all().all()
    first, last = history.iloc[0], history.iloc[-1]
    # An untrained decoder sits near 784 log 2 = 543 nats; a few epochs gain tens of nats. Demand 5.
    assert last.test_elbo > first.test_elbo + 5.0, history[["epoch", "train_elbo", "test_elbo"]]
    assert last.train_elbo > first.train_elbo + 5.0
    assert (history.test_kl > 0).all() and (history.test_elbo < 0).all()
    # The on-disk history is the same table.
    on_disk = pd.read_csv(run.path / "history.csv")
    pd.testing.assert_frame_equal(on_disk.drop(columns=TIMING_COLUMNS), history.drop(columns=TIMING_COLUMNS),
                                  check_dtype=False)


def test_resume_equals_an_uninterrupted_run(tiny_config: RunConfig, data_dir: Path, tmp_path: Path) -> None:
    tiny_config = tiny_config.replace(train_size=200)  # 4 steps per epoch: enough to tell the streams apart
    whole = fit(tiny_config, tmp_path / "whole", data_dir=data_dir, progress=False)  # 3 epochs
    fit(tiny_config.replace(epochs=1), tmp_path / "parts", data_dir=data_dir, progress=False)
    resumed = fit(tiny_config, tmp_path / "parts", resume=True, data_dir=data_dir, progress=False)
    assert list(resumed.history.epoch) == [1, 2, 3]
    for column in ("train_objective", "train_elbo", "train_kl", "test_elbo", "test_kl"):
        np.testing.assert_allclose(resumed.history[column], whole.history[column], rtol=1e-5, err_msg=column)
    assert_same_weights(resumed.model, whole.model)
    assert_same_weights(load_run(tmp_path / "parts", "cpu").model, whole.model)
    assert len(pd.read_csv(tmp_path / "parts" / "history.csv")) == 3
    # The comparison has teeth: another seed gives another history.
    other = fit(tiny_config.replace(seed=1, epochs=1), tmp_path / "other", data_dir=data_dir, progress=False)
    assert other.history.train_elbo[0] != whole.history.train_elbo[0]


def test_fit_refuses_to_overwrite_and_to_mix_experiments(tiny_config: RunConfig, data_dir: Path,
                                                          tmp_path: Path) -> None:
    config = tiny_config.replace(epochs=1, train_size=100)
    fit(config, tmp_path / "run", data_dir=data_dir, progress=False)
    mtime = (tmp_path / "run" / "checkpoint.pt").stat().st_mtime_ns
    with pytest.raises(FileExistsError, match="resume"):
        fit(config, tmp_path / "run", data_dir=data_dir, progress=False)
    with pytest.raises(ConfigError) as info:
        fit(config.replace(lr=0.01, epochs=2), tmp_path / "run", resume=True, data_dir=data_dir, progress=False)
    assert "lr=0.003" in str(info.value) and "0.01" in str(info.value)
    assert (tmp_path / "run" / "checkpoint.pt").stat().st_mtime_ns == mtime  # nothing was touched
    assert load_run(tmp_path / "run", "cpu").epochs_done == 1


def test_fit_or_load_loads_instead_of_retraining(tiny_config: RunConfig, data_dir: Path, tmp_path: Path,
                                                 monkeypatch) -> None:
    config = tiny_config.replace(epochs=1, train_size=100)
    monkeypatch.setenv("VAELIB_RUNS", str(tmp_path / "runs"))  # the default runs directory
    first = fit_or_load(config, data_dir=data_dir, progress=False)
    checkpoint = tmp_path / "runs" / config.run_name() / "checkpoint.pt"
    assert first.path == checkpoint.parent and checkpoint.exists()
    mtime = checkpoint.stat().st_mtime_ns

    def no_training(*args, **kwargs):
        raise AssertionError("fit_or_load trained again instead of loading the finished run")

    monkeypatch.setattr(train, "fit", no_training)
    again = fit_or_load(config.replace(device="auto"), data_dir=data_dir, progress=False)  # device: same run
    assert checkpoint.stat().st_mtime_ns == mtime
    assert_same_weights(again.model, first.model)
    pd.testing.assert_frame_equal(again.history, first.history)


def test_fit_or_load_finishes_an_interrupted_run(tiny_config: RunConfig, data_dir: Path, tmp_path: Path) -> None:
    config = tiny_config.replace(epochs=2, train_size=100)
    # An attempt that stopped after epoch 1 in the directory the 2-epoch config is keyed to.
    fit(config.replace(epochs=1), tmp_path / config.run_name(), data_dir=data_dir, progress=False)
    run = fit_or_load(config, tmp_path, data_dir=data_dir, progress=False)
    assert list(run.history.epoch) == [1, 2] and run.epochs_done == 2


def test_non_finite_loss_names_epoch_and_step_and_keeps_the_last_checkpoint(
        tiny_config: RunConfig, data_dir: Path, tmp_path: Path, monkeypatch) -> None:
    steps_per_epoch = math.ceil(tiny_config.train_size / tiny_config.batch_size)  # 10
    poisoned_call = steps_per_epoch + 5  # the 5th training step of epoch 2
    build = train.build_model

    def build_with_poisoned_decoder(config, image_shape):
        model = build(config, image_shape)
        calls = {"n": 0}

        def hook(module, inputs, output):
            if not module.training:  # the test-set evaluation is not a training step
                return output
            calls["n"] += 1
            return output * math.nan if calls["n"] >= poisoned_call else output

        model.decoder.register_forward_hook(hook)
        return model

    monkeypatch.setattr(train, "build_model", build_with_poisoned_decoder)
    with pytest.raises(NonFiniteLossError) as info:
        fit(tiny_config, tmp_path / "run", data_dir=data_dir, progress=False)
    message = str(info.value)
    assert "epoch 2" in message and "step 5" in message and "checkpoint" in message
    assert isinstance(info.value, FloatingPointError)
    monkeypatch.undo()
    last_good = load_run(tmp_path / "run", "cpu")
    assert last_good.epochs_done == 1
    assert all(torch.isfinite(p).all() for p in last_good.model.parameters())


def test_absurd_learning_rate_is_caught(tiny_config: RunConfig, data_dir: Path, tmp_path: Path) -> None:
    # No monkeypatching: a real divergence must be stopped by the guard, not crash elsewhere.
    config = tiny_config.replace(lr=1e30, optimizer="adagrad", epochs=2, train_size=200)
    with pytest.raises(NonFiniteLossError, match=r"epoch \d+, step \d+"):
        fit(config, tmp_path / "run", data_dir=data_dir, progress=False)


def test_checkpoints_are_atomic(tiny_config: RunConfig, data_dir: Path, tmp_path: Path, monkeypatch) -> None:
    config = tiny_config.replace(epochs=1, train_size=100)
    out = tmp_path / "run"
    first = fit(config, out, data_dir=data_dir, progress=False)
    assert not list(out.glob("*.tmp")), "a finished run leaves no temporary files"
    real_save = torch.save

    def crash_midway(obj, f, *args, **kwargs):
        real_save(obj, f, *args, **kwargs)
        f.flush()
        f.truncate(100)  # leave a truncated file, as a full disk or a kill would
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", crash_midway)
    with pytest.raises(OSError, match="No space left"):
        fit(config.replace(epochs=2), out, resume=True, data_dir=data_dir, progress=False)
    monkeypatch.undo()
    survivor = load_run(out, "cpu")  # the epoch-1 checkpoint is intact
    assert survivor.epochs_done == 1
    assert_same_weights(survivor.model, first.model)
    # And the run can go on from it.
    resumed = fit(config.replace(epochs=2), out, resume=True, data_dir=data_dir, progress=False)
    assert list(resumed.history.epoch) == [1, 2]
    assert not list(out.glob("*.tmp"))


def test_evaluate_elbo_is_repeatable_and_leaves_the_rng_alone(tiny_config: RunConfig, data_dir: Path) -> None:
    from vaelib.data import load_dataset
    from vaelib.models import build_model

    data = load_dataset("binarized-mnist", data_dir, train_size=10, test_size=100)
    model = build_model(tiny_config, data.image_shape)
    torch.manual_seed(3)
    expected_stream = torch.rand(3)
    torch.manual_seed(3)
    a = evaluate_elbo(model, data.test_batches(30))
    assert torch.equal(torch.rand(3), expected_stream)  # the training RNG stream is untouched
    torch.manual_seed(99)
    b = evaluate_elbo(model, data.test_batches(30))
    assert a == b  # the same eps whatever the global seed: test-ELBO curves share their noise
    assert a["elbo"] == pytest.approx(a["log_px_z"] - a["kl"], rel=1e-5)


def test_schedules() -> None:
    config = RunConfig(epochs=10, lr=0.1, lr_schedule="cosine", kl_warmup_epochs=4, beta=2.0)
    lrs = [learning_rate(config, e) for e in range(1, 11)]
    assert lrs[0] == pytest.approx(0.1) and all(b < a for a, b in zip(lrs, lrs[1:], strict=False))
    assert lrs[-1] > 0
    betas = [kl_weight(config, e) for e in range(1, 11)]
    assert all(b > a for a, b in zip(betas[:5], betas[1:5], strict=False))  # ramps up over the warm-up
    assert betas[3] < 2.0 and all(b == 2.0 for b in betas[4:])
    assert learning_rate(RunConfig(lr=0.1), 7) == 0.1 and kl_weight(RunConfig(beta=0.5), 1) == 0.5


def test_load_run_refuses_a_directory_that_is_not_a_run(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="not a run directory"):
        load_run(tmp_path)
    assert not os.listdir(tmp_path)
