"""Decoder likelihoods p(x|z): each turns the decoder's raw output into `log_prob(x)` in nats per example.

Shapes: `params` is (B, P*D) for D pixels (P parameters per pixel), `x` is (B, D) with values in [0, 1];
`log_prob` returns (B,), the sum over pixels. Continuous densities (the Gaussians) are densities on [0, 1]^D,
so their log-probabilities can be positive; the discretized logistics put mass on the 256 grey levels, so
their negated values convert straight to bits per dimension.

"mse" and "l1" are the student project's reconstruction losses. They are not likelihoods: their
`log_prob` is the negated loss, labelled `is_likelihood = False`, and is never reported as nats.

Bits per dimension: each likelihood states its own rule (`Likelihood.bits_per_dim`, and `nats_kind` says in
words what its nats are), so every table and evaluation converts the same number the same way.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .objectives import LOG_2PI, bits_per_dim, continuous_bits_per_dim

_DENSITY_KIND = "a density on [0,1]^D, read on the 0-255 scale (not a mass)"


class Likelihood(nn.Module):
    """Base class. `params_per_dim` tells the decoder how many outputs per pixel to produce."""

    params_per_dim: int = 1
    is_likelihood: bool = True
    discrete: bool = False  # True: a probability mass over 256 levels (bits/dim are exact)

    def log_prob(self, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def log_density_offset(self, num_dims: int) -> float:
        """Nats to add to `log_prob` to make it a normalized log-probability: 0 for a likelihood; for a loss,
        the constant that turns the loss into the density it implies."""
        return 0.0

    def bits_per_dim(self, log_prob_nats: float, num_dims: int) -> float:
        """-log p(x) in bits per dimension, by this likelihood's rule: exact for a mass over the 256 grey
        levels or over binary pixels; a density on [0, 1]^D is read on the 0-255 scale
        (`objectives.continuous_bits_per_dim`). `log_prob_nats` is per example (a sum over the D pixels)."""
        return float(continuous_bits_per_dim(log_prob_nats + self.log_density_offset(num_dims), num_dims))

    def nats_kind(self, binary_data: bool) -> str:
        """What this likelihood's nats are, in words (for tables beside bits/dim)."""
        return _DENSITY_KIND

    def sample(self, params: torch.Tensor) -> torch.Tensor:
        """One draw x ~ p(x|z), shape (B, D)."""
        raise NotImplementedError


class Bernoulli(Likelihood):
    """Pixels are independent bits; params are logits. The paper's MNIST decoder.

    On grey levels x in [0, 1], sum_d x_d log y_d + (1 - x_d) log(1 - y_d) is the expected log-mass of a
    random binarization b ~ Bernoulli(x) of the image: bits/dim of binarized images, not of grey ones.
    """

    def bits_per_dim(self, log_prob_nats: float, num_dims: int) -> float:
        return float(bits_per_dim(log_prob_nats, num_dims))

    def nats_kind(self, binary_data: bool) -> str:
        return ("a mass over binary pixels" if binary_data else
                "expected log-mass of a random binarization of the grey image")

    def log_prob(self, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        if params.requires_grad and torch.is_grad_enabled():  # training: its backward is one fused kernel
            return -F.binary_cross_entropy_with_logits(params, x, reduction="none").sum(-1)
        # No gradient (evaluation, importance sampling): the same x l - softplus(l) in two elementwise
        # passes instead of four, 1.3x cheaper on CPU; it differs only by float32 rounding.
        return -torch.addcmul(F.softplus(params), x, params, value=-1.0).sum(-1)

    def mean(self, params: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(params)

    def sample(self, params: torch.Tensor) -> torch.Tensor:
        return torch.bernoulli(torch.sigmoid(params))


class Gaussian(Likelihood):
    """Diagonal Gaussian with a mean squashed to (0, 1) by a sigmoid and a learned per-pixel log-variance.

    The paper's Frey Face decoder (App. C.2). The log-variance is soft-clamped to [-9.2, 2] (sigma between
    0.01 and e) so a pixel that is always the same cannot drive the density to infinity.
    """

    params_per_dim = 2

    def _split(self, params: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        loc_logits, log_var = params.chunk(2, dim=-1)
        log_var = log_var.clamp(-9.2, 2.0)
        return torch.sigmoid(loc_logits), log_var

    def log_prob(self, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        loc, log_var = self._split(params)
        return -0.5 * (LOG_2PI + log_var + (x - loc).pow(2) * torch.exp(-log_var)).sum(-1)

    def mean(self, params: torch.Tensor) -> torch.Tensor:
        return self._split(params)[0]

    def sample(self, params: torch.Tensor) -> torch.Tensor:
        loc, log_var = self._split(params)
        return loc + torch.exp(0.5 * log_var) * torch.randn_like(loc)


class FixedGaussian(Likelihood):
    """Gaussian with a fixed standard deviation `std` (on the [0, 1] scale); mean through a sigmoid."""

    def __init__(self, std: float) -> None:
        super().__init__()
        self.std = std

    def log_prob(self, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        loc = torch.sigmoid(params)
        var = self.std**2
        return -0.5 * (LOG_2PI + math.log(var) + (x - loc).pow(2) / var).sum(-1)

    def mean(self, params: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(params)

    def sample(self, params: torch.Tensor) -> torch.Tensor:
        loc = torch.sigmoid(params)
        return loc + self.std * torch.randn_like(loc)


class SigmaVAE(Likelihood):
    """The calibrated "optimal sigma" decoder (Rybkin et al., 2021): one shared variance equal to the
    batch's mean squared error, which maximizes the Gaussian likelihood given the mean. It turns the
    student project's MSE loss into a proper density with a learned scale. The variance is a detached
    batch statistic during training; at evaluation time it is the running average seen in training.
    """

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("log_var", torch.tensor(0.0))

    def log_prob(self, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        loc = torch.sigmoid(params)
        sq = (x - loc).pow(2)
        if self.training:
            log_var = sq.mean().detach().clamp_min(1e-6).log()
            with torch.no_grad():
                self.log_var.mul_(0.99).add_(0.01 * log_var)
        else:
            log_var = self.log_var
        return -0.5 * (LOG_2PI + log_var + sq * torch.exp(-log_var)).sum(-1)

    def mean(self, params: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(params)

    def sample(self, params: torch.Tensor) -> torch.Tensor:
        loc = torch.sigmoid(params)
        return loc + torch.exp(0.5 * self.log_var) * torch.randn_like(loc)


class MSELoss(Likelihood):
    """Not a likelihood: minus the summed squared error, the student project's loss, for comparison only.

    -||x - m||^2 = log N(x; m, sigma^2 = 1/2) + (D/2) log(pi): the loss is the log-density of a Gaussian
    with a fixed variance of 1/2, minus a constant (`log_density_offset`).
    """

    is_likelihood = False

    def log_density_offset(self, num_dims: int) -> float:
        return -0.5 * num_dims * math.log(math.pi)

    def nats_kind(self, binary_data: bool) -> str:
        return "the squared error read as a Gaussian with sigma^2 = 1/2 (constant added)"

    def log_prob(self, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        return -(x - torch.sigmoid(params)).pow(2).sum(-1)

    def mean(self, params: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(params)

    def sample(self, params: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(params)


class L1Loss(MSELoss):
    """Not a likelihood: minus the summed absolute error, for comparison only: the log-density of a Laplace
    with b = 1 minus D log 2."""

    def log_density_offset(self, num_dims: int) -> float:
        return -num_dims * math.log(2.0)

    def nats_kind(self, binary_data: bool) -> str:
        return "the absolute error read as a Laplace with b = 1 (constant added)"

    def log_prob(self, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        return -(x - torch.sigmoid(params)).abs().sum(-1)


class DiscretizedLogisticMixture(Likelihood):
    """A mixture of `components` discretized logistics per pixel over the 256 grey levels (Salimans et al.,
    2017, without the autoregressive channel coupling), independent across pixels. components=1 is the
    plain discretized logistic. x in [0, 1] is read as the levels k/255; log_prob is in nats and is an exact
    log-mass, so -log_prob / (D ln 2) is bits per dimension.
    """

    discrete = True

    def bits_per_dim(self, log_prob_nats: float, num_dims: int) -> float:
        return float(bits_per_dim(log_prob_nats, num_dims))

    def nats_kind(self, binary_data: bool) -> str:
        return "exact: a mass over the 256 levels"

    def __init__(self, components: int = 1) -> None:
        super().__init__()
        self.components = components
        self.params_per_dim = 3 * components if components > 1 else 2

    def _split(self, params: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        b = params.shape[0]
        k = self.components
        p = params.reshape(b, self.params_per_dim, -1)  # (B, P, D): parameters are stored channel-major
        if k == 1:
            loc, log_scale = p[:, 0:1], p[:, 1:2]
            logit_w = torch.zeros_like(loc)
        else:
            logit_w, loc, log_scale = p[:, :k], p[:, k:2 * k], p[:, 2 * k:]
        return logit_w, torch.tanh(loc), log_scale.clamp(min=-7.0)

    def log_prob(self, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        logit_w, loc, log_scale = self._split(params)
        x = (x * 2.0 - 1.0).unsqueeze(1)  # levels on [-1, 1], bin width 2/255
        centered = x - loc
        inv_s = torch.exp(-log_scale)
        plus = inv_s * (centered + 1.0 / 255.0)
        minus = inv_s * (centered - 1.0 / 255.0)
        cdf_delta = torch.sigmoid(plus) - torch.sigmoid(minus)
        log_cdf_plus = plus - F.softplus(plus)  # log sigmoid(plus), for the lowest level
        log_one_minus_cdf_minus = -F.softplus(minus)  # for the highest level
        mid = inv_s * centered
        # In the middle, where the bin mass underflows, use the density times the bin width.
        log_pdf_mid = mid - log_scale - 2.0 * F.softplus(mid) + math.log(2.0 / 255.0)
        log_mass = torch.where(
            x < -0.999,
            log_cdf_plus,
            torch.where(
                x > 0.999,
                log_one_minus_cdf_minus,
                torch.where(cdf_delta > 1e-5, torch.log(cdf_delta.clamp_min(1e-12)), log_pdf_mid),
            ),
        )
        if self.components == 1:  # one component: the mixture's log_softmax and logsumexp are the identity
            return log_mass.sum((1, 2))
        log_w = F.log_softmax(logit_w, dim=1)
        return torch.logsumexp(log_w + log_mass, dim=1).sum(-1)

    def mean(self, params: torch.Tensor) -> torch.Tensor:
        logit_w, loc, _ = self._split(params)
        w = torch.softmax(logit_w, dim=1)
        return ((w * loc).sum(1) + 1.0) / 2.0

    def sample(self, params: torch.Tensor) -> torch.Tensor:
        logit_w, loc, log_scale = self._split(params)
        index = torch.distributions.Categorical(logits=logit_w.transpose(1, 2)).sample().unsqueeze(1)
        loc = loc.gather(1, index).squeeze(1)
        log_scale = log_scale.gather(1, index).squeeze(1)
        u = torch.rand_like(loc).clamp(1e-5, 1 - 1e-5)
        x = loc + torch.exp(log_scale) * (torch.log(u) - torch.log1p(-u))
        return ((x.clamp(-1, 1) + 1.0) / 2.0 * 255.0).round() / 255.0


def make_likelihood(name: str, decoder_std: float = 0.1, mixture_components: int = 5) -> Likelihood:
    """Build a likelihood by its RunConfig name."""
    table = {
        "bernoulli": Bernoulli,
        "gaussian": Gaussian,
        "gaussian-fixed": lambda: FixedGaussian(decoder_std),
        "sigma-vae": SigmaVAE,
        "mse": MSELoss,
        "l1": L1Loss,
        "discretized-logistic": lambda: DiscretizedLogisticMixture(1),
        "discretized-logistic-mixture": lambda: DiscretizedLogisticMixture(mixture_components),
    }
    if name not in table:
        raise ValueError(f"likelihood={name!r} is not allowed; choose one of: {', '.join(table)}")
    return table[name]()
