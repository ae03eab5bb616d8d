"""Chapter 2's demonstrations: the ELBO, its two SGVB estimators and the importance-weighted bound on the
exactly solvable linear-Gaussian model (`vaelib.toy`), where every quantity has a closed form to check
against, and AEVB's own update fitting its encoder. Every per-example quantity is in nats, as everywhere in
vaelib; the pictures are `vaelib.figures.plot_iwae_gap` and `plot_toy_training`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from ..config import RunConfig, check_int, check_ints
from ..evaluate import seeded
from ..methods import aevb_update
from ..objectives import elbo, iwae_bound
from ..toy import LinearGaussian
from ..train import make_optimizer


def elbo_gap_table(model: LinearGaussian, x: torch.Tensor, n_samples: int = 10_000,
                   ks: Sequence[int] = (1, 5, 50, 500, 5000), seed: int = 0) -> pd.DataFrame:
    """Per datapoint of x (B, D): every side of log p(x) = ELBO + KL(q(z|x) || p(z|x)), in nats.

    Columns: log_px (exact), elbo_exact (closed form), elbo_A and elbo_B (vaelib.objectives.elbo with
    L = n_samples, estimators A and B), kl_posterior (exact KL(q(z|x) || p(z|x))), elbo_plus_kl
    (elbo_exact + kl_posterior, equal to log_px), gap (log_px - elbo_exact), kl_prior_analytic and
    kl_prior_mc (KL(q(z|x) || p(z)): estimator B's analytic term, estimator A's Monte Carlo mean), and
    iwae_k<K> (vaelib.objectives.iwae_bound, one estimate per K).
    """
    check_int("n_samples", n_samples)
    check_ints("ks", ks)
    with seeded(seed), torch.no_grad():
        log_px = model.log_marginal(x)
        exact = model.elbo_exact(x)
        kl_post = model.kl_to_true_posterior(x)
        terms_a = elbo(model, x, "A", n_samples)
        terms_b = elbo(model, x, "B", n_samples)
        table = pd.DataFrame({
            "log_px": log_px, "elbo_exact": exact, "elbo_A": terms_a.elbo, "elbo_B": terms_b.elbo,
            "kl_posterior": kl_post, "elbo_plus_kl": exact + kl_post, "gap": log_px - exact,
            "kl_prior_analytic": terms_b.kl, "kl_prior_mc": terms_a.kl,
        })
        for k in ks:
            table[f"iwae_k{k}"] = iwae_bound(model, x, int(k)).numpy()
    table.index.name = "datapoint"
    return table

def estimator_moments(model: LinearGaussian, x: torch.Tensor, n_draws: int = 10_000, seed: int = 0) -> pd.DataFrame:
    """Mean and variance of single-sample (L = 1) SGVB estimates of the ELBO, estimators A and B.

    Draws n_draws independent estimates per datapoint of x (B, D) with vaelib.objectives.elbo. One row per
    (datapoint, estimator): mean, variance, std_error of the mean, elbo_exact and log_px, all in nats.
    """
    check_int("n_draws", n_draws)
    with seeded(seed), torch.no_grad():
        repeated = x.repeat(n_draws, 1)  # (n_draws * B, D): one L = 1 estimate per row
        draws = {est: elbo(model, repeated, est, 1).elbo.reshape(n_draws, -1) for est in ("A", "B")}
        exact, log_px = model.elbo_exact(x), model.log_marginal(x)
    rows = []
    for est, values in draws.items():
        for i in range(values.shape[1]):
            var = float(values[:, i].var())
            rows.append({"datapoint": i, "estimator": est, "mean": float(values[:, i].mean()), "variance": var,
                         "std_error": math.sqrt(var / n_draws), "elbo_exact": float(exact[i]),
                         "log_px": float(log_px[i])})
    return pd.DataFrame(rows)

def elbo_gradient_table(model: LinearGaussian, x: torch.Tensor, n_samples: int = 10_000, estimator: str = "B",
                        seed: int = 0) -> pd.DataFrame:
    """The SGVB gradient of the ELBO w.r.t. the encoder mean next to the exact one, per (datapoint, dim).

    sgvb: autograd of vaelib.objectives.elbo (L = n_samples draws) w.r.t. mu = A x + c; exact: Lambda (m(x) - mu)
    (`LinearGaussian.elbo_gradient_wrt_mean`). Both in nats per unit of mu.
    """
    with seeded(seed):
        loc, log_var = (t.detach().requires_grad_(True) for t in model.posterior(x))
        fixed = _FixedPosterior(model, loc, log_var)
        (grad,) = torch.autograd.grad(elbo(fixed, x, estimator, n_samples).elbo.sum(), loc)
    exact = model.elbo_gradient_wrt_mean(x).detach()
    b, z = grad.shape
    return pd.DataFrame({"datapoint": np.repeat(np.arange(b), z), "dim": np.tile(np.arange(z), b),
                         "sgvb": grad.reshape(-1).numpy(), "exact": exact.reshape(-1).numpy()})

class _FixedPosterior(torch.nn.Module):
    """The model with q(z|x) pinned to given (loc, log_var) leaves, so autograd reaches mu directly."""

    def __init__(self, model: LinearGaussian, loc: torch.Tensor, log_var: torch.Tensor) -> None:
        super().__init__()
        self.model, self.loc, self.lv = model, loc, log_var
        self.latent_dim = model.latent_dim

    def posterior(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.loc, self.lv

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.model.decode(z)

    def log_prob_x_given_z(self, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        return self.model.log_prob_x_given_z(x, params)

def iwae_gap_curve(model: LinearGaussian, x: torch.Tensor, ks: Sequence[int] = (1, 5, 50, 500, 5000),
                   n_repeats: int = 20, seed: int = 0) -> pd.DataFrame:
    """The importance-weighted bound against K, n_repeats independent estimates per (datapoint, K).

    Long format, one row per (k, repeat, datapoint): iwae_bound (vaelib.objectives.iwae_bound), log_px
    (exact) and gap = log_px - iwae_bound, in nats. E[gap] >= 0 falls towards 0 as K grows.
    """
    check_ints("ks", ks)
    check_int("n_repeats", n_repeats)
    with seeded(seed), torch.no_grad():
        log_px = model.log_marginal(x).numpy()
        repeated = x.repeat(n_repeats, 1)  # (n_repeats * B, D): independent estimates of each datapoint
        frames = []
        for k in ks:
            bound = iwae_bound(model, repeated, int(k)).reshape(n_repeats, -1).numpy()
            r, b = np.meshgrid(np.arange(n_repeats), np.arange(bound.shape[1]), indexing="ij")
            frames.append(pd.DataFrame({"k": int(k), "repeat": r.ravel(), "datapoint": b.ravel(),
                                        "iwae_bound": bound.ravel(), "log_px": log_px[b.ravel()]}))
    frame = pd.concat(frames, ignore_index=True)
    frame["gap"] = frame["log_px"] - frame["iwae_bound"]
    return frame

def train_toy_encoder(model: LinearGaussian, x: torch.Tensor, steps: int = 1000, batch_size: int = 100,
                      lr: float = 0.05, estimator: str = "B", n_samples: int = 1, optimizer: str = "adam",
                      eval_every: int = 20, seed: int = 0, progress: bool = False) -> pd.DataFrame:
    """Fit the encoder of `model` to data x (N, D) with AEVB (Algorithm 1), decoder held at its true value.

    Each step draws a minibatch of `batch_size` rows of x and calls `vaelib.methods.aevb_update`, the very
    update the book's MNIST runs use. With the decoder fixed, the best achievable ELBO is log p(x) (when W
    has orthogonal columns), so the history shows how far SGVB gets. Every `eval_every` steps and at the
    end it records, as means over all of x in nats: elbo (closed form), log_px (exact) and kl_posterior
    (exact KL(q(z|x) || p(z|x))). Returns that history (step, elbo, log_px, kl_posterior); `model` is
    trained in place.
    """
    for name, value in (("steps", steps), ("batch_size", batch_size), ("eval_every", eval_every)):
        check_int(name, value)
    config = RunConfig(estimator=estimator, n_samples=n_samples, optimizer=optimizer, lr=lr,
                       batch_size=batch_size)  # validates estimator, optimizer and lr with clear messages
    decoder = [model.W, model.b]
    for p in decoder:
        p.requires_grad_(False)  # make_optimizer takes only trainable parameters: the encoder
    rows = []

    def snapshot(step: int) -> None:
        with torch.no_grad():
            rows.append({"step": step, "elbo": float(model.elbo_exact(x).mean()),
                         "log_px": float(model.log_marginal(x).mean()),
                         "kl_posterior": float(model.kl_to_true_posterior(x).mean())})

    try:
        opt = make_optimizer(model, config)
        generator = torch.Generator().manual_seed(seed)
        with seeded(seed):
            snapshot(0)
            for step in tqdm(range(1, steps + 1), desc="AEVB on the linear-Gaussian model", disable=not progress):
                batch = x[torch.randint(len(x), (batch_size,), generator=generator)]
                aevb_update(model, opt, batch, config, 1.0)
                if step % eval_every == 0 or step == steps:
                    snapshot(step)
    finally:
        for p in decoder:
            p.requires_grad_(True)
    return pd.DataFrame(rows)


def quieter_estimator_finding(moments: pd.DataFrame) -> str:
    """One sentence saying which estimator had the smaller variance at how many datapoints.

    `moments` is `estimator_moments`'s table (columns datapoint, estimator in {"A", "B"}, variance). The
    wording follows the counts, so the prose cannot claim a winner the table does not show.
    """
    missing = {"datapoint", "estimator", "variance"} - set(moments.columns)
    if missing:
        raise ValueError(f"moments lacks columns {sorted(missing)}: pass estimator_moments(...)'s table")
    wide = moments.pivot(index="datapoint", columns="estimator", values="variance")
    if set(wide.columns) != {"A", "B"}:
        raise ValueError(f"moments must hold estimators A and B, got {sorted(wide.columns)}")
    a_wins, b_wins = int((wide["A"] < wide["B"]).sum()), int((wide["B"] < wide["A"]).sum())
    n = len(wide)
    if a_wins == b_wins:
        return (f"Neither estimator is quieter overall here: A has the smaller variance at {a_wins} of {n} "
                f"points, B at {b_wins}.")
    lead, other = ("A", "B") if a_wins > b_wins else ("B", "A")
    lead_n, other_n = max(a_wins, b_wins), min(a_wins, b_wins)
    return (f"In this table estimator {lead} has the smaller variance at {lead_n} of {n} points "
            f"and {other} at {other_n}.")
