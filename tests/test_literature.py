"""The one table of literature values: every entry cites a real bibliography key, names how its source
estimated it in terms that match the unit, and no chapter retypes a value in its prose."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from vaelib import literature

ROOT = Path(__file__).resolve().parents[1]
BIB_KEYS = set(re.findall(r"@\w+\{([^,]+),", (ROOT / "book" / "references.bib").read_text()))
# How a source may have computed its number: an importance-sampled log p(x) is an estimate, not a bound.
ESTIMATOR_KINDS = ("importance sampling", "exact")


@pytest.mark.parametrize("ref", literature.REFERENCES, ids=lambda r: r.key)
def test_every_reference_cites_the_bibliography_and_names_its_estimator(ref: literature.Reference) -> None:
    assert ref.bibkey is None or ref.bibkey in BIB_KEYS
    assert ref.estimator.startswith(ESTIMATOR_KINDS), ref.estimator
    assert "upper bound" not in ref.estimator or not ref.estimator.startswith("importance sampling")
    assert ref.unit in ("nats", "bits/dim")


def test_importance_sampled_cifar_anchors_are_not_labelled_bounds() -> None:
    for key in ("cifar_iaf_vae", "cifar_nvae"):
        assert literature.get(key).estimator.startswith("importance sampling")


def test_unknown_key_names_the_known_ones() -> None:
    with pytest.raises(KeyError, match="burda2015_vae"):
        literature.get("no_such_paper")


def test_log_px_refuses_bits_per_dim() -> None:
    ref = literature.get("burda2015_vae")
    assert ref.log_px == -ref.value < 0
    with pytest.raises(ValueError, match="bits/dim"):
        _ = literature.get("cifar_nvae").log_px


def test_compare_puts_ours_below_the_references() -> None:
    frame = literature.compare(["cifar_uniform", "cifar_nvae"], "ours", 5.0, "-ELBO")
    assert list(frame.index) == [literature.get("cifar_uniform").model, literature.get("cifar_nvae").model, "ours"]
    assert frame.loc["ours", "source"] == "this book"


CHAPTERS = ("01_theory", "02_elbo", "03_mnist", "04_cifar10", "05_latent_dimension", "06_freyface",
            "09_test_nll")


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_no_chapter_retypes_a_literature_value_in_its_prose(chapter: str) -> None:
    """A value typed into markdown drifts from vaelib/literature.py; prose reads it from there instead."""
    cells = json.loads((ROOT / "notebooks" / f"{chapter}.ipynb").read_text())["cells"]
    prose = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "markdown")
    typed = [f"{r.value:.2f}" for r in literature.REFERENCES if r.value != round(r.value)
             and re.search(rf"(?<![\d.]){re.escape(f'{r.value:.2f}')}(?!\d)", prose)]
    assert not typed, f"{chapter} types {typed} in markdown: read them from vaelib.literature"
