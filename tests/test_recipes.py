"""The recipes of README.md and book/rerun.md, run as written: every command of their ```bash blocks that
reruns a notebook or uses a command line is in RECIPES, with the test that runs it, so a recipe that is
added, changed or stops working fails here.

Sizes may be made quick, never the command's shape: `quick()` lowers epochs and sample counts, a
papermill run also gets the quick profile's subset sizes for the keys the recipe leaves alone (`-f`), and a
whole-book build is run with `--profile quick`. Notebook runs share the run cache with the quick build
(the `book` tests run before this module), so they load runs rather than train them; the CLI recipes run
on the committed tiny MNIST (tests/fixtures) in a temporary folder.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest
import yaml

from vaelib import paths
from vaelib.book import NOTEBOOKS_DIR
from vaelib.book.parameters import notebook_parameters
from vaelib.book.profiles import load_profile
from vaelib.train import RUN_LOG_ENV

ROOT = NOTEBOOKS_DIR.parent
DOCS = {"README.md": ROOT / "README.md", "book/rerun.md": ROOT / "book" / "rerun.md"}
FIXTURES = Path(__file__).parent / "fixtures"

CLI_TRAIN = "python -m vaelib train --dataset binarized-mnist --latent-dim 20 --epochs 10 --out runs/mnist-z20"
CLI_EVALUATE = "python -m vaelib evaluate runs/mnist-z20 --iw-samples 5000"
CLI_SAMPLE = "python -m vaelib sample runs/mnist-z20 --n 100 --out samples.png"
CLI_RESUME = "python -m vaelib train ... --epochs 20 --out runs/mnist-z20 --resume"
PAPERMILL_FROM_NOTEBOOKS = ('cd notebooks && papermill 05_latent_dimension.ipynb /tmp/out.ipynb '
                            '-y "latent_dims: [5]" -p epochs 25')
PAPERMILL_FROM_ROOT = ('papermill notebooks/05_latent_dimension.ipynb /tmp/out.ipynb --cwd notebooks '
                       '-y "latent_dims: [5]" -p epochs 25')
HELP_NOTEBOOK = "papermill --help-notebook notebooks/05_latent_dimension.ipynb"
BUILD_ONE = "python -m vaelib.report build --profile default --only 03_mnist"

# Every command of the docs' bash blocks -> the test that runs it (a make target: what it expands to).
RECIPES = {
    "make book": "test_make_targets_run_the_documented_build_commands",
    "make test": "(CI runs it: .ci/run)",
    "make book PROFILE=quick": "test_make_targets_run_the_documented_build_commands",
    "make pdf": "test_make_targets_run_the_documented_build_commands",
    "python -m vaelib.report build --profile default --jobs 2": "test_make_targets_run_the_documented_build_commands",
    "python -m vaelib.report build --profile paper --executor slurm":
        "(needs a Slurm cluster; its code path runs in test_executors.py through submitit-local)",
    BUILD_ONE: "test_one_chapter_is_rebuilt_as_the_recipe_says",
    CLI_TRAIN: "test_the_command_line_recipe_trains_evaluates_samples_and_resumes",
    CLI_EVALUATE: "test_the_command_line_recipe_trains_evaluates_samples_and_resumes",
    CLI_SAMPLE: "test_the_command_line_recipe_trains_evaluates_samples_and_resumes",
    CLI_RESUME: "test_the_command_line_recipe_trains_evaluates_samples_and_resumes",
    PAPERMILL_FROM_NOTEBOOKS: "test_a_chapter_reruns_with_papermill_from_either_folder_on_one_cache",
    PAPERMILL_FROM_ROOT: "test_a_chapter_reruns_with_papermill_from_either_folder_on_one_cache",
    HELP_NOTEBOOK: "test_help_notebook_lists_every_parameter_with_its_comment",
}
# Commands written inline in the prose, each run by the test named.
INLINE = {
    'make book REPORT_FLAGS="--only 03_mnist"': "test_make_targets_run_the_documented_build_commands",
    "make book JOBS=1": "test_make_targets_run_the_documented_build_commands",
    "python -m vaelib train --help": "test_train_help_lists_every_option",
    "python -m vaelib.experiments.measured cost": "test_the_paper_cost_on_the_rerun_page_is_what_the_command_prints",
    "papermill --help-notebook 05_latent_dimension.ipynb": "test_help_notebook_lists_every_parameter_with_its_comment",
}


def _bash_commands(text: str) -> list[str]:
    """The commands of the ```bash blocks: one per line, comments dropped, re-quoted as shlex would."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        for line in block.splitlines():
            words = shlex.split(line, comments=True)
            if words and words[0] != "export":
                commands.append(shlex.join(words))
    return commands


def _normal(command: str) -> str:
    return shlex.join(shlex.split(command))


def test_every_recipe_of_the_docs_is_tested() -> None:
    listed = {_normal(c) for c in RECIPES}
    for name, path in DOCS.items():
        untested = [c for c in _bash_commands(path.read_text(encoding="utf-8")) if c not in listed]
        assert not untested, f"{name} has recipes no test runs: {untested}; add them to RECIPES in {__file__}"
    text = "\n".join(p.read_text(encoding="utf-8") for p in DOCS.values())
    documented = {_normal(c) for p in DOCS.values() for c in _bash_commands(p.read_text(encoding="utf-8"))}
    stale = [c for c in RECIPES if _normal(c) not in documented] + [c for c in INLINE if c not in text]
    assert not stale, f"tested recipes the docs no longer show: {stale}; update RECIPES/INLINE"


def quick(command: str, **replace: str) -> list[str]:
    """The recipe's words, with python and papermill from this environment and the sizes made quick
    (`replace`: option -> the word after it, e.g. epochs="2" turns `--epochs 25` and `-p epochs 25` into 2)."""
    words = shlex.split(command)
    out: list[str] = []
    for i, word in enumerate(words):
        before = words[i - 1].lstrip("-").replace("-", "_") if i else ""
        if word == "python":
            word = sys.executable
        elif word == "papermill" and i == 0:
            word = str(Path(sys.executable).with_name("papermill"))
        elif before in replace:
            word = replace[before]
        out.append(word)
    return out


def _environment(**extra: str) -> dict[str, str]:
    """This checkout's vaelib first on the path (also in kernels), so the test runs the code under test."""
    env = {k: v for k, v in os.environ.items() if k not in ("VAELIB_RESULTS", RUN_LOG_ENV)}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])
    env.update(extra)
    return env


def _run(words: list[str], cwd: Path, env: dict[str, str], timeout: int = 600) -> subprocess.CompletedProcess:
    proc = subprocess.run(words, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{shlex.join(words)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}"
    return proc


def test_the_command_line_recipe_trains_evaluates_samples_and_resumes(tmp_path: Path) -> None:
    env = _environment(VAELIB_DATA=str(FIXTURES))  # the tiny MNIST: 1,000 training and 500 test images
    _run(quick(CLI_TRAIN, epochs="2"), tmp_path, env)
    history = (tmp_path / "runs" / "mnist-z20" / "history.csv").read_text().splitlines()
    assert len(history) == 1 + 2
    result = json.loads(_run(quick(CLI_EVALUATE, iw_samples="50"), tmp_path, env).stdout.strip().splitlines()[-1])
    assert result["log_likelihood"] >= result["elbo"]  # an importance-sampled bound is tighter than the ELBO
    _run(quick(CLI_SAMPLE), tmp_path, env)
    assert (tmp_path / "samples.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # `...` stands for the first command's options (its --epochs replaced by the recipe's own).
    resume = CLI_RESUME.replace("train ...", CLI_TRAIN.split(" --epochs ")[0].removeprefix("python -m vaelib "))
    _run(quick(resume, epochs="3"), tmp_path, env)
    history = (tmp_path / "runs" / "mnist-z20" / "history.csv").read_text().splitlines()
    assert [int(row.split(",")[0]) for row in history[1:]] == [1, 2, 3], "resumed to (20, here 3) epochs in all"


def test_train_help_lists_every_option() -> None:
    from vaelib.config import FIELD_HELP

    out = _run(quick(next(iter(k for k in INLINE if "train --help" in k))), ROOT, _environment()).stdout
    missing = [name for name in FIELD_HELP if "--" + name.replace("_", "-") not in out]
    assert not missing, f"`python -m vaelib train --help` lacks {missing}"


def test_the_paper_cost_on_the_rerun_page_is_what_the_command_prints() -> None:
    import pandas as pd

    out = _run(quick(next(k for k in INLINE if k.endswith("measured cost"))), ROOT, _environment()).stdout
    total, runs = re.search(r"total: ([\d.]+) core-hours for (\d+) runs", out).groups()
    # Independently of the module: seconds per training sample of every committed run, times the paper's
    # budget (10^8 samples; Monte Carlo EM 10^7).
    hours = 0.0
    for history_file in (ROOT / "book" / "measured" / "cpu-2core").glob("figure*/*/history.csv"):
        history = pd.read_csv(history_file)
        budget = 1e7 if json.loads((history_file.parent / "config.json").read_text())["method"] == "mcem" else 1e8
        hours += history["seconds"].sum() / history["samples_seen"].max() * budget / 3600
    assert float(total) == pytest.approx(hours, abs=0.06)
    assert int(runs) == len(list((ROOT / "book" / "measured" / "cpu-2core").glob("figure*/*/history.csv")))


def test_help_notebook_lists_every_parameter_with_its_comment() -> None:
    out = _run(quick(HELP_NOTEBOOK), ROOT, _environment()).stdout
    inline = _run(quick(next(k for k in INLINE if k.startswith("papermill"))), NOTEBOOKS_DIR, _environment()).stdout
    assert inline.split("\n", 1)[1] == out.split("\n", 1)[1].replace("notebooks/", "", 1)
    cell = [c for c in nbformat.read(NOTEBOOKS_DIR / "05_latent_dimension.ipynb", as_version=4).cells
            if "parameters" in c.metadata.get("tags", [])][0].source
    for name, param in notebook_parameters(NOTEBOOKS_DIR / "05_latent_dimension.ipynb").items():
        comment = next(line for line in cell.splitlines() if line.startswith(name + ":")).split("  # ", 1)[1]
        assert f"  {name}: {' or '.join(param.kinds)} (default " in out, f"{name} is not listed with its kind"
        assert comment in out, f"the comment of {name} is not shown"


def _papermill(recipe: str) -> tuple[list[str], Path]:
    """The recipe's papermill words and working folder, made quick: 2 epochs, and the quick profile's
    sizes for the keys the recipe leaves alone."""
    cd, _, command = recipe.rpartition(" && ")
    cwd = ROOT / cd.removeprefix("cd ").strip() if cd else ROOT
    return quick(command, epochs="2"), cwd


@pytest.mark.slow
def test_a_chapter_reruns_with_papermill_from_either_folder_on_one_cache(tmp_path: Path) -> None:
    quick_params = load_profile("quick").parameters("05_latent_dimension")
    sizes = {k: v for k, v in quick_params.items() if k not in ("latent_dims", "epochs")}
    (tmp_path / "quick.yaml").write_text(yaml.safe_dump(sizes))
    logs = []
    for i, recipe in enumerate([PAPERMILL_FROM_NOTEBOOKS, PAPERMILL_FROM_ROOT]):
        words, cwd = _papermill(recipe)
        out = tmp_path / f"out{i}.ipynb"
        words = [str(out) if w == "/tmp/out.ipynb" else w for w in words] + ["-f", str(tmp_path / "quick.yaml")]
        log = tmp_path / f"runs{i}.jsonl"
        _run(words, cwd, _environment(VAELIB_RESULTS=str(tmp_path / "results"), **{RUN_LOG_ENV: str(log)}))
        injected = [c for c in nbformat.read(out, as_version=4).cells
                    if "injected-parameters" in c.metadata.get("tags", [])][0].source
        assert "latent_dims = [5]" in injected and "epochs = 2" in injected
        logs.append([json.loads(line) for line in log.read_text().splitlines()])
    assert [e["run"] for e in logs[0]] == [e["run"] for e in logs[1]] and logs[0], "both asked for the same runs"
    assert all(e["status"] == "loaded" for e in logs[1]), (
        f"the rerun from the repository root trained {logs[1]}: not the cache of the run from notebooks/")


def test_the_issues_typo_stops_papermill_in_seconds_and_trains_nothing(tmp_path: Path) -> None:
    # Issue 9's done-when: `cd notebooks && papermill 05_latent_dimension.ipynb out.ipynb -p latent_dim 5`.
    runs = tmp_path / "runs"
    words = [str(Path(sys.executable).with_name("papermill")), "05_latent_dimension.ipynb", str(tmp_path / "out.ipynb"),
             "-p", "latent_dim", "5"]
    start = time.perf_counter()
    proc = subprocess.run(words, cwd=NOTEBOOKS_DIR, env=_environment(VAELIB_RUNS=str(runs)), capture_output=True,
                          text=True, timeout=300)
    seconds = time.perf_counter() - start
    assert proc.returncode != 0
    (line,) = [ln for ln in proc.stderr.splitlines() if ln.startswith("ParameterError:")]
    assert "unknown parameter latent_dim (did you mean latent_dims?)" in line and "declares latent_dims, " in line
    assert not runs.exists() or not any(runs.iterdir()), "a run was started"
    print(f"papermill refused the typo after {seconds:.1f} s")  # the issue's "within seconds": see -s output


def _make_dry_run(*args: str) -> str:
    """The last command `make -n` would run: what the target does after setup and data."""
    # Under `make test` this runs inside make: without --no-print-directory the recursion would add
    # "make[1]: Leaving directory" as the last line.
    proc = _run(["make", "-n", "--no-print-directory", *args], ROOT, _environment())
    return proc.stdout.strip().splitlines()[-1]


def test_make_targets_run_the_documented_build_commands() -> None:
    python = "-m vaelib.report build"
    assert _make_dry_run("book").endswith(f"{python} --profile default --jobs 2")
    assert _make_dry_run("book", "PROFILE=quick").endswith(f"{python} --profile quick --jobs 2")
    assert _make_dry_run("book", "JOBS=1").endswith(f"{python} --profile default --jobs 1")
    assert _make_dry_run("pdf").endswith(f"{python} --profile default --jobs 2 --pdf")
    assert _make_dry_run("book", "REPORT_FLAGS=--only 03_mnist").endswith(
        f"{python} --profile default --jobs 2 --only 03_mnist")


@pytest.mark.slow
def test_one_chapter_is_rebuilt_as_the_recipe_says() -> None:
    # The recipe with the quick profile: it re-executes 03_mnist from the run cache and renders the book.
    words = quick(BUILD_ONE, profile="quick")
    proc = _run(words, ROOT, _environment())
    assert "[1/1] executing 03_mnist (profile quick)" in proc.stdout
    assert "[1/1] 03_mnist: cell 1/" in proc.stdout, "the build did not say where it was"
    html = paths.checkout("book") / "_build" / "html"
    assert (html / "notebooks" / "03_mnist.html").is_file() and (html / "statistics.html").is_file()
