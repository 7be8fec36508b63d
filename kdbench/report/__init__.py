"""``kdbench report``: one self-contained HTML page for a results store, and the training-curve
plots of ``kdbench plot curves``.

- :mod:`kdbench.report.study`: the studies of a store (folders with their own ``runs/``);
- :mod:`kdbench.report.page`: the page (inventory, every table layout that applies, figures,
  each run's provenance), written only over a file kdbench wrote;
- :mod:`kdbench.report.figures` and :mod:`kdbench.report.plugin`: the figures, as
  ``report_figure`` plugins; :mod:`kdbench.report.svg`: the inline-SVG charts they draw;
- :mod:`kdbench.report.curves`: per-epoch curves of runs, and their PNG/PDF plot.

The package imports nothing heavy at import time (it is loaded with the built-in plugins).
"""
