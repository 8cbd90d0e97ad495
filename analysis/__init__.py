"""Analysis of recorded runs: the theory of Li et al. (2024) checked numerically.

Works from a :class:`simulator.History` alone (recorded arrays and config), never from
the simulator's internals. One module per concept:

=============== ===============================================================
quantities      section-4 inner products of a history (one run or a batch)
laws            the six exact one-step laws of SignGD, checked step pair by pair
stages          detection of the stage times T1 .. T4
predictions     closed-form predictions of the stages from the initial state
fits            s_{i,21} decay form, training-loss rate, test-error prediction
regime          is a configuration inside the regime the theory assumes?
summary         one pass over everything; flat per-run summaries for sweeps
report          the prediction table, report.md and report.json of a run dir
figures         figures for papers and slides: stages, loss, slide, pairs; panels
animation       ``python -m analysis animate``: a GIF of a run through the stages
interactive     live sliders over the reduced engine (a notebook's widgets)
tables          a sweep's results.csv as a typed pandas DataFrame (``load_sweep``)
scaling         log-log slopes across a sweep, seeds aggregated, against the
                theory's exponents (``scaling_study``)
cli             ``python -m analysis report|plot|animate|scaling|sweep`` (in ``workflows``)
=============== ===============================================================

>>> from analysis import run_summary, write_report       # doctest: +SKIP
>>> print(write_report("runs/my_run"))                     # doctest: +SKIP
"""

from .laws import check_laws
from .predictions import predict
from .quantities import Quantities, quantities
from .report import build_report, write_report
from .stages import detect_stages
from .summary import analyze, run_summary
from .scaling import scaling_study
from .tables import load_sweep


__all__ = ["Quantities", "analyze", "build_report", "check_laws", "detect_stages", "load_sweep",
           "predict", "quantities", "run_summary", "scaling_study", "write_report"]
