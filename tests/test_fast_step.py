"""The hand-written AEVB step (vaelib.methods.fast_mlp) against autograd through the plain `aevb_update`.

Expected values come from autograd: the plain update's loss and gradients on the same minibatch and the
same noise (the global generator reseeded before each update). Tolerances are float32 rounding: the two
paths run the same arithmetic in another order (softplus(l) - x l against PyTorch's BCE-with-logits, the
1/M folded into the matrix products, other reduction orders), each step rounding at 6e-8 relative, and a
gradient entry sums up to M x 784 such terms, so 1e-5 of the gradient's scale bounds the difference with
room to spare (measured: under 5e-7).
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

import vaelib.train as train
from vaelib.config import RunConfig
from vaelib.methods import UPDATES, FastMLPAEVB, NonFiniteLossError, aevb_update, update_for
from vaelib.models import build_model
from vaelib.train import fit

pytestmark = pytest.mark.usefixtures("one_thread")

IMAGE = (1, 28, 28)


def mlp_config(**changes) -> RunConfig:
    base = {"dataset": "mnist", "likelihood": "bernoulli", "architecture": "mlp", "hidden_dim": 40,
            "latent_dim": 6, "device": "cpu"}
    return RunConfig(**{**base, **changes})


def one_step(update, model: torch.nn.Module, x: torch.Tensor, config: RunConfig, beta: float,
             ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The update's batch sums and the gradients it leaves, with a zero step size (parameters unchanged)."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    torch.manual_seed(1234)  # the same noise eps for both paths
    sums = update(model, optimizer, x, config, beta)
    return sums, {name: p.grad.clone() for name, p in model.named_parameters()}


@pytest.mark.parametrize(("activation", "hidden_layers", "beta", "batch"),
                         [("tanh", 1, 1.0, 100), ("tanh", 2, 0.3, 37), ("relu", 1, 2.0, 64)])
def test_loss_and_every_gradient_equal_autograd(activation: str, hidden_layers: int, beta: float,
                                                batch: int) -> None:
    config = mlp_config(activation=activation, hidden_layers=hidden_layers)
    torch.manual_seed(0)
    plain_model = build_model(config, IMAGE)
    fast_model = copy.deepcopy(plain_model)
    x = torch.rand(batch, 784)
    expected_sums, expected_grads = one_step(aevb_update, plain_model, x, config, beta)
    fast = update_for(fast_model, config)
    assert isinstance(fast, FastMLPAEVB)
    for _ in range(2):  # the second call reuses the buffers and overwrites the gradients it wrote
        sums, grads = one_step(fast, fast_model, x, config, beta)
        torch.testing.assert_close(sums, expected_sums, rtol=1e-5, atol=1e-4)
        assert grads.keys() == expected_grads.keys()
        for name, expected in expected_grads.items():
            scale = expected.abs().max().item()
            torch.testing.assert_close(grads[name], expected, rtol=1e-5, atol=1e-5 * scale, msg=name)


def test_the_steps_optimizer_moves_the_parameters_as_after_backward() -> None:
    config = mlp_config(optimizer="adagrad", lr=0.05)
    torch.manual_seed(0)
    plain_model = build_model(config, IMAGE)
    fast_model = copy.deepcopy(plain_model)
    x = torch.rand(50, 784)
    for model, update in ((plain_model, aevb_update), (fast_model, update_for(fast_model, config))):
        optimizer = train.make_optimizer(model, config)
        torch.manual_seed(7)
        for _ in range(3):
            update(model, optimizer, x, config, 1.0)
    for (name, a), b in zip(plain_model.named_parameters(), fast_model.parameters(), strict=True):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5, msg=name)


def test_a_few_epochs_match_the_plain_path(tiny_config: RunConfig, data_dir: Path, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    chosen = []
    real_update_for = train.update_for

    def spy(model, config):
        chosen.append(real_update_for(model, config))
        return chosen[-1]

    monkeypatch.setattr(train, "update_for", spy)
    fast = fit(tiny_config, tmp_path / "fast", data_dir=data_dir, progress=False).history
    assert isinstance(chosen[-1], FastMLPAEVB)  # fit trains with the choice update_for makes
    monkeypatch.setattr(train, "update_for", lambda model, config: UPDATES[config.method])
    plain = fit(tiny_config, tmp_path / "plain", data_dir=data_dir, progress=False).history
    # 30 Adam steps apart from float32 rounding: the per-example ELBOs (about -200 nats) agree to 0.01 nats.
    for column in ("train_objective", "train_elbo", "train_log_px_z", "train_kl", "test_elbo"):
        torch.testing.assert_close(torch.tensor(fast[column].to_numpy()), torch.tensor(plain[column].to_numpy()),
                                   rtol=0, atol=1e-2, msg=column)


@pytest.mark.parametrize("changes", [{"estimator": "A"}, {"estimator": "iwae", "n_samples": 5}, {"n_samples": 2},
                                     {"method": "wake-sleep"}, {"method": "mcem"}, {"likelihood": "gaussian"},
                                     {"activation": "elu"}, {"architecture": "conv", "hidden_dim": 4}])
def test_configs_the_fast_step_does_not_cover_get_the_plain_update(changes: dict) -> None:
    config = mlp_config(**changes)
    assert update_for(build_model(config, IMAGE), config) is UPDATES[config.method]


def test_models_the_fast_step_does_not_cover_get_the_plain_update() -> None:
    config = mlp_config()
    assert update_for(build_model(config, IMAGE).double(), config) is aevb_update
    hooked = build_model(config, IMAGE)
    hooked.decoder.register_forward_hook(lambda module, inputs, output: output)
    assert update_for(hooked, config) is aevb_update
    with pytest.raises(ValueError, match="update_for"):
        FastMLPAEVB(hooked, config)


def test_a_non_finite_loss_raises_before_any_parameter_changes() -> None:
    config = mlp_config(optimizer="adagrad", lr=0.1)
    torch.manual_seed(0)
    models = [build_model(config, IMAGE) for _ in range(2)]
    models[1].load_state_dict(models[0].state_dict())
    x = torch.rand(20, 784)
    for model, update in ((models[0], aevb_update), (models[1], update_for(models[1], config))):
        with torch.no_grad():
            model.decoder[-1].bias[3] = float("nan")
        before = copy.deepcopy(model.state_dict())
        with pytest.raises(NonFiniteLossError, match="loss = nan"):
            update(model, train.make_optimizer(model, config), x, config, 1.0)
        for key, value in model.state_dict().items():
            torch.testing.assert_close(value, before[key], rtol=0, atol=0, equal_nan=True, msg=key)
