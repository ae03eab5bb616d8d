"""Every published number this book compares against, once: value, unit, source, and how the source
computed it. Notebooks, tables and the results page read them by name (`get("burda2015_vae")`), so a
value, its citation and its estimator label cannot drift apart between chapters. `active_units` is left
None unless the number was checked against its source (Burda et al. report active units per model in
Table 1, but no copy of it could be read in this book's build environment: they are left out).

Units: "nats" is a test NLL = -log p(x) in nats per image (smaller is better); "bits/dim" is a test NLL in
bits per dimension. `estimator` says how the source estimated it, in its own terms.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import pandas as pd


@dataclass(frozen=True)
class Reference:
    """One published number. `bibkey` is its entry in book/references.bib (None: not a paper)."""

    key: str
    value: float
    unit: str
    model: str
    source: str
    estimator: str
    data: str
    bibkey: str | None = None
    architecture: str = ""
    epochs: int | None = None
    test_images: int | None = None
    active_units: int | None = None
    note: str = ""

    @property
    def label(self) -> str:
        """"<model> (<source>)": how a table or a recorded number names its anchor."""
        return f"{self.model} ({self.source})"

    @property
    def log_px(self) -> float:
        """The number as a log-likelihood in nats (the negated NLL), for anchoring a log p(x)."""
        if self.unit != "nats":
            raise ValueError(f"{self.key} is in {self.unit}, not nats")
        return -self.value


_BURDA_MLP = "MLP 784-200-200-50, tanh, one stochastic layer of 50 units"
_BINARIZED = "dynamically binarized MNIST, 10,000 test images"
_CIFAR = "CIFAR-10, 10,000 test images"

REFERENCES: tuple[Reference, ...] = (
    # Dynamically binarized MNIST, one stochastic layer (Burda, Grosse & Salakhutdinov 2015, Table 1).
    Reference("burda2015_vae", 86.76, "nats", "VAE (k=1)", "Burda et al. 2015, Table 1",
              "importance sampling, k=5000", _BINARIZED, "burda2015importance", _BURDA_MLP, 3280, 10_000,
              note="trained on the ELBO"),
    Reference("burda2015_iwae_k50", 84.78, "nats", "IWAE (k=50)", "Burda et al. 2015, Table 1",
              "importance sampling, k=5000", _BINARIZED, "burda2015importance", _BURDA_MLP, 3280, 10_000,
              note="trained on the 50-sample importance-weighted bound"),
    Reference("nbip_vae", 86.35, "nats", "VAE (k=1), TensorFlow 2 reproduction", "github.com/nbip/IWAE, README",
              "importance sampling, k=5000", _BINARIZED, None, _BURDA_MLP, 3280, 10_000),
    # Dynamically binarized MNIST, one stochastic layer, convolutional (Kingma et al. 2016, Table 1, the row
    # "diagonal covariance": no flow). Values as given in the issue; search found no copy of the table in
    # this session, so the sample count of its log p(x) estimate is not stated here.
    Reference("kingma2016_resnet_vae", 81.08, "nats", "ResNet VAE, diagonal Gaussian posterior",
              "Kingma et al. 2016, Table 1", "importance sampling (sample count not verified here)",
              _BINARIZED, "kingma2016improved",
              "convolutional ResNet encoder and decoder, one stochastic layer, diagonal Gaussian q",
              note="trained on the ELBO; its test ELBO in the same table: -84.08 nats (not verified here)"),
    # CIFAR-10 test NLL in bits/dim.
    Reference("cifar_uniform", 8.0, "bits/dim", "uniform over the 256 levels", "by definition", "exact", _CIFAR),
    Reference("cifar_gaussian", 4.70, "bits/dim", "multivariate Gaussian over the pixels (not a VAE)",
              "van den Oord et al. 2016, Table 5", "exact", _CIFAR, "oord2016pixel"),
    Reference("cifar_iaf_vae", 3.11, "bits/dim", "ResNet VAE with inverse autoregressive flow (IAF-VAE)",
              "Kingma et al. 2016, Table 3", "importance sampling, k=10,000 (3.111)", _CIFAR, "kingma2016improved"),
    Reference("cifar_nvae", 2.91, "bits/dim", "NVAE, a deep hierarchical VAE", "Vahdat & Kautz 2020, Table 2",
              "importance sampling, k=1,000", _CIFAR, "vahdat2020nvae"),
)
LITERATURE: dict[str, Reference] = {r.key: r for r in REFERENCES}


def get(key: str) -> Reference:
    """The reference named `key`; KeyError naming the known keys otherwise."""
    if key not in LITERATURE:
        raise KeyError(f"no literature value {key!r}; known: {', '.join(LITERATURE)}")
    return LITERATURE[key]


def table(keys: list[str] | tuple[str, ...] | None = None) -> pd.DataFrame:
    """The references `keys` (default: all) as a table indexed by key, one column per field."""
    rows = [asdict(get(k)) for k in (keys or list(LITERATURE))]
    return pd.DataFrame(rows).set_index("key")


def compare(keys: list[str] | tuple[str, ...], ours: str, value: float, estimator: str,
            column: str = "value") -> pd.DataFrame:
    """The references `keys` and one row of ours below them: `column` (the number), estimator and source,
    indexed by model. A table for a chapter that puts its result among the literature's."""
    rows = {get(k).model: {column: get(k).value, "estimator": get(k).estimator, "source": get(k).source}
            for k in keys}
    rows[ours] = {column: value, "estimator": estimator, "source": "this book"}
    return pd.DataFrame.from_dict(rows, orient="index")
