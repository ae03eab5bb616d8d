"""The chapters' experiment drivers: what a chapter trains, evaluates and reports, as library calls.

    settings.py            the paper's settings and the arithmetic of sample budgets
    study.py               train and evaluate a set of runs, side by side with the literature (chapters 5, 6, 9)
    figure2.py, figure3.py the paper's Figs. 2 and 3 (chapters 7, 8)
    step_size.py           the paper's choice of Adagrad's step size
    measured.py            Figs. 2 and 3 trained longer, kept in book/measured/ for chapters 7 and 8
    reparameterization.py  chapter 1: reparameterized samplers, gradient-estimator variance
    bounds.py              chapter 2: the ELBO and the importance-weighted bound on the linear-Gaussian model
"""
