"""Presentation in one room: every table layout, figure and the report page.

- :mod:`kdbench.report.records`: the run records as one DataFrame row each, and the filters
  every table starts with (finished runs, ``--where``, the metric columns);
- :mod:`kdbench.report.render`: the one renderer (GitHub Markdown, LaTeX, CSV, HTML, plain)
  and the one cell formatter (mean ± std over seeds);
- one module per study kind, each with its tables and figures: :mod:`~kdbench.report.pivot`
  (``kdbench table``'s rows × cols), :mod:`~kdbench.report.checkpoint` (Checkpoint KD's
  Tables 1 and 2 and checkpoint curve), :mod:`~kdbench.report.selection` (its Algorithm 1 and
  the information plane), :mod:`~kdbench.report.robustness` (KD beyond compression),
  :mod:`~kdbench.report.indistill` (InDistill), :mod:`~kdbench.report.methods` (the
  literature's table under one protocol), :mod:`~kdbench.report.curves` (training curves);
- :mod:`kdbench.report.layouts` and :mod:`kdbench.report.plugin`: the built-in table layouts
  and figures as plugins; :mod:`kdbench.report.figures`: the figure registry and reproducible
  figure files; :mod:`kdbench.report.svg`: the inline-SVG charts of the page;
- :mod:`kdbench.report.study`: the studies of a results store (folders with their own
  ``runs/``); :mod:`kdbench.report.page`: ``kdbench report``'s self-contained HTML page;
- :mod:`kdbench.report.reproduce`: a study of ``results/`` that remakes itself
  (``kdbench reproduce``).

The package imports nothing heavy at import time (it is loaded with the built-in plugins).
"""
