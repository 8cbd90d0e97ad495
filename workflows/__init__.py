"""The command-line layer: the workflows that combine the two libraries.

``simulator/`` trains and records; ``analysis/`` reads recorded histories. Neither
imports this package (their ``__main__`` entry points hand over to it). Here live:

============= ==========================================================
run           ``python -m simulator run|bench``: the main job (train, save, report)
analysis_cli  ``python -m analysis report|plot|sweep``
sweep         grids of configs x optimizers x seeds, on processes or Dask
benchmark     ``python -m simulator bench``: speed and memory figures
============= ==========================================================
"""
