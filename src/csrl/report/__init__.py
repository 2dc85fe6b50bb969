"""Reports from saved run records: learning-dynamics figures, grid sweeps, tables and an HTML page.

- :mod:`csrl.report.dynamics`: figures from a run's ``metrics.jsonl`` (``csrl dynamics``);
- :mod:`csrl.report.sweep`: a sweep folder's cells collected into tables and figures (``csrl sweep``
  runs the grid with :mod:`csrl.sweep`, then writes this summary); :mod:`csrl.report.sweep_layout`: the
  folder's layout and a cell's state;
- :mod:`csrl.report.html`: one self-contained HTML page for a run or a sweep (``csrl report``);
- :mod:`csrl.report.tables`: mean ± std, Markdown, CSV and HTML tables.

Submodules are imported on use (matplotlib is only loaded by the ones that draw). ``report`` only reads
saved records: it starts no process and imports nothing from ``csrl.sweep`` nor, from ``csrl.train``, more
than the checkpoint reader.
"""
