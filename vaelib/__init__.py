"""vaelib: an executable reproduction of Kingma & Welling, Auto-Encoding Variational Bayes (2013).

One downward path; each module imports only modules above it in this list, so the training loop knows
nothing of figures or the book (checked by tests/test_layout.py):

    paths, io           where data, runs and results live; atomic writes
    config              RunConfig: every knob, validated before any work, hashed with CODE_VERSION
    data                data sets as uint8 tensors in memory; their sizes
    objectives          KL, the SGVB estimators A and B, the importance-weighted bound, unit conversions
    likelihoods         p(x|z) for every decoder, each with its own bits/dim rule
    models              encoders and decoders (the paper's MLP, a conv net)
    toy, hmc            the exact linear-Gaussian model; Hamiltonian Monte Carlo on a VAE's posterior
    methods             one update per training method (AEVB, wake-sleep, Monte Carlo EM)
    estimators          every estimator of log p(x)
    runs                run directories, the run cache, its lock and its code version
    evaluate            the one home of evaluation: seeded streams, ELBO, log p(x), unit statistics, cache
    train               fit, fit_or_load, optimizers, schedules
    grid                runs that differ only in latent size or seed trained as one stacked computation
    executors           train_many and map_jobs: in process, a local pool, Slurm through submitit
    literature          every published number compared against
    experiments         the chapters' drivers (Figs. 2 and 3, studies, step sizes, theory demos)
    figures             every plot, one style, no pyplot state; the JupyterLab explorer
    results             the book's headline numbers
    book                profiles -> papermill -> Jupyter Book -> PDF (profiles, parameters, engine, progress,
                        execute, assemble, statistics, browser, build, notebook)
    __main__            `python -m vaelib train | evaluate | sample`, generated from RunConfig
"""
