"""A linear-Gaussian latent-variable model in which every quantity of the ELBO chapter is exact.

    p(z) = N(0, I_Z),   p(x|z) = N(W z + b, sigma^2 I_D)
    p(x) = N(b, W W^T + sigma^2 I_D)                                   (exact marginal)
    p(z|x) = N(m(x), S),  S = Lambda^{-1},  Lambda = I + W^T W / sigma^2,  m(x) = S W^T (x - b) / sigma^2

The model carries an amortized diagonal Gaussian encoder q(z|x) = N(A x + c, diag exp(v)) and the VAE
interface (`posterior`, `decode`, `log_prob_x_given_z`, `latent_dim`), so `vaelib.objectives.elbo` and
`iwae_bound` run on it unchanged and can be checked against the closed forms below.

With orthogonal columns of W (the default), W^T W and hence the posterior covariance S are diagonal, so
the exact posterior is a member of the encoder family: after `use_exact_posterior()` the ELBO equals
log p(x) and every single-sample importance weight p(x, z) / q(z|x) equals p(x).

Shapes: x is (B, D), z is (..., B, Z); per-example quantities are (B,) in nats. Everything is float64 by
default, so identities hold to ~1e-10 rather than to float32 round-off.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .objectives import LOG_2PI, kl_divergence


class LinearGaussian(nn.Module):
    """p(z) = N(0, I_Z), p(x|z) = N(W z + b, sigma^2 I_D), with encoder q(z|x) = N(A x + c, diag exp(v)).

    data_dim D, latent_dim Z (Z <= D when `orthogonal`), sigma > 0 the observation noise std.
    `orthogonal`: W = Q diag(column_scales) with orthonormal Q (diagonal exact posterior); otherwise W has
    i.i.d. N(0, column_scale^2 / Z) entries and the exact posterior has correlations that no diagonal q
    can represent. `column_scales` (Z,) are the column norms of W when orthogonal (default: evenly
    spaced from 1 to 2). The encoder starts at A = 0, c = 0, v = 0, i.e. q(z|x) = p(z).
    """

    def __init__(self, data_dim: int = 10, latent_dim: int = 2, sigma: float = 0.5, orthogonal: bool = True,
                 column_scales: list[float] | torch.Tensor | None = None, seed: int = 0,
                 dtype: torch.dtype = torch.float64) -> None:
        super().__init__()
        if not (isinstance(data_dim, int) and data_dim >= 1 and isinstance(latent_dim, int) and latent_dim >= 1):
            raise ValueError(f"data_dim={data_dim!r} and latent_dim={latent_dim!r} must be positive integers")
        if orthogonal and latent_dim > data_dim:
            raise ValueError(f"latent_dim={latent_dim} > data_dim={data_dim}: W cannot have {latent_dim} orthogonal "
                             f"columns in R^{data_dim}; lower latent_dim or pass orthogonal=False")
        if not sigma > 0:
            raise ValueError(f"sigma={sigma!r} must be > 0 (the observation noise standard deviation)")
        if column_scales is None:
            scales = torch.linspace(1.0, 2.0, latent_dim, dtype=dtype)
        else:
            scales = torch.as_tensor(column_scales, dtype=dtype)
            if scales.shape != (latent_dim,):
                raise ValueError(f"column_scales has shape {tuple(scales.shape)}; it needs one value per latent "
                                 f"dimension, shape ({latent_dim},)")
        g = torch.Generator().manual_seed(seed)
        raw = torch.randn(data_dim, latent_dim, generator=g, dtype=dtype)
        if orthogonal:
            q, r = torch.linalg.qr(raw)
            weight = q * torch.sign(torch.diagonal(r)) * scales  # sign fix: a unique, seed-determined Q
        else:
            weight = raw * scales / math.sqrt(latent_dim)
        self.W = nn.Parameter(weight)  # (D, Z)
        self.b = nn.Parameter(0.5 * torch.randn(data_dim, generator=g, dtype=dtype))  # (D,)
        self.register_buffer("sigma", torch.tensor(float(sigma), dtype=dtype))
        self.A = nn.Parameter(torch.zeros(latent_dim, data_dim, dtype=dtype))  # (Z, D)
        self.c = nn.Parameter(torch.zeros(latent_dim, dtype=dtype))  # (Z,)
        self.log_var = nn.Parameter(torch.zeros(latent_dim, dtype=dtype))  # (Z,), v
        self.data_dim = data_dim
        self.latent_dim = latent_dim

    def _as_data(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.data_dim:
            raise ValueError(f"x has shape {tuple(x.shape)}; this model needs (B, {self.data_dim})")
        return x.to(self.W.dtype)

    # --- the VAE interface (what vaelib.objectives uses) ------------------------------------------------
    def posterior(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """q(z|x) parameters: loc = A x + c and log-variance v, each (B, Z)."""
        x = self._as_data(x)
        loc = x @ self.A.T + self.c
        return loc, self.log_var.expand_as(loc)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Mean of p(x|z), W z + b: (..., B, D)."""
        return z @ self.W.T + self.b

    def log_prob_x_given_z(self, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        """log N(x; params, sigma^2 I) in nats summed over the D dimensions: (..., B)."""
        x = self._as_data(x)
        var = self.sigma ** 2
        return -0.5 * ((x - params).pow(2) / var + LOG_2PI + torch.log(var)).sum(-1)

    # --- exact quantities ---------------------------------------------------------------------------------
    def marginal_covariance(self) -> torch.Tensor:
        """Cov(x) = W W^T + sigma^2 I: (D, D)."""
        eye = torch.eye(self.data_dim, dtype=self.W.dtype, device=self.W.device)
        return self.W @ self.W.T + self.sigma ** 2 * eye

    def log_marginal(self, x: torch.Tensor) -> torch.Tensor:
        """Exact log p(x) = log N(x; b, W W^T + sigma^2 I): (B,) nats."""
        x = self._as_data(x)
        chol = torch.linalg.cholesky(self.marginal_covariance())  # (D, D) lower
        # Solving for all B residuals at once; torch.distributions.MultivariateNormal is ~50x slower here.
        white = torch.linalg.solve_triangular(chol, (x - self.b).T, upper=False)  # (D, B)
        half_log_det = torch.log(torch.diagonal(chol)).sum()
        return -0.5 * (white.pow(2).sum(0) + self.data_dim * LOG_2PI) - half_log_det

    def posterior_precision(self) -> torch.Tensor:
        """Lambda = I + W^T W / sigma^2, the precision of p(z|x) (the same for every x): (Z, Z)."""
        eye = torch.eye(self.latent_dim, dtype=self.W.dtype, device=self.W.device)
        return eye + self.W.T @ self.W / self.sigma ** 2

    def exact_posterior(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """p(z|x) = N(m(x), S): mean m(x) = S W^T (x - b) / sigma^2, (B, Z), and covariance S, (Z, Z)."""
        x = self._as_data(x)
        cov = torch.linalg.inv(self.posterior_precision())
        mean = (x - self.b) @ self.W @ cov / self.sigma ** 2  # S is symmetric, so ((x-b) W S) = (S W^T (x-b))^T
        return mean, cov

    def kl_to_true_posterior(self, x: torch.Tensor) -> torch.Tensor:
        """Exact KL(q(z|x) || p(z|x)) in nats: (B,).

        0.5 [tr(Lambda Sigma_q) + (m - mu)^T Lambda (m - mu) - Z - log det Lambda - log det Sigma_q].
        """
        loc, log_var = self.posterior(x)
        mean, _ = self.exact_posterior(x)
        precision = self.posterior_precision()
        delta = mean - loc  # (B, Z)
        trace = (torch.diagonal(precision) * torch.exp(log_var)).sum(-1)
        mahalanobis = ((delta @ precision) * delta).sum(-1)
        return 0.5 * (trace + mahalanobis - self.latent_dim - torch.logdet(precision) - log_var.sum(-1))

    def elbo_exact(self, x: torch.Tensor) -> torch.Tensor:
        """The ELBO E_q[log p(x|z)] - KL(q(z|x) || p(z)) in closed form (no sampling): (B,) nats.

        E_q[log p(x|z)] = -D/2 log(2 pi sigma^2) - (||x - W mu - b||^2 + sum_j s_j ||W_j||^2) / (2 sigma^2)
        for q = N(mu, diag s). Differentiable in every parameter.
        """
        x = self._as_data(x)
        loc, log_var = self.posterior(x)
        var = self.sigma ** 2
        residual = (x - self.decode(loc)).pow(2).sum(-1)
        spread = (torch.exp(log_var) * self.W.pow(2).sum(0)).sum(-1)
        log_px_z = -0.5 * self.data_dim * (LOG_2PI + torch.log(var)) - 0.5 * (residual + spread) / var
        return log_px_z - kl_divergence(loc, log_var).sum(-1)

    def elbo_gradient_wrt_mean(self, x: torch.Tensor) -> torch.Tensor:
        """d ELBO / d mu for q = N(mu, diag s) at the encoder's current mean: Lambda (m(x) - mu), (B, Z).

        From the closed form: d/dmu [-||x - W mu - b||^2 / (2 sigma^2) - ||mu||^2 / 2]
        = W^T (x - b) / sigma^2 - (I + W^T W / sigma^2) mu = Lambda (m - mu). It is zero at mu = m(x).
        """
        loc, _ = self.posterior(x)
        mean, _ = self.exact_posterior(x)
        return (mean - loc) @ self.posterior_precision()

    # --- encoder settings ---------------------------------------------------------------------------------
    @torch.no_grad()
    def use_exact_posterior(self) -> LinearGaussian:
        """Set the encoder to the best diagonal Gaussian: mean m(x) and variances 1 / Lambda_jj.

        This minimizes KL(q(z|x) || p(z|x)) over diagonal Gaussians (the mean-field optimum). When W has
        orthogonal columns, Lambda is diagonal, 1 / Lambda_jj = S_jj, and q IS the exact posterior.
        Returns the model, so calls chain.
        """
        precision = self.posterior_precision()
        gain = torch.linalg.inv(precision) @ self.W.T / self.sigma ** 2  # (Z, D): m(x) = gain (x - b)
        self.A.copy_(gain)
        self.c.copy_(-gain @ self.b)
        self.log_var.copy_(-torch.log(torch.diagonal(precision)))
        return self

    @torch.no_grad()
    def perturb_encoder(self, mean_noise: float = 0.3, log_var_shift: float = 0.5, seed: int = 0) -> LinearGaussian:
        """Move the encoder away from where it is: A and c get N(0, mean_noise^2) noise (A's scaled by
        1/sqrt(D)), every log-variance v_j gets + log_var_shift. Returns the model."""
        g = torch.Generator().manual_seed(seed)
        self.A.add_(mean_noise / math.sqrt(self.data_dim) * torch.randn(self.A.shape, generator=g, dtype=self.A.dtype))
        self.c.add_(mean_noise * torch.randn(self.c.shape, generator=g, dtype=self.c.dtype))
        self.log_var.add_(log_var_shift)
        return self

    # --- sampling -----------------------------------------------------------------------------------------
    @torch.no_grad()
    def sample_x(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n draws from p(x): z ~ N(0, I), x = W z + b + sigma eps. Returns (n, D)."""
        if not (isinstance(n, int) and n >= 1):
            raise ValueError(f"n={n!r} must be a positive integer")
        z = torch.randn(n, self.latent_dim, generator=generator, dtype=self.W.dtype)
        eps = torch.randn(n, self.data_dim, generator=generator, dtype=self.W.dtype)
        return self.decode(z) + self.sigma * eps
