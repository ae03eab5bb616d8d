"""Encoders q(z|x), decoders p(x|z) and the VAE that joins them with a N(0, I) prior.

Shapes: x is (B, D) flat with values in [0, 1]; z is (..., B, Z); the decoder returns likelihood parameters
(..., B, P*D) with P parameters per pixel stored parameter-major (all pixels' first parameter, then all
pixels' second), which is what `vaelib.likelihoods` expects.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .config import RunConfig
from .likelihoods import Likelihood, make_likelihood

LOG_VAR_BOUND = 20.0
_ACTIVATIONS = {"tanh": nn.Tanh, "relu": nn.ReLU, "elu": nn.ELU, "softplus": nn.Softplus}


def mlp(sizes: list[int], activation: str) -> nn.Sequential:
    """Linear layers with `activation` between them (none after the last)."""
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers.append(nn.Linear(n_in, n_out))
        if i < len(sizes) - 2:
            layers.append(_ACTIVATIONS[activation]())
    return nn.Sequential(*layers)


def bound_log_var(log_var: torch.Tensor) -> torch.Tensor:
    """The encoder's raw log-variance output (any shape) smoothly bounded to |log_var| < LOG_VAR_BOUND.

    The identity to within 5% where real posteriors live (|log_var| < 8): one overshooting step can otherwise
    push exp(log_var) past float32's range and end the run. Maps 0 to exactly 0 (vaelib.grid relies on it).
    """
    return LOG_VAR_BOUND * torch.tanh(log_var / LOG_VAR_BOUND)


class GaussianEncoder(nn.Module):
    """q(z|x) = N(loc, diag(exp(log_var))) from any network `body` that outputs (B, 2Z)."""

    def __init__(self, body: nn.Module, latent_dim: int) -> None:
        super().__init__()
        self.body = body
        self.latent_dim = latent_dim

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        loc, log_var = self.body(x).chunk(2, dim=-1)
        return loc, bound_log_var(log_var)


class ResBlock(nn.Module):
    """x + conv3x3(act(conv3x3(act(x)))): a pre-activation residual block that keeps the shape."""

    def __init__(self, channels: int, activation: str) -> None:
        super().__init__()
        act = _ACTIVATIONS[activation]
        self.net = nn.Sequential(act(), nn.Conv2d(channels, channels, 3, 1, 1), act(),
                                 nn.Conv2d(channels, channels, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.net(x)


class ConvEncoderBody(nn.Module):
    """A 3x3 stem, then two stride-2 stages (H -> H/2 -> H/4, channels c -> 2c -> 4c) with `res_blocks`
    residual blocks after each, and a linear head: (B, C*H*W) -> (B, out). H and W must be multiples of 4
    (MNIST 28x28, CIFAR-10 32x32, Frey Face 28x20)."""

    def __init__(self, image_shape: tuple[int, int, int], channels: int, out: int, activation: str,
                 res_blocks: int = 0) -> None:
        super().__init__()
        c, h, w = image_shape
        act = _ACTIVATIONS[activation]
        self.image_shape = image_shape
        self.net = nn.Sequential(
            nn.Conv2d(c, channels, 3, 1, 1), act(),
            nn.Conv2d(channels, 2 * channels, 4, 2, 1),
            *[ResBlock(2 * channels, activation) for _ in range(res_blocks)], act(),
            nn.Conv2d(2 * channels, 4 * channels, 4, 2, 1),
            *[ResBlock(4 * channels, activation) for _ in range(res_blocks)], act(),
            nn.Flatten(),
            nn.Linear(4 * channels * (h // 4) * (w // 4), out),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.reshape(-1, *self.image_shape))


class ConvDecoderBody(nn.Module):
    """Mirror of ConvEncoderBody: (..., Z) -> (..., P*C*H*W) with P output maps per image channel."""

    def __init__(self, image_shape: tuple[int, int, int], channels: int, latent_dim: int,
                 params_per_dim: int, activation: str, res_blocks: int = 0) -> None:
        super().__init__()
        c, h, w = image_shape
        act = _ACTIVATIONS[activation]
        self.start = (4 * channels, h // 4, w // 4)
        self.fc = nn.Linear(latent_dim, 4 * channels * (h // 4) * (w // 4))
        self.net = nn.Sequential(
            *[ResBlock(4 * channels, activation) for _ in range(res_blocks)], act(),
            nn.ConvTranspose2d(4 * channels, 2 * channels, 4, 2, 1),
            *[ResBlock(2 * channels, activation) for _ in range(res_blocks)], act(),
            nn.ConvTranspose2d(2 * channels, channels, 4, 2, 1), act(),
            nn.Conv2d(channels, params_per_dim * c, 3, 1, 1),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        lead = z.shape[:-1]
        h = self.fc(z.reshape(-1, z.shape[-1])).reshape(-1, *self.start)
        return self.net(h).reshape(*lead, -1)


class VAE(nn.Module):
    """p(z) = N(0, I), p(x|z) from `decoder` + `likelihood`, q(z|x) from `encoder`."""

    def __init__(self, encoder: GaussianEncoder, decoder: nn.Module, likelihood: Likelihood,
                 image_shape: tuple[int, int, int]) -> None:
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder
        self.likelihood = likelihood
        self.image_shape = image_shape
        self.latent_dim = encoder.latent_dim

    def posterior(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """q(z|x) parameters: loc and log-variance, each (B, Z)."""
        return self.encoder(x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Likelihood parameters of p(x|z), shape (..., B, P*D)."""
        return self.decoder(z)

    def log_prob_x_given_z(self, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        """log p(x|z) in nats, summed over pixels: (..., B). `x` (B, D) broadcasts over sample dims."""
        lead = params.shape[:-1]
        x = x.expand(*lead, x.shape[-1]).reshape(-1, x.shape[-1])
        return self.likelihood.log_prob(x, params.reshape(-1, params.shape[-1])).reshape(lead)

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Mean images E[x|z] for z ~ N(0, I): (n, D) on [0, 1]."""
        device = next(self.parameters()).device
        z = torch.randn(n, self.latent_dim, generator=generator, device=device)
        return self.likelihood.mean(self.decode(z))

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """Mean image E[x|z] at z = the posterior mean: (B, D) on [0, 1]."""
        loc, _ = self.posterior(x)
        return self.likelihood.mean(self.decode(loc))

    @torch.no_grad()
    def decode_mean(self, z: torch.Tensor) -> torch.Tensor:
        """E[x|z] on [0, 1] for given latent points z (B, Z)."""
        return self.likelihood.mean(self.decode(z))


def build_model(config: RunConfig, image_shape: tuple[int, int, int]) -> VAE:
    """The VAE that `config` describes, for images of `image_shape` (C, H, W)."""
    d = math.prod(image_shape)
    z = config.latent_dim
    likelihood = make_likelihood(config.likelihood, config.decoder_std, config.mixture_components)
    hidden = [config.hidden_dim] * config.hidden_layers
    if config.architecture == "mlp":
        encoder_body: nn.Module = mlp([d, *hidden, 2 * z], config.activation)
        decoder: nn.Module = mlp([z, *hidden[::-1], likelihood.params_per_dim * d], config.activation)
    else:
        encoder_body = ConvEncoderBody(image_shape, config.hidden_dim, 2 * z, config.activation,
                                       config.res_blocks)
        decoder = ConvDecoderBody(image_shape, config.hidden_dim, z, likelihood.params_per_dim,
                                  config.activation, config.res_blocks)
    model = VAE(GaussianEncoder(encoder_body, z), decoder, likelihood, image_shape)
    if config.init_std is not None:
        for module in model.modules():
            if isinstance(module, nn.Linear | nn.Conv2d | nn.ConvTranspose2d):
                nn.init.normal_(module.weight, 0.0, config.init_std)
                nn.init.zeros_(module.bias)
    return model
