"""A grid of AEVB runs trained as one batched computation: `train_grid(configs)`.

The runs of a figure that share a data set, batch size and sample budget and differ only in latent size,
seed or labels (Fig. 2's latent sizes, the latent study) train together: every MLP layer is one stacked
(G, out, in) tensor applied with `baddbmm`, and one fused Adagrad step updates all G members. Adagrad is
elementwise, so the stacked step is each member's own step.

Latent sizes differ, so the latent is padded to the largest Z with a mask: padded units have loc = 0,
log_var = 0 and eps = 0, hence z = 0, KL exactly 0, zero gradient on the padded encoder rows and decoder
columns (which start at zero and stay zero under Adagrad), so no padded unit enters any number.

Random streams match a solo run of each member's config: the data order and binarization come from a
generator seeded like `vaelib.train`'s, and eps is drawn per member from a generator holding the global
torch state a solo run has after `seed_everything` + `build_model`. Each member writes an ordinary run
directory (config.json, history.csv, checkpoint in `vaelib.train`'s format), so `train.fit_or_load` on the
member's own config loads it, resumes it or evaluates it alone.
"""

from __future__ import annotations

import dataclasses
import math
import os
import random
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from . import runs
from .config import ConfigError, RunConfig
from .data import Dataset, load_dataset
from .evaluate import evaluate_elbo
from .io import write_text_atomic
from .methods import NonFiniteLossError
from .models import VAE, bound_log_var, build_model
from .objectives import kl_divergence
from .runs import HISTORY_COLUMNS, Run, run_lock, select_device
from .train import kl_weight, learning_rate, make_optimizer, rng_state, seed_everything, should_evaluate

# The fields grid members may differ in; every other RunConfig field must be equal across the grid.
GRID_VARYING = ("latent_dim", "seed", "extra")


def grid_incompatibility(configs: list[RunConfig]) -> str | None:
    """Why `configs` cannot train as one grid (a sentence naming the field), or None when they can."""
    if not configs:
        return "the grid is empty"
    ref = configs[0]
    for config in configs[1:]:
        for f in dataclasses.fields(RunConfig):
            if f.name not in GRID_VARYING and getattr(config, f.name) != getattr(ref, f.name):
                return (f"field {f.name!r} differs ({getattr(ref, f.name)!r} vs {getattr(config, f.name)!r}); "
                        f"grid members may differ only in {', '.join(GRID_VARYING)}")
    allowed = {"method": "aevb", "estimator": "B", "n_samples": 1}
    for name, value in allowed.items():
        if getattr(ref, name) != value:
            return f"field {name!r} is {getattr(ref, name)!r}; the grid trains only {name}={value!r}"
    if ref.architecture not in ("mlp", "auto"):
        return f"field 'architecture' is {ref.architecture!r}; the grid trains only MLPs"
    if select_device(ref.device).type != "cpu":
        # a member's checkpoint must hold the CUDA stream a solo run would hold: not written yet
        return f"field 'device' is {ref.device!r} (not the CPU); the grid trains on the CPU only so far"
    return None


def grid_groups(configs: list[RunConfig]) -> tuple[list[list[RunConfig]], list[RunConfig]]:
    """Split `configs` into groups that can each train as one grid (two members or more) and the rest."""
    groups: dict[str, list[RunConfig]] = {}
    rest = []
    for config in configs:
        if grid_incompatibility([config]) is not None:
            rest.append(config)
            continue
        key = repr([(f.name, getattr(config, f.name)) for f in dataclasses.fields(RunConfig)
                    if f.name not in GRID_VARYING])
        groups.setdefault(key, []).append(config)
    buckets = [bucket for group in groups.values() for bucket in latent_buckets(group)]
    grids = [bucket for bucket in buckets if len(bucket) > 1]
    rest += [bucket[0] for bucket in buckets if len(bucket) == 1]
    return grids, rest


# Latent sizes up to this pad together: padding them costs little beside the hidden layers; a larger
# latent size (Fig. 2's 200) trains only beside its own size, so it makes no small member pay for it.
PAD_LIMIT = 32


def latent_buckets(configs: list[RunConfig]) -> list[list[RunConfig]]:
    """`configs` split into grids: every latent size <= PAD_LIMIT in one, each larger size in its own."""
    buckets: dict[int, list[RunConfig]] = {}
    for config in configs:
        key = PAD_LIMIT if config.latent_dim <= PAD_LIMIT else config.latent_dim
        buckets.setdefault(key, []).append(config)
    return list(buckets.values())


def check_grid(configs: list[RunConfig]) -> None:
    """Raise ConfigError (before any work) when `configs` cannot train as one grid."""
    reason = grid_incompatibility(configs)
    if reason is not None:
        raise ConfigError(f"these runs cannot train as one grid: {reason}. Train them apart (executor "
                          "'serial') or split the grid")


def _linears(module: nn.Module) -> list[nn.Linear]:
    layers = [m for m in module.modules() if isinstance(m, nn.Linear)]
    if any(not isinstance(m, nn.Linear) and list(m.parameters(recurse=False)) for m in module.modules()):
        raise ConfigError("the grid trains only MLP encoders and decoders")
    return layers


class _Stack:
    """The G members' MLP layers stacked and zero-padded: weights (G, out, in), biases (G, out)."""

    def __init__(self, models: list[VAE], device: torch.device) -> None:
        self.z = [m.latent_dim for m in models]
        self.z_max = max(self.z)
        self.enc = [_linears(m.encoder.body) for m in models]
        self.dec = [_linears(m.decoder) for m in models]
        self.weights: list[torch.Tensor] = []
        self.biases: list[torch.Tensor] = []
        for k in range(len(self.enc[0]) + len(self.dec[0])):
            shapes = [self._padded_shape(g, k) for g in range(len(models))]
            out, inp = max(s[0] for s in shapes), max(s[1] for s in shapes)
            self.weights.append(torch.zeros(len(models), out, inp, device=device))
            self.biases.append(torch.zeros(len(models), out, device=device))
        self.load_from(models)
        self.mask = torch.zeros(len(models), 1, self.z_max, device=device)
        for g, z in enumerate(self.z):
            self.mask[g, :, :z] = 1.0
        for t in self.weights + self.biases:
            t.requires_grad_(True)

    def _layer(self, g: int, k: int) -> nn.Linear:
        n_enc = len(self.enc[g])
        return self.enc[g][k] if k < n_enc else self.dec[g][k - n_enc]

    def _padded_shape(self, g: int, k: int) -> tuple[int, int]:
        n_enc = len(self.enc[g])
        out, inp = self._layer(g, k).weight.shape
        if k == n_enc - 1:
            out = 2 * self.z_max
        if k == n_enc:
            inp = self.z_max
        return out, inp

    def _rows(self, g: int, k: int) -> list[tuple[slice, slice]]:
        """(member rows, stacked rows) pairs: the encoder's last layer puts loc at 0:Z and log_var at Zmax:."""
        out = self._layer(g, k).weight.shape[0]
        if k == len(self.enc[g]) - 1:
            z = self.z[g]
            return [(slice(0, z), slice(0, z)), (slice(z, 2 * z), slice(self.z_max, self.z_max + z))]
        return [(slice(0, out), slice(0, out))]

    @torch.no_grad()
    def load_from(self, models: list[VAE]) -> None:
        for g in range(len(models)):
            for k in range(len(self.weights)):
                layer = self._layer(g, k)
                inp = layer.weight.shape[1]
                for src, dst in self._rows(g, k):
                    self.weights[k][g, dst, :inp] = layer.weight[src]
                    self.biases[k][g, dst] = layer.bias[src]

    @torch.no_grad()
    def write_to(self, g: int, tensors: tuple[list[torch.Tensor], list[torch.Tensor]] | None = None
                 ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Member g's slice of each layer, as (weight, bias) in the member's own shapes (of `tensors`,
        default the parameters themselves)."""
        weights, biases = tensors if tensors is not None else (self.weights, self.biases)
        out = []
        for k in range(len(weights)):
            layer = self._layer(g, k)
            inp = layer.weight.shape[1]
            w = torch.cat([weights[k][g, dst, :inp] for _, dst in self._rows(g, k)])
            b = torch.cat([biases[k][g, dst] for _, dst in self._rows(g, k)])
            out.append((w, b))
        return out

    def forward(self, x: torch.Tensor, eps: torch.Tensor, activation: nn.Module, likelihood, beta: float
                ) -> tuple[torch.Tensor, ...]:
        """x (G, B, D), eps (G, B, Zmax) zero on padded units: per-example (objective, elbo, log_px_z, kl),
        each (G, B) nats."""
        n_enc = len(self.enc[0])
        h = x
        for k in range(n_enc):
            h = torch.baddbmm(self.biases[k].unsqueeze(1), h, self.weights[k].transpose(1, 2))
            if k < n_enc - 1:
                h = activation(h)
        loc = h[..., :self.z_max] * self.mask
        log_var = bound_log_var(h[..., self.z_max:]) * self.mask
        h = loc + torch.exp(0.5 * log_var) * eps
        for k in range(n_enc, len(self.weights)):
            h = torch.baddbmm(self.biases[k].unsqueeze(1), h, self.weights[k].transpose(1, 2))
            if k < len(self.weights) - 1:
                h = activation(h)
        g, b, d = x.shape
        log_px_z = likelihood.log_prob(x.reshape(g * b, d), h.reshape(g * b, -1)).reshape(g, b)
        kl = kl_divergence(loc, log_var).sum(-1)
        return log_px_z - beta * kl, log_px_z - kl, log_px_z, kl


def _activation(model: VAE) -> nn.Module:
    acts = [m for m in model.encoder.body.modules() if not isinstance(m, nn.Linear | nn.Sequential)]
    return acts[0] if acts else nn.Identity()


def train_grid(configs: list[RunConfig], runs_dir: str | os.PathLike | None = None,
               data_dir: str | os.PathLike | None = None, dataset: Dataset | None = None) -> list[Run]:
    """Train `configs` (AEVB MLP runs differing only in latent_dim, seed, extra) as one grid into their own
    cache directories (`vaelib.runs.run_dir`) and return their Runs in order.

    Members already complete in the cache are loaded, not retrained. A member with an unfinished
    checkpoint is refused (resume it alone with `train.fit_or_load`). Training semantics are
    `vaelib.train.fit`'s: Adagrad/Adam step sizes, eval schedule, history columns; the `seconds` column is
    the member's share of the grid's training time (the epoch's wall time divided by the number of members
    trained), and `eval_seconds` the member's own evaluation time. `dataset`: the loaded data, as for
    `train.fit` (default: loaded from the members' config).
    """
    check_grid(configs)
    outs = [runs.run_dir(c, runs_dir) for c in configs]
    done = {i: runs.completed_run(out, c) for i, (out, c) in enumerate(zip(outs, configs, strict=True))}
    todo = [i for i in range(len(configs)) if done[i] is None]
    for i in todo:
        if (outs[i] / runs.CHECKPOINT_FILE).exists():
            raise ConfigError(f"{outs[i]} holds an unfinished run; resume it alone with train.fit_or_load "
                              "(the grid starts members from scratch only)")
    if todo:
        trained = _train_members([configs[i] for i in todo], [outs[i] for i in todo], data_dir, dataset)
        done.update(zip(todo, trained, strict=True))
    return [done[i] for i in range(len(configs))]


def _train_members(configs: list[RunConfig], outs: list[Path], data_dir: str | os.PathLike | None,
                   dataset: Dataset | None) -> list[Run]:
    ref = configs[0]
    device = select_device(ref.device)
    if dataset is None:
        dataset = load_dataset(ref.dataset, data_dir, ref.train_size, ref.test_size, device=device)
    else:
        dataset = dataset.to(device)
    models, optimizers, eps_gens = [], [], []
    for c in configs:
        seed_everything(c.seed)
        model = build_model(c, dataset.image_shape).to(device)
        models.append(model)
        optimizers.append(make_optimizer(model, c))
        # the global stream a solo run draws its eps from, right after building its model
        eps_gens.append(torch.Generator(device=device).manual_seed(0))
        eps_gens[-1].set_state(torch.get_rng_state() if device.type == "cpu" else torch.cuda.get_rng_state())
    data_gens = {c.seed: torch.Generator(device=dataset.x_train.device).manual_seed(c.seed) for c in configs}
    stack = _Stack(models, device)
    params = stack.weights + stack.biases
    fused = device.type in ("cpu", "cuda")
    opt_cls = torch.optim.Adagrad if ref.optimizer == "adagrad" else torch.optim.Adam
    optimizer = opt_cls(params, lr=ref.lr, weight_decay=ref.weight_decay, fused=True if fused else None)
    activation, likelihood = _activation(models[0]), models[0].likelihood
    seeds = sorted(data_gens)
    member_seed = torch.tensor([seeds.index(c.seed) for c in configs], device=device)
    n_train = dataset.x_train.shape[0]
    rows: list[list[dict]] = [[] for _ in configs]
    locks = [run_lock(out) for out in outs]
    for lock in locks:
        lock.__enter__()
    try:
        for out, c in zip(outs, configs, strict=True):
            out.mkdir(parents=True, exist_ok=True)
            runs.write_config(out, c)
            write_text_atomic(out / runs.HISTORY_FILE, pd.DataFrame([], columns=HISTORY_COLUMNS).to_csv(index=False))
        steps = 0
        for epoch in range(1, ref.epochs + 1):
            lr, beta = learning_rate(ref, epoch), kl_weight(ref, epoch)
            for group in optimizer.param_groups:
                group["lr"] = lr
            sums = torch.zeros(len(configs), 4, device=device)
            started = time.perf_counter()
            iters = [dataset.train_batches(ref.batch_size, data_gens[s]) for s in seeds]
            for step, xs in enumerate(zip(*iters, strict=True), start=1):
                x = torch.stack(xs).index_select(0, member_seed)
                eps = torch.zeros(len(configs), x.shape[1], stack.z_max, device=device)
                for g, gen in enumerate(eps_gens):
                    eps[g, :, :stack.z[g]] = torch.randn((1, x.shape[1], stack.z[g]), generator=gen,
                                                         device=device)[0]
                terms = stack.forward(x, eps, activation, likelihood, beta)
                loss = -terms[0].mean(1).sum()
                if not torch.isfinite(loss):
                    raise NonFiniteLossError(f"non-finite loss at epoch {epoch}, step {step} in the grid of "
                                             f"{[str(o) for o in outs]}; lower the step size")
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                steps += 1
                sums += torch.stack([t.sum(1) for t in terms], 1).detach()
            seconds = (time.perf_counter() - started) / len(configs)
            for g, (c, out, model) in enumerate(zip(configs, outs, models, strict=True)):
                _copy_member(stack, g, model)
                objective, elbo_, log_px_z, kl = (sums[g] / n_train).tolist()
                row = {"epoch": epoch, "samples_seen": epoch * n_train, "train_objective": objective,
                       "train_elbo": elbo_, "train_log_px_z": log_px_z, "train_kl": kl,
                       "test_elbo": math.nan, "test_log_px_z": math.nan, "test_kl": math.nan,
                       "beta": beta, "lr": lr, "seconds": seconds, "eval_seconds": 0.0}
                if should_evaluate(c, epoch, n_train):
                    t0 = time.perf_counter()
                    test = evaluate_elbo(model, dataset.test_batches(1000))
                    row.update(test_elbo=test["elbo"], test_log_px_z=test["log_px_z"], test_kl=test["kl"],
                               eval_seconds=time.perf_counter() - t0)
                rows[g].append(row)
                with open(out / runs.HISTORY_FILE, "a") as f:
                    f.write(pd.DataFrame([row], columns=HISTORY_COLUMNS).to_csv(index=False, header=False))
                if epoch % c.checkpoint_every == 0 or epoch == c.epochs:
                    _save_member(stack, g, c, out, model, optimizers[g], optimizer, eps_gens[g],
                                 data_gens[c.seed], epoch, rows[g])
    finally:
        for lock in reversed(locks):
            lock.__exit__(None, None, None)
    result = []
    for c, out, model, member_rows in zip(configs, outs, models, rows, strict=True):
        model.eval()
        result.append(Run(out, c, model, pd.DataFrame(member_rows, columns=HISTORY_COLUMNS)))
    return result


@torch.no_grad()
def _copy_member(stack: _Stack, g: int, model: VAE) -> None:
    for layer, (w, b) in zip(_linears(model.encoder.body) + _linears(model.decoder), stack.write_to(g),
                             strict=True):
        layer.weight.copy_(w)
        layer.bias.copy_(b)


def _save_member(stack: _Stack, g: int, config: RunConfig, out: Path, model: VAE,
                 member_opt: torch.optim.Optimizer, grid_opt: torch.optim.Optimizer, eps_gen: torch.Generator,
                 data_gen: torch.Generator, epoch: int, rows: list[dict]) -> None:
    """Write member g's checkpoint exactly as `vaelib.train.fit` would: its model, its own optimizer's state
    (the member's slices of the grid optimizer's), and the random states a solo run would hold now."""
    keys = [k for k in grid_opt.state[stack.weights[0]] if torch.is_tensor(grid_opt.state[stack.weights[0]][k])
            and grid_opt.state[stack.weights[0]][k].dim() > 0]
    slices = {k: stack.write_to(g, ([grid_opt.state[w][k] for w in stack.weights],
                                    [grid_opt.state[b][k] for b in stack.biases])) for k in keys}
    layers = _linears(model.encoder.body) + _linears(model.decoder)
    step = grid_opt.state[stack.weights[0]]["step"]
    for i, layer in enumerate(layers):
        for j, p in enumerate((layer.weight, layer.bias)):
            state = member_opt.state[p]
            state["step"] = step.clone()
            for k in keys:
                state[k] = slices[k][i][j].clone()
    saved = (random.getstate(), np.random.get_state(), torch.get_rng_state())
    random.seed(config.seed)  # a solo run seeds these and never draws from them again
    np.random.seed(config.seed)
    torch.set_rng_state(eps_gen.get_state())
    try:
        rng = rng_state(data_gen)
    finally:
        random.setstate(saved[0])
        np.random.set_state(saved[1])
        torch.set_rng_state(saved[2])
    runs.save_checkpoint(out, {"model": model.state_dict(), "optimizer": member_opt.state_dict(),
                               "epoch": epoch, "rng": rng, "history": rows})
