"""The grid trainer (vaelib.grid): members trained as one equal solo runs of their configs, load and resume
alone through the run cache, padded latent units stay out of every number, bad grids are refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from vaelib import grid, runs, train
from vaelib.config import ConfigError, RunConfig

pytestmark = pytest.mark.usefixtures("one_thread")
LATENTS = (3, 10)


def members(tiny_config: RunConfig) -> list[RunConfig]:
    return [tiny_config.replace(latent_dim=z, epochs=2) for z in LATENTS]


def test_a_member_equals_its_solo_run_within_the_seed_spread(tiny_config: RunConfig, data_dir: Path,
                                                                tmp_path: Path) -> None:
    configs = members(tiny_config)
    trained = grid.train_grid(configs, tmp_path / "grid", data_dir)
    for config, member in zip(configs, trained, strict=True):
        solo = train.fit_or_load(config, tmp_path / "solo", data_dir, progress=False)
        other_seed = train.fit_or_load(config.replace(seed=1), tmp_path / "solo", data_dir, progress=False)
        spread = abs(solo.history.test_elbo.iloc[-1] - other_seed.history.test_elbo.iloc[-1])
        gap = abs(member.history.test_elbo.iloc[-1] - solo.history.test_elbo.iloc[-1])
        assert spread > 0.1 and gap < spread, (gap, spread)
        # The streams match a solo run's, so only float rounding of bmm against addmm is left.
        for column in ("train_elbo", "train_kl", "test_elbo", "test_kl"):
            torch.testing.assert_close(torch.tensor(member.history[column].values),
                                       torch.tensor(solo.history[column].values), rtol=0, atol=1e-3)


def test_a_member_loads_alone_without_training(tiny_config: RunConfig, data_dir: Path, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    configs = members(tiny_config)
    trained = grid.train_grid(configs, tmp_path, data_dir)
    log = tmp_path / "log.jsonl"
    monkeypatch.setenv(train.RUN_LOG_ENV, str(log))
    loaded = train.fit_or_load(configs[1], tmp_path, data_dir, progress=False)
    assert [json.loads(line)["status"] for line in log.read_text().splitlines()] == ["loaded"]
    assert loaded.path == trained[1].path and loaded.history.equals(trained[1].history)


def test_a_member_resumes_alone_like_an_uninterrupted_solo_run(tiny_config: RunConfig, data_dir: Path,
                                                                tmp_path: Path) -> None:
    configs = members(tiny_config)
    grid.train_grid(configs, tmp_path / "grid", data_dir)
    longer = configs[0].replace(epochs=4)
    resumed = train.fit_or_load(longer, tmp_path / "grid", data_dir, progress=False)
    straight = train.fit_or_load(longer, tmp_path / "solo", data_dir, progress=False)
    assert list(resumed.history.epoch) == [1, 2, 3, 4]
    for key, value in straight.model.state_dict().items():
        torch.testing.assert_close(resumed.model.state_dict()[key], value, rtol=0, atol=1e-4, msg=key)


def test_padded_latent_units_change_no_number(tiny_config: RunConfig, data_dir: Path, tmp_path: Path) -> None:
    configs = members(tiny_config)
    beside = grid.train_grid(configs, tmp_path / "padded", data_dir)[0]  # z=3 padded to 10
    alone = grid.train_grid(configs[:1], tmp_path / "alone", data_dir)[0]  # no padding
    for column in ("train_elbo", "train_kl", "test_elbo", "test_kl"):
        torch.testing.assert_close(torch.tensor(beside.history[column].values),
                                   torch.tensor(alone.history[column].values), rtol=0, atol=1e-4)


def test_padded_units_carry_no_kl_and_no_gradient(tiny_config: RunConfig, data_dir: Path) -> None:
    configs = members(tiny_config)
    models = []
    for config in configs:
        train.seed_everything(config.seed)
        models.append(train.build_model(config, (1, 28, 28)))
    stack = grid._Stack(models, torch.device("cpu"))
    x = torch.rand(2, 7, 784).round()
    eps = torch.randn(2, 7, stack.z_max) * stack.mask
    objective, _, _, kl = stack.forward(x, eps, grid._activation(models[0]), models[0].likelihood, 1.0)
    objective.sum().backward()
    z = LATENTS[0]
    assert torch.all(stack.weights[-2].grad[0, :, z:] == 0)  # decoder columns of padded units
    enc_last = stack.weights[len(stack.enc[0]) - 1].grad[0]
    assert torch.all(enc_last[z:stack.z_max] == 0) and torch.all(enc_last[stack.z_max + z:] == 0)
    # KL of member 0 equals the KL of its own z units alone: padded units add exactly 0.
    solo_loc, solo_log_var = models[0].posterior(x[0])
    expected = 0.5 * (solo_log_var.exp() + solo_loc.pow(2) - 1 - solo_log_var).sum(-1)
    torch.testing.assert_close(kl[0].detach(), expected.detach(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(("field", "value"), [("batch_size", 25), ("lr", 1e-2), ("dataset", "mnist")])
def test_incompatible_members_are_refused_naming_the_field(tiny_config: RunConfig, field: str, value: object,
                                                           tmp_path: Path) -> None:
    configs = [tiny_config, tiny_config.replace(latent_dim=2, **{field: value})]
    with pytest.raises(ConfigError, match=f"'{field}' differs"):
        grid.train_grid(configs, tmp_path)
    assert not any(tmp_path.iterdir())


def test_other_methods_are_refused(tiny_config: RunConfig, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="'method' is 'wake-sleep'"):
        grid.train_grid([tiny_config.replace(method="wake-sleep")], tmp_path)


def test_an_unfinished_member_is_refused_before_any_training(tiny_config: RunConfig, data_dir: Path,
                                                            tmp_path: Path) -> None:
    configs = members(tiny_config)
    train.fit(configs[0].replace(epochs=1), runs.run_dir(configs[0], tmp_path), data_dir=data_dir,
              progress=False)
    with pytest.raises(ConfigError, match="unfinished run"):
        grid.train_grid(configs, tmp_path, data_dir)
    assert not runs.run_dir(configs[1], tmp_path).exists()


def test_the_grid_executor_trains_compatible_runs_as_one_and_the_rest_alone(
        tiny_config: RunConfig, data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from vaelib import executors
    configs = [*members(tiny_config), tiny_config.replace(method="wake-sleep", epochs=2)]
    called: list[list[int]] = []
    original = grid.train_grid
    monkeypatch.setattr(grid, "train_grid", lambda c, *a: called.append([m.latent_dim for m in c]) or original(c, *a))
    trained = executors.train_many(configs, tmp_path, data_dir, executor="grid", progress=False)
    assert called == [list(LATENTS)]
    assert [r.config for r in trained] == configs and all(len(r.history) == 2 for r in trained)
    assert executors.parse_executor("grid").kind == "grid"


def test_a_large_latent_size_trains_apart_from_the_small_ones(tiny_config: RunConfig) -> None:
    configs = [tiny_config.replace(latent_dim=z, seed=s) for z in (3, 10, 200, grid.PAD_LIMIT) for s in (0, 1)]
    grids, rest = grid.grid_groups([*configs, tiny_config.replace(method="mcem")])
    assert sorted(sorted(c.latent_dim for c in g) for g in grids) == [[3, 3, 10, 10, 32, 32], [200, 200]]
    assert [c.method for c in rest] == ["mcem"]
