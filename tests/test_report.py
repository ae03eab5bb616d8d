"""The build machinery (vaelib.book) and the recorded numbers (vaelib.results), on throwaway notebooks."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pandas as pd
import pytest
import yaml

from vaelib import book, executors, results
from vaelib.book import assemble, execute, notebook, parameters, profiles
from vaelib.book.__main__ import main as book_main
from vaelib.book.build import build

STEMS = ["01_theory", "02_elbo", "03_mnist", "04_cifar10", "05_latent_dimension", "06_freyface",
         "07_wake_sleep", "08_marginal_likelihood", "09_test_nll", "10_results"]


def write_notebook(path: Path, *cells: str, markdown: str = "# A chapter\n\nText with $x^2$.") -> Path:
    """A notebook: a markdown title cell, a `parameters` cell, then `cells` as code."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    params = nbformat.v4.new_code_cell('profile: str = "default"  # the profile\nx: int = 1  # a count')
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


# ----------------------------------------------------------------------------------------- parameters

CELL = """profile: str = "default"  # the profile
latent_dims: list[int] = [2, 5, 10, 20]  # Nz of the models
latent_dim: int = 3  # Nz
epochs: int = 25  # passes
methods: list[str] = ["aevb", "wake-sleep"]  # the methods
lr: "float or str or dict" = "auto"  # a step size, "auto", or by method
iw_examples: "int or None" = 1000  # first N (None: all)
"""


def test_an_undeclared_name_is_refused_naming_the_declared_ones_closest_first() -> None:
    declared = parameters.declared_parameters(CELL)
    with pytest.raises(parameters.ParameterError) as info:
        parameters.check_parameters(declared, {"profile": "quick", "latnt_dims": [2]}, where="05_x")
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("unknown parameter latnt_dims (did you mean latent_dims?): 05_x declares latent_dims, ")
    listed = message.split("declares ")[1].split(", ")
    assert sorted(listed) == sorted(declared), "every declared parameter is named"
    assert listed.index("latent_dims") < listed.index("profile"), "closest match first"


@pytest.mark.parametrize(("given", "expected"), [
    ({"epochs": "ten"}, "epochs='ten' is not allowed; it must be an integer >= 0"),
    ({"latent_dims": 5}, "latent_dims=5 is not allowed; it must be a non-empty list of integers >= 0"),
    ({"latent_dim": -3}, "latent_dim=-3 is not allowed; it must be an integer >= 1"),  # RunConfig's rule
    ({"latent_dims": [2, 0]}, "latent_dims: latent_dim=0 is not allowed; it must be an integer >= 1"),
    ({"methods": ["aevb", "wakesleep"]}, "method='wakesleep' is not allowed (did you mean 'wake-sleep'?)"),
    ({"iw_examples": "all"}, "iw_examples='all' is not allowed; it must be an integer >= 0 or None"),
    ({"lr": [0.1]}, "lr=[0.1] is not allowed; it must be a number or a string or a mapping"),
])
def test_a_value_of_the_wrong_kind_is_refused_naming_it_and_what_is_allowed(given: dict, expected: str) -> None:
    with pytest.raises(parameters.ParameterError, match=re.escape(expected)) as info:
        parameters.check_parameters(parameters.declared_parameters(CELL), given)
    assert "\n" not in str(info.value) and "declares `" in str(info.value)


def test_values_of_the_declared_kinds_pass() -> None:
    declared = parameters.declared_parameters(CELL)
    # lr = "auto" disobeys RunConfig's lr, so the chapter's own meaning of lr (a number, "auto" or a dict) holds
    parameters.check_parameters(declared, {"lr": {"aevb": 0.1}, "iw_examples": None, "latent_dims": [20],
                                           "methods": ["mcem"], "epochs": 0})


@pytest.mark.parametrize(("cell", "expected"), [
    ('profile = "default"', "assigns profile without a kind"),
    ('profile: str = "default"\nx: int = 1.5', "own default is refused: x=1.5"),
    ('profile: str = "default"\nx: "tuple" = 1', "the kind 'tuple' is not one of"),
    ('profile: str = "default"\nimport os', "may only declare parameters"),
])
def test_a_parameters_cell_declares_each_parameter_with_its_kind(cell: str, expected: str) -> None:
    with pytest.raises(parameters.ParameterError, match=re.escape(expected)):
        parameters.declared_parameters(cell)


def test_the_injected_cell_marker_is_what_papermill_writes() -> None:
    from papermill.translators import PythonTranslator

    assert PythonTranslator.codify({"x": 1}).startswith(parameters.INJECTED_MARKER + "\n")


def test_the_kernel_check_reads_both_cells_from_the_input_history() -> None:
    params_cell = 'profile: str = "default"  # p\nepochs: int = 25  # passes'
    ok = {"In": ["", params_cell, "# Parameters\nprofile = \"quick\"\nepochs = 2\n", "start_chapter(globals())"],
          "profile": "quick", "epochs": 2}
    parameters.check_injected(ok)
    parameters.check_injected({"In": ["", params_cell, "x = 1"], "profile": "default", "epochs": 25})  # no injection
    with pytest.raises(parameters.ParameterError, match="unknown parameter epoch .did you mean epochs"):
        parameters.check_injected({"In": ["", params_cell, "# Parameters\nepoch = 2\n"], "epoch": 2})
    with pytest.raises(parameters.ParameterError, match="epochs='2' is not allowed"):
        parameters.check_injected({"In": ["", params_cell, "# Parameters\nepochs = '2'\n"], "epochs": "2"})
    # A parameters cell run again in JupyterLab after the injected one does not hide the injected names.
    with pytest.raises(parameters.ParameterError, match="unknown parameter epoch"):
        parameters.check_injected({"In": ["", params_cell, "# Parameters\nepoch = 2\n", params_cell], "epoch": 2})


def test_the_build_refuses_an_undeclared_profile_key_before_any_work(sandbox: dict[str, Path], monkeypatch) -> None:
    import papermill

    def must_not_run(*args, **kwargs):
        raise AssertionError("papermill ran although a profile key is not declared")

    monkeypatch.setattr(papermill, "execute_notebook", must_not_run)
    write_profile(sandbox["profiles_dir"], "t", {"01_a": {"x": 2}, "02_b": {"y": 3}})
    write_notebook(sandbox["notebooks_dir"] / "01_a.ipynb", "1")
    write_notebook(sandbox["notebooks_dir"] / "02_b.ipynb", "1")
    with pytest.raises(profiles.ProfileError) as info:  # even when only 01_a is to be executed
        build("t", ["01_a"], profiles_dir=sandbox["profiles_dir"], notebooks_dir=sandbox["notebooks_dir"],
              build_dir=sandbox["build_dir"], runs_dir=sandbox["runs_dir"], render=False, log=lambda s: None)
    assert "profile t (" in str(info.value) and "unknown parameter y (did you mean" not in str(info.value)
    assert "unknown parameter y: 02_b declares profile, x" in str(info.value)
    assert not sandbox["build_dir"].exists()


def _papermill(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([str(Path(sys.executable).with_name("papermill")), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.slow
@pytest.mark.parametrize("route", ["-p", "-r", "-y", "-f", "declared"])
def test_papermill_refuses_an_undeclared_or_ill_kinded_parameter_in_the_second_cell(route: str, tmp_path: Path) -> None:
    # A real kernel, as a user runs papermill: the notebook's second cell stops it, before the third.
    write_notebook(tmp_path / "nb.ipynb", "from vaelib.book.notebook import start_chapter\nstart_chapter(globals())",
                   "open('work-done', 'w').close()")
    env = {**os.environ, **execute.kernel_environment(tmp_path / "runs", tmp_path / "results")}
    (tmp_path / "params.yaml").write_text("profile: quick\nxx: 1\n")
    args = {"-p": ["-p", "y", "5"], "-r": ["-r", "x", "ten"], "-y": ["-y", "x: [1, 2]"], "-f": ["-f", "params.yaml"],
            "declared": ["-p", "x", "2", "-y", "profile: quick"]}[route]
    proc = _papermill("nb.ipynb", "out.ipynb", *args, cwd=tmp_path, env=env)
    if route == "declared":
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert (tmp_path / "work-done").exists()
        return
    assert proc.returncode != 0
    expected = {"-p": "unknown parameter y: this notebook declares profile, x",
                "-r": "x='ten' is not allowed; it must be an integer >= 0",
                "-y": "x=[1, 2] is not allowed; it must be an integer >= 0",
                "-f": "unknown parameter xx (did you mean x?): this notebook declares x, profile"}[route]
    assert "ParameterError: " + expected in proc.stderr, proc.stderr[-2000:]
    assert not (tmp_path / "work-done").exists(), "the notebook went on past its second cell"

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


def test_the_build_says_which_cell_it_is_in_and_forwards_the_kernels_progress_bars(
        sandbox: dict[str, Path], capfd) -> None:
    write_profile(sandbox["profiles_dir"], "t", {"01_bar": {"x": 3}})
    write_notebook(sandbox["notebooks_dir"] / "01_bar.ipynb", "from vaelib.book.notebook import start_chapter\n"
                   "start_chapter(globals())",
                   "from tqdm.auto import tqdm\nfor _ in tqdm(range(x), desc='steps'):\n    pass",
                   "print('printed by the notebook')")
    logged: list[str] = []
    build("t", profiles_dir=sandbox["profiles_dir"], notebooks_dir=sandbox["notebooks_dir"],
          build_dir=sandbox["build_dir"], runs_dir=sandbox["runs_dir"], render=False, progress=False,
          log=logged.append)
    # Code cells of the executed copy: parameters, papermill's injected cell, then the three above.
    assert [line for line in logged if ": cell " in line and "steps" not in line] == [
        "[1/1] 01_bar: cell 1/5: profile: str = \"default\"  # the profile",
        "[1/1] 01_bar: cell 2/5: # Parameters",
        "[1/1] 01_bar: cell 3/5: from vaelib.book.notebook import start_chapter",
        "[1/1] 01_bar: cell 4/5: from tqdm.auto import tqdm",
        "[1/1] 01_bar: cell 5/5: print('printed by the notebook')"]
    bars = [line for line in logged if "steps" in line]
    assert len(bars) == 1 and bars[0].startswith("[1/1] 01_bar: cell 4/5: steps: 100% 3/3 ["), bars
    assert "[1/1] 01_bar: | printed by the notebook" in logged
    assert not any("\r" in line for line in logged), "a plain log gets whole lines, no carriage returns"
    captured = capfd.readouterr()
    assert "without encryption" not in captured.out + captured.err, "the kernel ran over TCP"
    assert (sandbox["build_dir"] / "notebooks" / "01_bar.kernel.log").is_file()


def _bar_states(left: str, n: int, total: int, right: str, style: str = "") -> dict[str, dict]:
    return {"box": {"_model_name": "HBoxModel", "children": ["IPY_MODEL_l", "IPY_MODEL_p", "IPY_MODEL_r"]},
            "l": {"_model_name": "HTMLModel", "value": left},
            "p": {"_model_name": "FloatProgressModel", "value": n, "max": total, "bar_style": style},
            "r": {"_model_name": "HTMLModel", "value": right},
            "other": {"_model_name": "FloatSliderModel", "value": 0.5}}


def test_a_tqdm_widget_reads_as_the_line_tqdm_prints_in_a_terminal() -> None:
    from vaelib.book.progress import bar_text

    states = _bar_states("fit z=2:  50%", 5, 10, "5/10 [00:01&lt;00:01,  4.2step/s, epoch=1]")
    assert bar_text("r", states) == ("box", "fit z=2:  50% 5/10 [00:01<00:01,  4.2step/s, epoch=1]", False)
    assert bar_text("p", {**states, **_bar_states("a", 10, 10, "b", style="success")})[2] is True
    assert bar_text("other", states) is None


def test_plain_progress_lines_are_few_a_bars_last_state_once() -> None:
    from vaelib.book.progress import MAX_STREAM_LINES, Progress

    lines: list[str] = []
    progress = Progress("nb", 3, lines.append, interval_s=3600)
    try:
        progress.cell(2, "\nrun = fit()\n")
        for n in range(5):
            progress.bar("b", f"fit: {n * 25}%", finished=False)  # within interval_s of the bar's first state
        progress.bar("b", "fit: 100%", finished=True)
        progress.bar("b", "fit: 100%", finished=True)  # widgets update again after close: said once
        progress.output("a\rb\r50%\n" + "x\n" * (MAX_STREAM_LINES + 5))
    finally:
        progress.close()
    assert lines[:3] == ["nb: cell 2/3: run = fit()", "nb: cell 2/3: fit: 100%", "nb: | 50%"]
    assert len(lines) == 3 + MAX_STREAM_LINES and "rest of this cell's output" in lines[-1]


def test_in_a_terminal_one_status_line_is_redrawn_and_only_finished_bars_are_kept() -> None:
    import io

    from vaelib.book.progress import Progress

    lines: list[str] = []
    terminal = io.StringIO()
    progress = Progress("nb", 2, lines.append, tty=True, stream=terminal, interval_s=0)
    try:
        progress.cell(1, "run = fit()")
        progress.bar("b", "fit:  50% 5/10", finished=False)
        progress.bar("b", "fit: 100% 10/10", finished=True)
    finally:
        progress.close()
    assert lines == ["nb: cell 1/2: fit: 100% 10/10"], "a terminal keeps only what is done"
    drawn = terminal.getvalue()
    assert "\r\033[Knb: cell 1/2 (0:00) fit:  50% 5/10" in drawn and "\n" not in drawn
    assert drawn.endswith("\r\033[K"), "the status line is cleared at the end"


def test_fit_or_load_logs_each_run_as_trained_or_loaded(tmp_path: Path, monkeypatch, tiny_config, data_dir) -> None:
    from vaelib.train import RUN_LOG_ENV, fit, fit_or_load

    log = tmp_path / "runs.jsonl"
    monkeypatch.setenv(RUN_LOG_ENV, str(log))
    config = tiny_config.replace(epochs=1, train_size=100, test_size=50)
    first = fit_or_load(config, tmp_path / "runs", data_dir=data_dir, progress=False)
    fit_or_load(config, tmp_path / "runs", data_dir=data_dir, progress=False)
    fit(config.replace(epochs=3), first.path, resume=True, data_dir=data_dir, progress=False)  # 2 more epochs
    entries = [json.loads(line) for line in log.read_text().splitlines()]
    assert entries == [{"run": first.path.name, "status": "trained", "epochs_trained": 1},
                       {"run": first.path.name, "status": "loaded", "epochs_trained": 0},
                       {"run": first.path.name, "status": "trained", "epochs_trained": 2}]


def test_the_statistics_page_counts_each_chapters_runs(sandbox: dict[str, Path]) -> None:
    from vaelib.book.statistics import run_log_path, statistics_page

    prof = _fake_executed(sandbox, ["01_a", "03_c"])
    build_dir = sandbox["build_dir"]
    (build_dir / "timings.json").write_text(json.dumps({
        "01_a": {"seconds": 12.5, "status": "ok", "finished": "2026-12-01T22:49:36"},
        "03_c": {"seconds": 150.0, "status": "ok", "finished": "2026-12-01T22:52:06"}}))
    log = run_log_path(build_dir, "01_a")
    log.parent.mkdir(parents=True)
    log.write_text('{"run": "r1", "status": "loaded", "epochs_trained": 0}\n'
                   '{"run": "r2", "status": "trained", "epochs_trained": 3}\n'
                   '{"run": "r3", "status": "trained", "epochs_trained": 2}\n{"run": "cut sh')
    page = statistics_page(prof, ["01_a", "03_c"], build_dir)
    assert "profile `t`" in page
    assert "| [01_a](notebooks/01_a.ipynb) | 12.5 s | 1 | 2 | 5 | 2026-12-01 22:49 |" in page
    assert "| [03_c](notebooks/03_c.ipynb) | 2.5 min | - | - | - | 2026-12-01 22:52 |" in page  # no log
    assert "| **total** | 2.7 min | 1 | 2 | 5 | |" in page
    source = assemble.assemble_book(prof, ["01_a", "03_c"], build_dir)
    assert (source / "statistics.md").read_text() == page


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
    assert [c["file"] for c in toc["parts"][1]["chapters"]] == ["rerun", "statistics", "bibliography"]
    intro = (source / "intro.md").read_text()
    assert "Built with profile t on" in intro and "The t banner." in intro
    rerun = (source / "rerun.md").read_text()
    assert assemble.PAPER_COST not in rerun and ("core-hours for" in rerun or "no measured runs" in rerun)
    config = yaml.safe_load((source / "_config.yml").read_text())
    assert config["html"]["announcement"] == "The t banner."
    assert config["execute"]["execute_notebooks"] == "off"
    assert (source / "references.bib").is_file() and not (source / "profiles").exists()
    assert (source / "_static" / "mathjax" / "tex-chtml-full.js").is_file()
    info = json.loads((source / assemble.BUILD_INFO).read_text())
    assert info["pages"] == ["intro", "notebooks/01_a", "notebooks/03_c", "rerun", "statistics", "bibliography"]


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


def test_jobs_execute_notebooks_side_by_side_and_the_results_page_last(sandbox: dict[str, Path]) -> None:
    # Each notebook writes when it started and ended, and what its kernel was told: with jobs=2 the two
    # chapters overlap in time, each kernel gets one thread and the executor, and the results page waits.
    stamp = ('import json, os, time\nstart = time.time()\ntime.sleep(3)\n'
             'json.dump({"start": start, "end": time.time(), "threads": os.environ.get("OMP_NUM_THREADS"),\n'
             '           "executor": os.environ.get("VAELIB_EXECUTOR")},\n'
             '          open(os.environ["VAELIB_RUNS"] + f"/{NAME}.json", "w"))')
    names = ["01_a", "02_b", "10_results"]
    for name in names:
        write_notebook(sandbox["notebooks_dir"] / f"{name}.ipynb", f"NAME = {name!r}", stamp)
    write_profile(sandbox["profiles_dir"], "t", {name: {} for name in names})
    build("t", profiles_dir=sandbox["profiles_dir"], notebooks_dir=sandbox["notebooks_dir"],
          build_dir=sandbox["build_dir"], runs_dir=sandbox["runs_dir"], render=False, jobs=2,
          executor="local:2", log=lambda line: None)
    seen = {n: json.loads((sandbox["runs_dir"] / f"{n}.json").read_text()) for n in names}
    a, b, last = seen["01_a"], seen["02_b"], seen["10_results"]
    assert a["start"] < b["end"] and b["start"] < a["end"], "the two chapters did not run side by side"
    assert last["start"] >= max(a["end"], b["end"]), "the results page ran before the chapters it reads"
    assert {s["threads"] for s in seen.values()} == {str(executors.threads_per_worker(2))}
    assert {s["executor"] for s in seen.values()} == {"local:2"}
    timings = json.loads((sandbox["build_dir"] / "timings.json").read_text())
    assert all(timings[n]["status"] == "ok" for n in names)


def test_a_bad_jobs_or_executor_is_refused_before_any_work(sandbox: dict[str, Path]) -> None:
    write_notebook(sandbox["notebooks_dir"] / "01_a.ipynb", "raise SystemExit('executed')")
    write_profile(sandbox["profiles_dir"], "t", {"01_a": {}})
    common = dict(profiles_dir=sandbox["profiles_dir"], notebooks_dir=sandbox["notebooks_dir"],
                  build_dir=sandbox["build_dir"], runs_dir=sandbox["runs_dir"], render=False)
    with pytest.raises(ValueError, match="jobs=0"):
        build("t", jobs=0, **common)
    with pytest.raises(ValueError, match="lcoal"):
        build("t", executor="lcoal:2", **common)
    assert not (sandbox["build_dir"] / "notebooks").exists()
    assert book_main(["build", "--profile", "quick", "--executor", "slurm:3"]) == 2


def test_the_paper_cost_sentence_sums_the_runs() -> None:
    import pandas as pd

    from vaelib.experiments.measured import paper_cost_sentence

    table = pd.DataFrame({"core_hours": [1.25, 30.0, 2.0], "measurement": ["m/figure2", "m/figure2", "m/figure3"]})
    assert paper_cost_sentence(table, cores_per_node=16) == (
        "33.2 core-hours for 3 runs (figure2: 2 runs, 31.2 h; figure3: 1 runs, 2.0 h), or 2.1 node-hours of "
        "16-core nodes; the longest run 30.0 h.")
    assert "no measured runs" in paper_cost_sentence(pd.DataFrame())


def test_chapter_title_reads_the_notebooks_heading(tmp_path: Path) -> None:
    from vaelib.book.notebook import chapter_title

    nb = {"cells": [{"cell_type": "code", "source": "# not a title", "metadata": {}},
                    {"cell_type": "markdown", "source": "Intro\n# MNIST, done properly\n", "metadata": {}}]}
    (tmp_path / "03_mnist.ipynb").write_text(json.dumps(nb))
    assert chapter_title("03_mnist", tmp_path) == "Chapter 3: MNIST, done properly"
    assert chapter_title("04_missing", tmp_path) == "04_missing"
