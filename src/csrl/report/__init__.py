"""Reports from saved run records: learning-dynamics figures, grid sweeps, tables and an HTML page.

- :mod:`csrl.report.dynamics`: figures from a run's ``metrics.jsonl`` (``csrl dynamics``);
- :mod:`csrl.report.sweep`: grid expansion, resumable subprocess runner, collection (``csrl sweep``);
- :mod:`csrl.report.html`: one self-contained HTML page for a run or a sweep (``csrl report``);
- :mod:`csrl.report.tables`: mean ± std, Markdown, CSV and HTML tables.

Submodules are imported on use (matplotlib is only loaded by the ones that draw).
"""
