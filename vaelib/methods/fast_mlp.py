"""AEVB for the paper's MLP VAE with the forward and backward pass written out: no autograd, on CPU.

The same step as `aevb_update` (estimator B, L = 1, any beta; tanh or ReLU hidden layers, the Gaussian
encoder with its smoothly bounded log-variance, a Bernoulli decoder), computed with the matrix products
writing into buffers kept from step to step, the 1/M of the batch mean folded into the products' alpha, the
activations' backward as one fused kernel each, and the gradients written straight into every parameter's
`.grad`, so the run's optimizer (`vaelib.train.make_optimizer`) steps exactly as after `loss.backward()`.
It draws the noise exactly as `vaelib.objectives.rsample` does (same call, same RNG stream) and differs
from the autograd path only by float32 rounding (tests/test_fast_step.py says how close). The plain
`aevb_update` stays the readable reference; `vaelib.methods.update_for` decides which one a run uses.

Shapes: x (B, D), hidden activations (B, H), encoder output (B, 2Z) = [loc | raw log-variance], z (B, Z),
decoder logits (B, D). All per-example terms are nats.
"""

from __future__ import annotations

import torch
from torch import nn

from ..config import RunConfig
from ..likelihoods import Bernoulli
from ..models import LOG_VAR_BOUND, VAE, GaussianEncoder
from .step import NonFiniteLossError

_ACTIVATION_MODULES = (nn.Tanh, nn.ReLU)
FAST_METHODS = ("aevb",)
FAST_ESTIMATORS = ("B",)
FAST_ACTIVATIONS = ("tanh", "relu")


def _linears(body: nn.Module, activation: type[nn.Module]) -> list[nn.Linear] | None:
    """The Linear layers of an `mlp(...)` body (Linear, act, Linear, ..., Linear), or None for anything else."""
    if not isinstance(body, nn.Sequential) or len(body) % 2 == 0:
        return None
    layers = list(body)
    if not all(isinstance(m, nn.Linear) for m in layers[::2]) or not all(type(m) is activation
                                                                         for m in layers[1::2]):
        return None
    return layers[::2]


def fast_supported(model: nn.Module, config: RunConfig) -> bool:
    """Whether `FastMLPAEVB` computes `config`'s update for `model`: AEVB with estimator B and L = 1, the
    MLP with tanh or ReLU hidden layers and a Bernoulli decoder, float32 parameters on the CPU, and no
    forward hooks on any module."""
    if not (config.method in FAST_METHODS and config.estimator in FAST_ESTIMATORS and config.n_samples == 1
            and config.architecture == "mlp" and config.activation in FAST_ACTIVATIONS
            and isinstance(model, VAE) and isinstance(model.encoder, GaussianEncoder)
            and type(model.likelihood) is Bernoulli):
        return False
    if any(m._forward_hooks or m._forward_pre_hooks for m in model.modules()):
        return False  # the fast step calls no module's forward, so a hook would silently not run
    params = list(model.parameters())
    if not params or not all(p.device.type == "cpu" and p.dtype == torch.float32 and p.requires_grad
                             for p in params):
        return False
    activation = _ACTIVATION_MODULES[FAST_ACTIVATIONS.index(config.activation)]
    return (_linears(model.encoder.body, activation) is not None
            and _linears(model.decoder, activation) is not None)


class FastMLPAEVB:
    """The AEVB update for one model (an `Update`: call it as `update(model, optimizer, x, config, beta)`).

    It holds the model's Linear layers and, per batch size, the activation and gradient buffers, so an
    epoch allocates nothing after its first step (the last, shorter batch gets its own set once).
    """

    def __init__(self, model: VAE, config: RunConfig) -> None:
        if not fast_supported(model, config):
            raise ValueError("FastMLPAEVB covers AEVB, estimator B, L=1, tanh/ReLU MLPs with a Bernoulli "
                             "decoder in float32 on the CPU; use vaelib.methods.update_for to get the plain "
                             "update for anything else")
        self.model = model
        self.relu = config.activation == "relu"
        activation = _ACTIVATION_MODULES[FAST_ACTIVATIONS.index(config.activation)]
        self.encoder = _linears(model.encoder.body, activation)
        self.decoder = _linears(model.decoder, activation)
        self.latent_dim = model.latent_dim
        self._buffers: dict[int, dict[str, list[torch.Tensor]]] = {}

    def _buffers_for(self, batch: int) -> dict[str, list[torch.Tensor]]:
        if batch not in self._buffers:
            def empty(layers: list[nn.Linear]) -> list[torch.Tensor]:
                return [torch.empty(batch, lin.out_features) for lin in layers]

            z = self.latent_dim
            self._buffers[batch] = {
                "enc": empty(self.encoder), "enc_grad": empty(self.encoder), "enc_pre": empty(self.encoder),
                "dec": empty(self.decoder), "dec_grad": empty(self.decoder), "dec_pre": empty(self.decoder),
                # t = tanh(raw / bound), std, eps (1, B, Z) as rsample draws it, z, and two scratch tensors
                "latent": [torch.empty(batch, z), torch.empty(batch, z), torch.empty(1, batch, z),
                           torch.empty(batch, z), torch.empty(batch, z), torch.empty(batch, z)],
                "pixels": [torch.empty(batch, self.decoder[-1].out_features)],
            }
        return self._buffers[batch]

    def _activate(self, h: torch.Tensor) -> None:
        if self.relu:
            h.relu_()
        else:
            h.tanh_()

    def _activation_backward(self, grad: torch.Tensor, output: torch.Tensor, out: torch.Tensor) -> None:
        if self.relu:
            torch.ops.aten.threshold_backward.grad_input(grad, output, 0.0, grad_input=out)
        else:
            torch.ops.aten.tanh_backward.grad_input(grad, output, grad_input=out)

    def _forward(self, layers: list[nn.Linear], h: torch.Tensor, outs: list[torch.Tensor]) -> torch.Tensor:
        for i, lin in enumerate(layers):
            torch.addmm(lin.bias, h, lin.weight.t(), out=outs[i])
            if i < len(layers) - 1:
                self._activate(outs[i])
            h = outs[i]
        return h

    def _backward(self, layers: list[nn.Linear], inp: torch.Tensor, outs: list[torch.Tensor],
                  grad_out: torch.Tensor, scale: float, bufs: dict[str, list[torch.Tensor]], key: str,
                  input_grad: torch.Tensor | None) -> None:
        """Gradients of every layer from `grad_out` (the loss's gradient at the last layer's output, times
        1/scale), into each `.grad`; the gradient at `inp` into `input_grad` when it is given."""
        grad = grad_out
        for i in range(len(layers) - 1, -1, -1):
            lin = layers[i]
            below = outs[i - 1] if i > 0 else inp
            if lin.weight.grad is None:
                lin.weight.grad = torch.empty_like(lin.weight)
                lin.bias.grad = torch.empty_like(lin.bias)
            # beta=0: the old gradient is ignored, NaN included, as if it had been set to None
            torch.addmm(lin.weight.grad, grad.t(), below, beta=0.0, alpha=scale, out=lin.weight.grad)
            torch.sum(grad, 0, out=lin.bias.grad)
            if scale != 1.0:
                lin.bias.grad.mul_(scale)
            if i > 0:
                pre = bufs[key + "_pre"][i - 1]
                torch.addmm(pre, grad, lin.weight, beta=0.0, alpha=scale, out=pre)
                self._activation_backward(pre, outs[i - 1], bufs[key + "_grad"][i - 1])
                grad = bufs[key + "_grad"][i - 1]
                scale = 1.0
            elif input_grad is not None:
                torch.addmm(input_grad, grad, lin.weight, beta=0.0, alpha=scale, out=input_grad)

    @torch.no_grad()
    def __call__(self, model: VAE, optimizer: torch.optim.Optimizer, x: torch.Tensor, config: RunConfig,
                 beta: float) -> torch.Tensor:
        """One AEVB step on x (B, D); returns the batch sums (objective, elbo, log_px_z, kl), nats."""
        if model is not self.model:
            raise ValueError("this FastMLPAEVB was built for another model; get one per model from "
                             "vaelib.methods.update_for")
        batch, z_dim = x.shape[0], self.latent_dim
        bufs = self._buffers_for(batch)
        t, std, eps, z, dz, scratch = bufs["latent"]
        (pixels,) = bufs["pixels"]

        # encoder: [loc | raw]; log_var = bound * tanh(raw / bound) (vaelib.models.GaussianEncoder)
        out = self._forward(self.encoder, x, bufs["enc"])
        loc, raw = out[:, :z_dim], out[:, z_dim:]
        torch.mul(raw, 1.0 / LOG_VAR_BOUND, out=t)
        t.tanh_()
        torch.mul(t, 0.5 * LOG_VAR_BOUND, out=std)  # 0.5 log_var
        std.exp_()
        torch.randn(eps.shape, out=eps)  # the draw rsample makes: (L=1, B, Z) from the global generator
        torch.addcmul(loc, std, eps[0], out=z)

        logits = self._forward(self.decoder, z, bufs["dec"])
        # -log p(x|z) per example: softplus(l) - x l, summed over pixels (Bernoulli on logits)
        torch._C._nn.softplus(logits, 1.0, 20.0, out=pixels)
        pixels.addcmul_(x, logits, value=-1.0)
        log_px_z = -pixels.sum(1)
        # KL = 0.5 sum(exp(log_var) + loc^2 - 1 - log_var), with log_var = bound * t
        torch.mul(std, std, out=scratch)
        scratch.addcmul_(loc, loc).add_(t, alpha=-LOG_VAR_BOUND).sub_(1.0)
        kl = 0.5 * scratch.sum(1)
        log_px_sum, kl_sum = log_px_z.sum(), kl.sum()
        objective_sum = log_px_sum - beta * kl_sum
        if not torch.isfinite(objective_sum):  # as vaelib.methods.step.gradient_step, before any change
            raise NonFiniteLossError(f"loss = {(-objective_sum / batch).item()}")

        # loss = -objective.mean(): d/dlogits = (sigmoid(l) - x) / B; the 1/B rides on the products
        torch.sigmoid(logits, out=pixels)
        pixels.sub_(x)
        self._backward(self.decoder, z, bufs["dec"], pixels, 1.0 / batch, bufs, "dec", dz)
        grad_out = bufs["enc_pre"][-1]
        kl_scale = beta / batch
        # d/dloc = dz + (beta/B) loc
        torch.add(dz, loc, alpha=kl_scale, out=grad_out[:, :z_dim])
        # d/dlog_var = 0.5 std eps dz + (beta/2B)(exp(log_var) - 1); d log_var / d raw = 1 - t^2
        d_log_var = grad_out[:, z_dim:]
        torch.mul(dz, eps[0], out=d_log_var)
        d_log_var.mul_(std).mul_(0.5)
        torch.mul(std, std, out=scratch)
        scratch.sub_(1.0)
        d_log_var.add_(scratch, alpha=0.5 * kl_scale)
        torch.ops.aten.tanh_backward.grad_input(d_log_var, t, grad_input=scratch)
        d_log_var.copy_(scratch)
        self._backward(self.encoder, x, bufs["enc"], grad_out, 1.0, bufs, "enc", None)
        optimizer.step()
        return torch.stack([objective_sum, log_px_sum - kl_sum, log_px_sum, kl_sum])


__all__ = ["FastMLPAEVB", "fast_supported"]
