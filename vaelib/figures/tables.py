"""Tables the chapters show beside their figures: runs side by side, objectives scored on one bound, bounds
against the latent dimension. Nats per example; bits/dim by each likelihood's own rule."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import pandas as pd


def comparison_table(results: Mapping[str, Mapping], columns: Mapping[str, str] | Sequence[str] | None = None,
                     decimals: int = 2) -> pd.DataFrame:
    """A DataFrame with one row per run ({label: evaluate() dict}) and the chosen columns ({key: header}),
    rounded to `decimals`; keys a run lacks show as NaN, not as zero."""
    if columns is None:
        columns = {"elbo": "test ELBO (nats)", "log_likelihood": "log p(x) (nats)", "bits_per_dim": "bits/dim",
                   "active_units": "active units"}
    if not isinstance(columns, Mapping):
        columns = {c: c for c in columns}
    rows = {label: {header: result.get(key, math.nan) for key, header in columns.items()}
            for label, result in results.items()}
    return pd.DataFrame.from_dict(rows, orient="index").round(decimals)

def objective_table(runs: Mapping, results: Mapping[str, Mapping], decimals: int = 2) -> pd.DataFrame:
    """One row per run ({label: Run}, {label: evaluate() dict}): what it was trained with, its test ELBO at
    beta = 1 in nats (for a loss, the ELBO of the density it implies), the two ELBO terms, bits/dim and
    what kind of number that is. beta != 1 and the losses are not ELBOs during training; this evaluates
    every trained model by the same beta = 1 bound afterwards."""
    rows = {}
    for label, run in runs.items():
        result, config, likelihood = results[label], run.config, run.model.likelihood
        d = math.prod(run.model.image_shape)
        constant = likelihood.log_density_offset(d)  # a loss scored as the density it implies
        elbo = result["elbo"] + constant
        kind = likelihood.nats_kind(config.dataset == "binarized-mnist")
        bpd = likelihood.bits_per_dim(result["elbo"], d)  # the likelihood's own rule (offset included)
        trained = config.likelihood if config.beta == 1 else f"{config.likelihood}, beta = {config.beta:g}"
        row = {"trained with": trained, "test ELBO at beta=1 (nats)": elbo,
               "E_q log p(x|z) (nats)": result["log_px_z"] + constant, "KL (nats)": result["kl"],
               "bits/dim (from the ELBO)": bpd, "what the nats are": kind}
        if not math.isnan(result.get("log_likelihood", math.nan)):
            row[f"log p(x), IS k={result['iw_samples']} (nats)"] = result["log_likelihood"] + constant
        rows[label] = row
    return pd.DataFrame.from_dict(rows, orient="index").round(decimals)

def bound_table(results: Mapping, sampled: Mapping | None = None, index_name: str | None = None,
                decimals: int = 2) -> pd.DataFrame:
    """One row per key of `results` ({key: evaluate() dict with iw_samples=0}): test ELBO and its two terms
    (nats per image) and active units; with `sampled` ({key: evaluate() dict with iw_samples=k} on a subset)
    also the ELBO and the importance-sampled log p(x) on that subset, its k and its size."""
    rows = {}
    for key, result in results.items():
        row = {"test ELBO (nats)": result["elbo"], "E_q log p(x|z) (nats)": result["log_px_z"],
               "KL (nats)": result["kl"], "active units": result["active_units"],
               "test images": result["n_examples"]}
        if sampled:
            s = sampled[key]
            row.update({"ELBO on IS images (nats)": s["elbo"], "log p(x) IS (nats)": s["log_likelihood"],
                        "IS k": s["iw_samples"], "IS images": s["n_examples"]})
        rows[key] = row
    table = pd.DataFrame.from_dict(rows, orient="index").round(decimals)
    table.index.name = index_name
    return table
