"""Behaviour of vaelib.figures (and its explorer) on tiny untrained models and synthetic data (no data files)."""

from __future__ import annotations

import math
import subprocess
import sys

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from scipy.stats import norm  # noqa: E402

from vaelib import evaluate, figures  # noqa: E402
from vaelib.config import RunConfig  # noqa: E402
from vaelib.data import Dataset  # noqa: E402
from vaelib.figures import explorer  # noqa: E402
from vaelib.models import build_model  # noqa: E402

torch.set_num_threads(2)
SHAPE = (1, 28, 28)


def tiny_model(latent_dim: int = 2, seed: int = 0):
    torch.manual_seed(seed)
    model = build_model(RunConfig(latent_dim=latent_dim, hidden_dim=16), SHAPE)
    return model.eval()


def tiny_dataset(n: int = 200) -> Dataset:
    generator = torch.Generator().manual_seed(0)
    x = (torch.rand(n, 784, generator=generator) * 255).to(torch.uint8)
    y = torch.arange(n) % 10
    return Dataset("mnist", x, y, x.clone(), y.clone(), SHAPE)


def history(epochs: int = 4, test_every: int = 1) -> pd.DataFrame:
    rows = []
    for e in range(1, epochs + 1):
        test = -100.0 - 1.0 / e if e % test_every == 0 else math.nan
        rows.append({"epoch": e, "samples_seen": 1000 * e, "train_elbo": -110.0 + e, "test_elbo": test,
                     "train_log_px_z": -90.0 + e, "test_log_px_z": -91.0, "train_kl": 20.0, "test_kl": 21.0})
    return pd.DataFrame(rows)


# --- image grids ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(("n", "nrow", "padding"), [(10, 5, 1), (7, 3, 2), (1, 10, 0)])
def test_make_grid_has_the_pixel_size_of_its_tiles(n, nrow, padding):
    grid = figures.make_grid(torch.rand(n, 784), SHAPE, nrow=nrow, padding=padding)
    cols, rows = min(nrow, n), math.ceil(n / min(nrow, n))
    assert grid.shape == (rows * (28 + padding) + padding, cols * (28 + padding) + padding)


def test_make_grid_puts_each_image_in_its_cell_and_colour_last():
    images = torch.zeros(4, 3, 32, 32)
    images[2, 1] = 1.0  # third image: pure green
    grid = figures.make_grid(images, (3, 32, 32), nrow=2, padding=1)
    assert grid.shape == (2 * 33 + 1, 2 * 33 + 1, 3)
    cell = grid[34:66, 1:33]  # row 1, column 0
    assert np.all(cell[..., 1] == 1.0) and np.all(cell[..., [0, 2]] == 0.0)
    assert np.all(grid[1:33, 1:33] == 0.0)


def test_image_grid_shows_the_grid_unscaled():
    x = torch.linspace(0, 1, 784).repeat(6, 1)
    fig = figures.image_grid(x, SHAPE, nrow=3, title="six")
    assert isinstance(fig, Figure)
    shown = fig.axes[0].images[0]
    assert shown.get_array().shape == (2 * 29 + 1, 3 * 29 + 1)
    assert shown.get_clim() == (0.0, 1.0)  # grey levels are not stretched to the batch's range


def test_image_grid_rejects_images_of_another_shape():
    with pytest.raises(ValueError, match="image_shape"):
        figures.image_grid(torch.rand(4, 100), SHAPE, nrow=2)
    with pytest.raises(ValueError, match="nrow"):
        figures.image_grid(torch.rand(4, 784), SHAPE, nrow=0)


# --- manifold ------------------------------------------------------------------------------------------
def test_manifold_corners_are_the_inverse_gaussian_cdf_of_the_grid():
    n = 5
    u, z = figures.manifold_latents(n)
    axis = np.linspace(0.5 / n, 1 - 0.5 / n, n)
    z = z.reshape(n, n, 2).numpy()
    # top-left: smallest z1, largest z2; bottom-right: largest z1, smallest z2
    np.testing.assert_allclose(z[0, 0], norm.ppf([axis[0], axis[-1]]), rtol=1e-6)
    np.testing.assert_allclose(z[-1, -1], norm.ppf([axis[-1], axis[0]]), rtol=1e-6)
    np.testing.assert_allclose(norm.cdf(z), u, rtol=1e-5)
    assert np.all(np.diff(z[0, :, 0]) > 0) and np.all(np.diff(z[:, 0, 1]) < 0)


def test_manifold_of_a_larger_latent_space_keeps_other_dimensions_at_zero():
    _, z = figures.manifold_latents(4, latent_dim=5, dims=(1, 3))
    assert z.shape == (16, 5)
    assert torch.all(z[:, [0, 2, 4]] == 0) and torch.all(z[:, 1] != 0)


def test_manifold_rejects_bad_grids():
    with pytest.raises(ValueError, match="margin"):
        figures.manifold_latents(5, margin=0.0)  # Phi^-1(0) is -inf
    with pytest.raises(ValueError, match="dims"):
        figures.manifold_latents(5, latent_dim=2, dims=(0, 0))


def test_manifold_figure_decodes_one_tile_per_grid_point():
    fig = figures.manifold_figure(tiny_model(), SHAPE, n=6)
    assert fig.axes[0].images[0].get_array().shape == (6 * 28, 6 * 28)


# --- models ----------------------------------------------------------------------------------------------
def test_reconstruction_figure_puts_originals_above_reconstructions():
    model = tiny_model()
    x = torch.rand(12, 784)
    fig = figures.reconstruction_figure(model, x, SHAPE, n=8)
    top, bottom = (ax.images[0].get_array() for ax in fig.axes)
    np.testing.assert_allclose(top, figures.make_grid(x[:8], SHAPE, nrow=8), atol=1e-6)
    np.testing.assert_allclose(bottom, figures.make_grid(model.reconstruct(x[:8]), SHAPE, nrow=8), atol=1e-6)


def test_samples_figure_is_reproducible_by_seed():
    model = tiny_model()
    a = figures.samples_figure(model, SHAPE, n=9, seed=3).axes[0].images[0].get_array()
    b = figures.samples_figure(model, SHAPE, n=9, seed=3).axes[0].images[0].get_array()
    c = figures.samples_figure(model, SHAPE, n=9, seed=4).axes[0].images[0].get_array()
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_latent_scatter_plots_one_point_per_example_coloured_by_label():
    data = tiny_dataset(150)
    fig = figures.latent_scatter(tiny_model(), data, n=120)
    points = fig.axes[0].collections[0]
    assert points.get_offsets().shape == (120, 2)
    np.testing.assert_array_equal(points.get_array(), data.y_test[:120].numpy())


def test_kl_per_dimension_values_sum_to_the_total_kl():
    model, data = tiny_model(latent_dim=4), tiny_dataset(100)
    per_dim = evaluate.kl_per_dimension(model, data)
    x = data.x_test.float() / 255
    with torch.no_grad():
        loc, log_var = model.posterior(x)
    total = (0.5 * (log_var.exp() + loc**2 - 1 - log_var)).sum(-1).mean()
    assert per_dim.shape == (4,) and np.all(per_dim >= 0)
    assert per_dim.sum() == pytest.approx(float(total), rel=1e-4)
    fig = figures.kl_per_dimension({"a": model, "b": tiny_model(latent_dim=3)}, data, threshold=0.01)
    lines = [ln for ln in fig.axes[0].lines if ln.get_label() in ("a", "b")]
    assert [len(ln.get_xdata()) for ln in lines] == [4, 3]
    assert all(np.all(np.diff(ln.get_ydata()) <= 0) for ln in lines)  # sorted, largest first


# --- curves and tables ---------------------------------------------------------------------------------
def test_training_curves_draw_one_line_per_run_per_split():
    fig = figures.training_curves({"z=2": history(), "z=20": history(), "z=5": history()})
    labels = [ln.get_label() for ln in fig.axes[0].lines]
    assert sorted(labels) == sorted(f"{r} ({s})" for r in ("z=2", "z=20", "z=5") for s in ("train", "test"))


def test_training_curves_with_components_add_reconstruction_and_kl_panels():
    fig = figures.training_curves({"a": history()}, components=True, x="samples_seen", logx=True)
    assert len(fig.axes) == 3
    assert all(len(ax.lines) == 2 for ax in fig.axes)
    assert fig.axes[0].get_xscale() == "log"


def test_training_curves_skip_missing_test_points_and_convert_to_bits():
    fig = figures.training_curves({"a": history(6, test_every=3)}, bits_per_dim=784)
    test_line = next(ln for ln in fig.axes[0].lines if "test" in ln.get_label())
    assert list(test_line.get_xdata()) == [3, 6]
    np.testing.assert_allclose(test_line.get_ydata(), [(100 + 1 / 3) / (784 * math.log(2)),
                                                       (100 + 1 / 6) / (784 * math.log(2))])


def test_training_curves_reject_an_unknown_axis():
    with pytest.raises(ValueError, match="samples_seen"):
        figures.training_curves({"a": history()}, x="step")


def test_comparison_table_keeps_missing_values_missing():
    table = figures.comparison_table({"a": {"elbo": -100.123, "active_units": 12}, "b": {"elbo": -99.0}})
    assert table.loc["a", "test ELBO (nats)"] == -100.12
    assert math.isnan(table.loc["b", "active units"])


# --- explorer ------------------------------------------------------------------------------------------
def test_traversal_latents_walk_one_dimension_at_a_time():
    z = explorer.traversal_latents(4, dims=[0, 2], steps=5)
    assert z.shape == (10, 4)
    first, second = z[:5], z[5:]
    torch.testing.assert_close(first[:, 0], torch.linspace(-2.5, 2.5, 5))
    assert torch.all(first[:, 1:] == 0) and torch.all(second[:, [0, 1, 3]] == 0)


def test_explore_static_returns_a_figure_without_loading_widgets_or_a_display():
    code = (
        "import sys, matplotlib; matplotlib.use('Agg'); import torch\n"
        "from vaelib.config import RunConfig\nfrom vaelib.models import build_model\n"
        "from vaelib.figures.explorer import explore\n"
        "m = build_model(RunConfig(latent_dim=3, hidden_dim=8), (1, 28, 28))\n"
        "fig = explore(m, (1, 28, 28), interactive=False, steps=4)\n"
        "from matplotlib.figure import Figure\nassert isinstance(fig, Figure)\n"
        "assert fig.axes[0].images[0].get_array().shape == (3 * 29 + 1, 4 * 29 + 1)\n"
        "print(sorted(m for m in ('ipywidgets', 'IPython.display') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_explore_outside_a_kernel_is_static():
    fig = explorer.explore(tiny_model(latent_dim=3), SHAPE, steps=3)
    assert isinstance(fig, Figure)


def test_explore_rejects_bad_dimensions():
    with pytest.raises(ValueError, match="dims"):
        explorer.explore(tiny_model(latent_dim=2), SHAPE, dims=[0, 5], interactive=False)


def test_explorer_widget_redraws_when_a_slider_moves():
    pytest.importorskip("ipywidgets")
    box = explorer.explorer_widget(tiny_model(latent_dim=2), SHAPE)
    assert len(box.sliders) == 2 and box.manifold is not None
    before, marker_before = box.image.value, box.manifold.value
    box.sliders[0].value = 2.5
    assert box.image.value != before
    assert box.manifold.value != marker_before
    box.sliders[0].value = 0.0
    assert box.image.value == before  # the image is a function of z only


# --- losses read as likelihoods, tables ----------------------------------------------------------------
def test_loss_offset_turns_mse_and_l1_into_normalized_log_densities():
    from vaelib.likelihoods import Bernoulli, L1Loss, MSELoss

    x, logits = torch.rand(3, 784), torch.randn(3, 784)
    mean = torch.sigmoid(logits)
    gaussian = torch.distributions.Normal(mean, math.sqrt(0.5)).log_prob(x).sum(-1)
    laplace = torch.distributions.Laplace(mean, 1.0).log_prob(x).sum(-1)
    torch.testing.assert_close(MSELoss().log_prob(x, logits) + MSELoss().log_density_offset(784), gaussian)
    torch.testing.assert_close(L1Loss().log_prob(x, logits) + L1Loss().log_density_offset(784), laplace)
    assert Bernoulli().log_density_offset(784) == 0.0


class _Run:
    def __init__(self, likelihood: str, beta: float = 1.0, dataset: str = "mnist"):
        self.config = RunConfig(dataset=dataset, likelihood=likelihood, beta=beta, hidden_dim=8)
        self.model = build_model(self.config, (1, 28, 28))


def test_objective_table_scores_losses_by_the_density_they_imply():
    runs = {"bern": _Run("bernoulli"), "mse": _Run("mse"), "beta": _Run("bernoulli", beta=4.0)}
    result = {"elbo": -50.0, "log_px_z": -40.0, "kl": 10.0}
    table = figures.objective_table(runs, {k: dict(result) for k in runs})
    assert table.loc["bern", "test ELBO at beta=1 (nats)"] == -50.0
    assert table.loc["mse", "test ELBO at beta=1 (nats)"] == pytest.approx(-50.0 - 392 * math.log(math.pi), abs=0.01)
    assert table.loc["mse", "KL (nats)"] == 10.0  # the KL needs no constant: it is comparable across rows
    assert "beta = 4" in table.loc["beta", "trained with"]
    assert table.loc["bern", "bits/dim (from the ELBO)"] == pytest.approx(50 / (784 * math.log(2)), abs=0.01)


def test_bound_table_adds_importance_sampling_columns_only_when_given():
    result = {"elbo": -100.0, "log_px_z": -80.0, "kl": 20.0, "active_units": 5, "n_examples": 10}
    plain = figures.bound_table({2: result}, index_name="Nz")
    assert "log p(x) IS (nats)" not in plain and plain.index.name == "Nz"
    sampled = {2: {**result, "log_likelihood": -95.0, "iw_samples": 100}}
    assert figures.bound_table({2: result}, sampled).loc[2, "log p(x) IS (nats)"] == -95.0


def test_metric_against_names_a_missing_column():
    frame = pd.DataFrame({"Nz": [2, 5], "elbo": [-100.0, -95.0]})
    fig = figures.metric_against(frame, "Nz", {"elbo": "ELBO"})
    assert list(fig.axes[0].lines[0].get_ydata()) == [-100.0, -95.0]
    with pytest.raises(ValueError, match="log_likelihood"):
        figures.metric_against(frame, "Nz", {"log_likelihood": "log p(x)"})


def test_decoder_draws_figure_shows_means_above_draws_from_the_same_codes():
    model = tiny_model()
    fig = figures.decoder_draws_figure(model, SHAPE, n=5, seed=1)
    means, draws = (ax.images[0].get_array() for ax in fig.axes)
    assert means.shape == draws.shape
    assert set(np.unique(draws[1:29, 1:29])) <= {0.0, 1.0}  # Bernoulli draws are bits
    assert not set(np.unique(means[1:29, 1:29])) <= {0.0, 1.0}
