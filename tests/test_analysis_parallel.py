"""`--law auto` fits every candidate law, and on a big table it fits them in worker processes side by side
(analysis/pipeline.py, workers=): the answer must not depend on how many processes computed it."""
import sys

import numpy as np

sys.path.insert(0, str(__import__('pathlib').Path(__file__).resolve().parents[1]))  # repo root
from analysis.io import load_results, select_rows
from analysis.laws import LAWS
from analysis.pipeline import PARALLEL_MIN_ROWS, _fit_laws, analyze
from analysis.synthetic import TRUE_PARAMS, make_sweep


def test_parallel_fits_equal_serial_ones():
    rows = select_rows(load_results(make_sweep(LAWS["two_source"], TRUE_PARAMS["two_source"],
                                               n_values=(1e6, 2e6, 4e6, 8e6), fractions=(0, 0.3, 0.6), seed=3,
                                               cross=False)))
    assert len(rows) >= PARALLEL_MIN_ROWS  # the default is the parallel path on tables like this one
    laws = ["chinchilla", "two_source", "log_bilinear"]
    serial = analyze(rows, "auto", laws=laws, workers=1)
    parallel = analyze(rows, "auto", laws=laws, workers=2)
    assert parallel.chosen == serial.chosen and parallel.why == serial.why
    assert set(parallel.fits) == set(serial.fits) == set(laws) - set(serial.failures)
    assert parallel.failures == serial.failures
    for name, fit in serial.fits.items():
        assert np.array_equal(parallel.fits[name].theta, fit.theta), name
        assert parallel.scores[name] == serial.scores[name]
        assert parallel.checks[name] == serial.checks[name]


def test_a_law_that_cannot_be_fitted_is_reported_not_raised_by_a_worker():
    rows = select_rows(load_results(make_sweep(LAWS["two_source"], TRUE_PARAMS["two_source"], n_values=(1e6,),
                                               tokens_per_param=(10,), fractions=(0, 0.5), seed=0, cross=False)))
    out = _fit_laws(rows, ["log_bilinear", "chinchilla"], None, False, False, workers=2)
    assert len(out) == 2
    for fit, checks, error in out:
        assert checks is None and (fit is None) == (error is not None)
