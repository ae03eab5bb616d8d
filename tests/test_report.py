"""The build machinery (vaelib.book) and the recorded numbers (vaelib.results), on throwaway notebooks."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import nbformat
import pandas as pd
import pytest
import yaml

from vaelib import book, results
from vaelib.book import assemble, execute, notebook, profiles
from vaelib.book.__main__ import main as book_main
from vaelib.book.build import build

STEMS = ["01_theory", "02_elbo", "03_mnist", "04_cifar10", "05_latent_dimension", "06_freyface",
         "07_wake_sleep", "08_marginal_likelihood", "09_test_nll", "10_results"]


def write_notebook(path: Path, *cells: str, markdown: str = "# A chapter\n\nText with $x^2$.") -> Path:
    """A notebook: a markdown title cell, a `parameters` cell, then `cells` as code."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    params = nbformat.v4.new_code_cell('profile = "default"\nx = 1')
    params.metadata["tags"] = ["parameters"]
    nb.cells = [nbformat.v4.new_markdown_cell(markdown), params, *(nbformat.v4.new_code_cell(c) for c in cells)]
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)
    return path


def write_profile(directory: Path, name: str, notebooks: dict) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"name": name, "description": f"{name} test profile",
                                    "banner": f"The {name} banner.", "notebooks": notebooks}))
    return path


@pytest.fixture
def sandbox(tmp_path: Path) -> dict[str, Path]:
    (tmp_path / "runs").mkdir()
    return {"notebooks_dir": tmp_path / "notebooks", "build_dir": tmp_path / "build",
            "profiles_dir": tmp_path / "profiles", "runs_dir": tmp_path / "runs"}


# ------------------------------------------------------------------------------------------- profiles


@pytest.mark.parametrize("name", ["quick", "default", "paper"])
def test_repository_profiles_list_the_chapters_in_order(name: str) -> None:
    prof = profiles.load_profile(name)
    assert prof.name == name and prof.banner and prof.description
    assert list(prof.notebooks) == STEMS
    assert prof.parameters("03_mnist")["profile"] == name


def test_quick_banner_warns_that_numbers_are_not_comparable() -> None:
    banner = profiles.load_profile("quick").banner.lower()
    assert "smoke-test" in banner and "not comparable" in banner


def test_unknown_profile_is_refused_before_any_work(sandbox: dict[str, Path], monkeypatch) -> None:
    import papermill

    def must_not_run(*args, **kwargs):
        raise AssertionError("papermill ran for an unknown profile")

    monkeypatch.setattr(papermill, "execute_notebook", must_not_run)
    write_notebook(sandbox["notebooks_dir"] / "03_mnist.ipynb", "1")
    with pytest.raises(profiles.ProfileError) as info:
        build("quik", notebooks_dir=sandbox["notebooks_dir"], build_dir=sandbox["build_dir"])
    message = str(info.value)
    assert "quik" in message
    for name in ("default", "paper", "quick"):
        assert name in message
    assert not sandbox["build_dir"].exists()


def test_cli_reports_a_bad_profile_with_status_2(capsys) -> None:
    assert book_main(["build", "--profile", "nope"]) == 2
    err = capsys.readouterr().err
    assert "unknown profile 'nope'" in err and "quick" in err


def test_only_must_name_notebooks_of_the_profile(sandbox: dict[str, Path]) -> None:
    write_profile(sandbox["profiles_dir"], "t", {"01_a": {}, "02_b": {}})
    with pytest.raises(profiles.ProfileError, match="does not list 03_c; it lists: 01_a, 02_b"):
        build("t", ["03_c"], profiles_dir=sandbox["profiles_dir"],
                     notebooks_dir=sandbox["notebooks_dir"], build_dir=sandbox["build_dir"])


def test_a_profile_may_not_set_profile_itself(sandbox: dict[str, Path]) -> None:
    write_profile(sandbox["profiles_dir"], "t", {"01_a": {"profile": "other"}})
    with pytest.raises(profiles.ProfileError, match="injects itself"):
        profiles.load_profile("t", sandbox["profiles_dir"])


# ------------------------------------------------------------------------------------------ execution


def test_build_executes_with_parameters_environment_and_cwd(sandbox: dict[str, Path]) -> None:
    write_profile(sandbox["profiles_dir"], "t", {"01_ok": {"x": 5}, "02_missing": {}})
    source = write_notebook(
        sandbox["notebooks_dir"] / "01_ok.ipynb",
        "import json, os\nfrom vaelib.book.notebook import profile_banner\nfrom vaelib.results import record\n"
        "profile_banner(profile)",
        'record("01_ok", "x", x, unit="things", estimator="exact")\n'
        'json.dump({"profile": profile, "x": x, "cwd": os.getcwd(), "runs": os.environ["VAELIB_RUNS"],\n'
        '           "results": os.environ["VAELIB_RESULTS"]}, open(os.environ["VAELIB_RUNS"] + "/seen.json", "w"))',
    )
    before = source.read_bytes()
    environ_before = {k: os.environ.get(k) for k in ("VAELIB_RUNS", "VAELIB_RESULTS")}
    logged: list[str] = []
    result = build("t", profiles_dir=sandbox["profiles_dir"], notebooks_dir=sandbox["notebooks_dir"],
                          build_dir=sandbox["build_dir"], runs_dir=sandbox["runs_dir"], render=False,
                          log=logged.append)
    results_dir = sandbox["build_dir"] / "results"
    seen = json.loads((sandbox["runs_dir"] / "seen.json").read_text())
    assert seen == {"profile": "t", "x": 5, "cwd": str(sandbox["notebooks_dir"].resolve()),
                    "runs": str(sandbox["runs_dir"].resolve()), "results": str(results_dir.resolve())}
    assert source.read_bytes() == before, "the source notebook was modified"
    executed = nbformat.read(sandbox["build_dir"] / "notebooks" / "01_ok.ipynb", as_version=4)
    banner = [o for c in executed.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if "text/html" in o.get("data", {})]
    # profile_banner reads the repository's profiles, where "t" is not: it says so instead of failing.
    assert banner and "&#x27;t&#x27; is not one of the book&#x27;s profiles" in banner[0]["data"]["text/html"]
    assert result.skipped == ["02_missing"]
    assert any("02_missing" in line and "skipping" in line for line in logged)
    timings = json.loads((sandbox["build_dir"] / "timings.json").read_text())
    assert timings["01_ok"]["status"] == "ok" and timings["01_ok"]["seconds"] > 0
    assert "01_ok" in logged[-1] and "total" in logged[-1]  # the closing table
    table = results.load_all(results_dir)
    assert table[["chapter", "key", "value", "unit"]].values.tolist() == [["01_ok", "x", 5.0, "things"]]
    assert {k: os.environ.get(k) for k in environ_before} == environ_before, "the build leaked its environment"


def test_a_failing_notebook_stops_the_build_naming_notebook_and_cell(sandbox: dict[str, Path]) -> None:
    write_profile(sandbox["profiles_dir"], "t", {"01_boom": {}, "02_after": {}})
    write_notebook(sandbox["notebooks_dir"] / "01_boom.ipynb", "y = 2", "raise ValueError('kaboom')")
    write_notebook(sandbox["notebooks_dir"] / "02_after.ipynb", "1")
    with pytest.raises(execute.NotebookFailed) as info:
        build("t", profiles_dir=sandbox["profiles_dir"], notebooks_dir=sandbox["notebooks_dir"],
                     build_dir=sandbox["build_dir"], runs_dir=sandbox["runs_dir"], render=False, log=lambda s: None)
    err = info.value
    # Cells of the executed copy: title, parameters, injected parameters, `y = 2`, the raise.
    assert err.stem == "01_boom" and err.cell_index == 4 and err.ename == "ValueError"
    assert "01_boom" in str(err) and "cell 4" in str(err) and "ValueError: kaboom" in str(err)
    assert not (sandbox["build_dir"] / "notebooks" / "02_after.ipynb").exists(), "the build went on"
    timings = json.loads((sandbox["build_dir"] / "timings.json").read_text())
    assert timings["01_boom"]["status"] == "failed"


# ----------------------------------------------------------------------------------------------- book


def _fake_executed(sandbox: dict[str, Path], stems: list[str]) -> profiles.Profile:
    write_profile(sandbox["profiles_dir"], "t", {s: {} for s in ["01_a", "02_b", "03_c"]})
    for stem in stems:
        write_notebook(sandbox["notebooks_dir"] / f"{stem}.ipynb", "1", markdown=f"# Chapter {stem}")
        write_notebook(sandbox["build_dir"] / "notebooks" / f"{stem}.ipynb", "1", markdown=f"# Chapter {stem}")
    return profiles.load_profile("t", sandbox["profiles_dir"])


def test_assembled_book_has_toc_in_profile_order_and_names_the_profile(sandbox: dict[str, Path]) -> None:
    prof = _fake_executed(sandbox, ["03_c", "01_a"])
    source = assemble.assemble_book(prof, ["01_a", "03_c"], sandbox["build_dir"])
    toc = yaml.safe_load((source / "_toc.yml").read_text())
    assert toc["root"] == "intro"
    assert [c["file"] for c in toc["parts"][0]["chapters"]] == ["notebooks/01_a", "notebooks/03_c"]
    assert [c["file"] for c in toc["parts"][1]["chapters"]] == ["rerun", "bibliography"]
    intro = (source / "intro.md").read_text()
    assert "Built with profile t on" in intro and "The t banner." in intro
    config = yaml.safe_load((source / "_config.yml").read_text())
    assert config["html"]["announcement"] == "The t banner."
    assert config["execute"]["execute_notebooks"] == "off"
    assert (source / "references.bib").is_file() and not (source / "profiles").exists()
    assert (source / "_static" / "mathjax" / "tex-chtml-full.js").is_file()
    info = json.loads((source / assemble.BUILD_INFO).read_text())
    assert info["pages"] == ["intro", "notebooks/01_a", "notebooks/03_c", "rerun", "bibliography"]


def test_references_cover_the_cited_literature() -> None:
    bib = (book.BOOK_DIR / "references.bib").read_text()
    for key in ("1312.6114", "1509.00519", "Rybkin", "Hinton", "Higgins", "Inverse Autoregressive", "NVAE",
                "PixelCNN++", "Duchi", "Adam", "{H}amiltonian Dynamics", "Doersch", "LeCun", "Krizhevsky", "Blei",
                "Rezende"):
        assert key in bib, key


@pytest.mark.book
def test_render_a_book_offline(sandbox: dict[str, Path], tmp_path: Path) -> None:
    """A real jupyter-book build of one executed notebook with math and a figure."""
    write_profile(sandbox["profiles_dir"], "t", {"02_elbo": {}})
    write_notebook(
        sandbox["notebooks_dir"] / "02_elbo.ipynb",
        "import matplotlib.pyplot as plt\nplt.plot([0, 1], [1, 0])\nplt.show()",
        markdown="# The ELBO\n\n$$\n\\mathcal{L} = \\mathbb{E}[\\log p] - D_{\\mathrm{KL}}\n$$",
    )
    html_dir = tmp_path / "html"
    result = build("t", profiles_dir=sandbox["profiles_dir"], notebooks_dir=sandbox["notebooks_dir"],
                          build_dir=sandbox["build_dir"], runs_dir=sandbox["runs_dir"], html_dir=html_dir,
                          log=lambda s: None)
    page = (html_dir / "notebooks" / "02_elbo.html").read_text()
    assert "mathcal" in page and 'class="math' in page
    assert "_static/mathjax/tex-chtml-full.js" in page
    assert not re.findall(r'<(?:script|link|img)[^>]+(?:src|href)="https?://', page), "loads from the network"
    assert page.count("mathjax/tex-chtml-full.js") == 1, "MathJax is loaded twice"
    assert list((html_dir / "_images").glob("*.png")), "the figure was not rendered"
    assert (html_dir / "_static" / "mathjax" / "output" / "chtml" / "fonts" / "woff-v2").is_dir()
    assert assemble.read_build_info(html_dir)["profile"] == "t"
    assert result.html_dir == html_dir and "(render book)" in result.seconds


# -------------------------------------------------------------------------------------------- results


def test_profile_banner_displays_the_profiles_banner(monkeypatch) -> None:
    shown: list[dict] = []
    monkeypatch.setattr("IPython.display.display", lambda obj, raw=False: shown.append(obj))
    notebook.profile_banner("quick")
    (bundle,) = shown
    assert "admonition" in bundle["text/html"] and "Profile: quick" in bundle["text/html"]
    assert bundle["text/plain"] == f"Profile: quick. {profiles.load_profile('quick').banner}"


def test_record_and_load_all_round_trip(tmp_path: Path) -> None:
    results.record("03_mnist", "test_elbo", -99.5, unit="nats", estimator="ELBO, L=1",
                   anchor="kingma2013auto Fig. 2", anchor_value=-100.0, directory=tmp_path)
    results.record("03_mnist", "test_ll", -95.0, unit="nats", estimator="IS, k=5000", directory=tmp_path)
    results.record("03_mnist", "test_elbo", -98.0, unit="nats", estimator="ELBO, L=1", directory=tmp_path)
    results.record("05_latent_dimension", "bpd", 1.5, unit="bits/dim", estimator="ELBO", note="subset",
                   directory=tmp_path)
    table = results.load_all(tmp_path)
    assert list(table.columns) == results.COLUMNS
    assert table[["chapter", "key", "value"]].values.tolist() == [
        ["03_mnist", "test_elbo", -98.0], ["03_mnist", "test_ll", -95.0], ["05_latent_dimension", "bpd", 1.5]]
    replaced = table.iloc[0]  # recorded again without an anchor: the old anchor is gone
    assert pd.isna(replaced.anchor) and pd.isna(replaced.anchor_value)
    assert table.iloc[2].note == "subset" and table.iloc[2].unit == "bits/dim"


def test_results_directory_comes_from_the_environment(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("VAELIB_RESULTS", str(tmp_path / "res"))
    results.record("01_theory", "k", 1.0, unit="nats", estimator="exact")
    assert (tmp_path / "res" / "01_theory.json").is_file()
    monkeypatch.delenv("VAELIB_RESULTS")
    monkeypatch.setenv("VAELIB_RUNS", str(tmp_path / "runs"))
    results.record("01_theory", "k", 2.0, unit="nats", estimator="exact")
    assert results.load_all(tmp_path / "runs" / "results").value.tolist() == [2.0]
    assert results.load_all(tmp_path / "nowhere").empty


def test_record_rejects_what_it_cannot_store(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="chapter"):
        results.record("../evil", "k", 1.0, unit="nats", estimator="x", directory=tmp_path)
    with pytest.raises(ValueError, match="unit"):
        results.record("03_mnist", "k", 1.0, unit="", estimator="x", directory=tmp_path)
    with pytest.raises(ValueError, match="number"):
        results.record("03_mnist", "k", "lots", unit="nats", estimator="x", directory=tmp_path)
    with pytest.raises(ValueError, match="infinite"):
        results.record("03_mnist", "k", float("inf"), unit="nats", estimator="x", directory=tmp_path)


def test_record_writes_atomically(tmp_path: Path, monkeypatch) -> None:
    results.record("03_mnist", "a", 1.0, unit="nats", estimator="x", directory=tmp_path)
    before = (tmp_path / "03_mnist.json").read_text()

    def crash(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        results.record("03_mnist", "b", 2.0, unit="nats", estimator="x", directory=tmp_path)
    assert (tmp_path / "03_mnist.json").read_text() == before
    assert [p.name for p in tmp_path.iterdir()] == ["03_mnist.json"], "a temporary file was left behind"
