"""One self-contained HTML page for a run folder or a sweep folder (``csrl report``).

Everything is inline: figures as base64 PNG, tables as HTML tables, the resolved config as pretty JSON,
the style sheet, and a small check script. A Content-Security-Policy meta tag forbids any other source,
so the page cannot load anything from the network, and a page that tried would log a console error.

The check script runs on ``load``: every ``<img>`` must have decoded (``naturalWidth > 0``) and every
table must have rows. It writes the verdict into ``<div id="csrl-check" data-ok="true|false">`` (shown
only when something is wrong), so a headless browser can verify the page (``--dump-dom``).

Run report: STS tables (before training, after, STS-B-only score of a sweep cell), learning-dynamics
figures, a summary of every logged metric (first, last, min, max), the resolved config. Sweep report:
the group table (mean ± std over seeds), ablation and overlay figures, the per-cell table, the settings,
grid and base config.
"""

from __future__ import annotations

import base64
import html
import json
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from csrl.errors import CsrlError
from csrl.report import tables
from csrl.report.dynamics import (
    DEV_KEY,
    Records,
    Runs,
    dynamics_figures,
    metric_keys,
    png_bytes,
    read_metrics,
    run_subject,
    series,
    stages_figure,
)
from csrl.utils.io import atomic_write_bytes, atomic_write_text

CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'"
STYLE = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#1d2430;background:#fafbfc}
main{max-width:1180px;margin:0 auto;padding:8px 24px 48px}
h1{font-size:22px;margin:18px 0 4px}h2{font-size:18px;margin:28px 0 8px;border-bottom:1px solid #dde2ea}
h3{font-size:15px;margin:18px 0 6px}.meta{color:#5a6578;margin:0 0 8px}
nav a{margin-right:14px}a{color:#2457a6}
table{border-collapse:collapse;margin:6px 0 14px;font-size:13px;background:#fff}
th,td{border:1px solid #dde2ea;padding:3px 8px;text-align:left;white-space:nowrap}
th{background:#eef1f6}td.num{text-align:right;font-variant-numeric:tabular-nums}
.scroll{overflow-x:auto}figure{margin:10px 0 18px}img{max-width:100%;height:auto;border:1px solid #e3e7ee}
figcaption{color:#5a6578;font-size:12.5px}pre{background:#fff;border:1px solid #dde2ea;padding:10px;
overflow-x:auto;font-size:12px}details{margin:6px 0}
#csrl-check{padding:8px 12px;background:#fdecea;color:#8a1c12;border:1px solid #f5c2bc;margin:8px 0}
#csrl-check[data-ok="true"],#csrl-check[data-ok="pending"]{display:none}
"""
CHECK_SCRIPT = """
(function () {
  function check() {
    var problems = [];
    var imgs = document.images;
    for (var i = 0; i < imgs.length; i++) {
      if (!imgs[i].complete || imgs[i].naturalWidth === 0) problems.push("image not decoded: " + imgs[i].alt);
    }
    var ts = document.querySelectorAll("table");
    for (var j = 0; j < ts.length; j++) {
      if (ts[j].tBodies.length === 0 || ts[j].tBodies[0].rows.length === 0) problems.push("empty table " + j);
    }
    var el = document.getElementById("csrl-check");
    el.setAttribute("data-images", String(imgs.length));
    el.setAttribute("data-tables", String(ts.length));
    el.setAttribute("data-ok", problems.length ? "false" : "true");
    el.textContent = problems.length ? "Report check failed: " + problems.join("; ") : "";
  }
  if (document.readyState === "complete") check(); else window.addEventListener("load", check);
})();
"""
CAPTIONS = {
    "align_uniform": "Alignment (positive pairs: STS-B test, gold > 4) against uniformity of the sentence "
    "embeddings over training; lower is better on both axes.",
    "geometry": "Paper A's geometry on the probe sentences, last layer: anisotropy, token norms, self-similarity "
    "of functional and content tokens, intra-sentence similarity; uniformity, alignment and average cosine of "
    "the pooled embeddings.",
    "training": "Training loss and STS-B dev Spearman x100 (the best checkpoint is kept).",
    "layers": "Every layer's anisotropy baseline, mean token norm and top rogue-dimension share over training "
    "(layer 0 is the embedding output), on the same token draw.",
    "pretraining": "Masked-LM loss and accuracy on the training batches and on the held-out slice, and the "
    "learning rate.",
    "paradigm": "Paper B's gradient paradigm per step: GD (dissipation), W (hardest-negative share), R, and the "
    "angles between anchors, positives and negatives.",
}


def esc(text: object) -> str:
    return html.escape(str(text))


def img(fig: Any, name: str, caption: str = "") -> str:
    data = base64.b64encode(png_bytes(fig)).decode("ascii")
    cap = f"<figcaption>{esc(caption)}</figcaption>" if caption else ""
    return f'<figure><img alt="{esc(name)}" src="data:image/png;base64,{data}">{cap}</figure>'


def _scroll(inner: str) -> str:
    return f'<div class="scroll">{inner}</div>'


def table(headers: Sequence[str], rows: Sequence[Sequence[tables.Cell]], digits: tables.Digits = 2) -> str:
    return _scroll(tables.html_table(headers, rows, digits=digits))


def pre_json(obj: Any) -> str:
    return f"<pre>{esc(json.dumps(obj, indent=2, ensure_ascii=False, default=str))}</pre>"


def page(title: str, subtitle: str, sections: Sequence[tuple[str, str, str]]) -> str:
    """A complete page; sections are (anchor id, heading, inner HTML)."""
    from csrl import __version__

    nav = " ".join(f'<a href="#{esc(a)}">{esc(h)}</a>' for a, h, _ in sections)
    body = "\n".join(f'<section id="{esc(a)}"><h2>{esc(h)}</h2>\n{inner}\n</section>' for a, h, inner in sections)
    stamp = time.strftime("%Y-%m-%d %H:%M")
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)}</title><style>{STYLE}</style></head>\n<body><main>"
        f'<h1>{esc(title)}</h1><p class="meta">{esc(subtitle)} &middot; csrl {esc(__version__)} &middot; {stamp}</p>'
        f'<div id="csrl-check" data-ok="pending"></div><nav>{nav}</nav>\n{body}\n'
        f"</main><script>{CHECK_SCRIPT}</script></body></html>\n"
    )


# ----------------------------------------------------------------------------- a run
STS_FILES = (
    ("sts_before.json", "before training"),
    ("sts_test.json", "after training (best dev)"),
    ("sts_stsb.json", "after training (best dev), STS-B only"),
)


def sts_rows(run_dir: Path) -> tuple[list[str], list[list[tables.Cell]], str]:
    """The STS tables of a run: header, rows, aggregate name; empty rows when there are none."""
    found: list[tuple[str, dict[str, float], str]] = []
    for name, label in STS_FILES:
        p = run_dir / "results" / name
        if p.is_file():
            data = json.loads(p.read_text(encoding="utf-8"))
            rep = {str(k): float(v) for k, v in data.get("reported", {}).items()}
            if name == "sts_stsb.json":
                rep.pop("Avg", None)
            found.append((label, rep, str(data.get("reported_aggregate", "all"))))
    if not found:
        return [], [], "all"
    cols = list(dict.fromkeys(k for _, rep, _ in found for k in rep if k != "Avg"))
    if any("Avg" in rep for _, rep, _ in found):
        cols.append("Avg")
    rows: list[list[tables.Cell]] = [[label, *(rep.get(c) for c in cols)] for label, rep, _ in found]
    return ["model", *cols], rows, found[0][2]


def metrics_summary(records: Records) -> tuple[list[str], list[list[tables.Cell]]]:
    rows: list[list[tables.Cell]] = []
    for k in metric_keys(records):
        steps, v = series(records, k)
        if not v.size:
            continue
        rows.append([k, int(v.size), int(steps[0]), float(v[0]), int(steps[-1]), float(v[-1]),
                     float(v.min()), float(v.max())])  # fmt: skip
    return ["metric", "n", "first step", "first", "last step", "last", "min", "max"], rows


def run_sections(run_dir: Path, records: Records) -> list[tuple[str, str, str]]:
    sections = []
    head, rows, agg = sts_rows(run_dir)
    if rows:
        note = f'<p class="meta">Spearman x100; STS12-16 aggregate <code>{esc(agg)}</code>.</p>'
        sections.append(("sts", "STS results", note + table(head, rows)))
    figs = dynamics_figures({run_dir.name: [records]}, run_subject(run_dir, records)) if records else {}
    if figs:
        inner = "".join(img(f, n, CAPTIONS.get(n, "")) for n, f in figs.items())
        sections.append(("dynamics", "Learning dynamics", inner))
    if records:
        sections.append(("metrics", "Metrics summary", table(*metrics_summary(records), digits=4)))
    cfg = run_dir / "config.json"
    if cfg.is_file():
        sections.append(("config", "Resolved config", pre_json(json.loads(cfg.read_text(encoding="utf-8")))))
    return sections


def _run_records(run_dir: Path) -> Records:
    try:
        records = read_metrics(run_dir)
    except CsrlError:
        records = []
    if not records and not (run_dir / "config.json").is_file():
        raise CsrlError(f"{run_dir} holds no run (no metrics.jsonl, no config.json)")
    return records


def _run_parts(run_dir: Path) -> tuple[str, list[tuple[str, str, str]]]:
    records = _run_records(run_dir)
    steps = max((int(r["step"]) for r in records), default=0)
    _, dev = series(records, DEV_KEY)
    best = f", best STS-B dev {dev.max():.2f}" if dev.size else ""
    _, acc = series(records, "mlm/accuracy")
    mlm = f", held-out MLM accuracy {acc[-1]:.4f}" if acc.size else ""
    state = "finished" if (run_dir / "DONE").exists() or (run_dir / "results").is_dir() or (
        run_dir / "model").is_dir() else "in progress or stopped"  # fmt: skip
    sub = f"run folder {run_dir} · {steps} steps{best}{mlm} · {state}"
    return sub, run_sections(run_dir, records)


def run_report(run_dir: Path) -> str:
    sub, sections = _run_parts(run_dir)
    return page(f"csrl run report: {run_dir.name}", sub, sections)


# ----------------------------------------------------------------------------- a sweep
def sweep_report(sweep_dir: Path) -> str:
    sub, sections = _sweep_parts(sweep_dir)
    return page(f"csrl sweep report: {sweep_dir.name}", sub, sections)


def _sweep_parts(sweep_dir: Path) -> tuple[str, list[tuple[str, str, str]]]:
    from csrl.report import sweep as sw

    spec = json.loads((sweep_dir / "sweep.json").read_text(encoding="utf-8"))
    col = sw.collect(sweep_dir)
    t = sw.summary_tables(col)
    n_done = sum(c.state == "done" for c in col.cells)
    sections = []
    grid_rows: list[list[tables.Cell]] = [
        [a["name"], ", ".join(a["labels"]), "yes" if a["seed"] else ""] for a in col.axes
    ]
    settings = spec.get("settings", {})
    overview = (
        f'<p class="meta">{n_done} of {len(col.cells)} cells done. Groups average over the seed axis: '
        f"mean ± sample std (ddof 1). Final STS tasks: {esc(settings.get('final_tasks', 'all'))}.</p>"
        + table(["axis", "values", "seed axis"], grid_rows)
    )
    sections.append(("overview", "Grid", overview))
    if t["groups"].rows:
        sections.append(("groups", "Groups (mean ± std over seeds)", _scroll(t["groups"].html())))
    change = sw.change_table(col)
    if change.rows and len(change.headers) > len(col.group_axes) + 1:
        sections.append(("change", "Geometry, first probe → last (mean ± std over seeds)", _scroll(change.html())))
    abl = sw.ablation_figures(col)
    if abl:
        inner = "".join(img(f, n, "Mean ± std over seeds per value of the axis.") for n, f in abl.items())
        sections.append(("ablations", "Ablations", inner))
    ov = sw.overlay_figures(col)
    if ov:
        caps = {f"overlay_{k}": v for k, v in CAPTIONS.items()}
        inner = "".join(img(f, n, caps.get(n, "") + " One line per group (mean over seeds, band ± std).")
                        for n, f in ov.items())  # fmt: skip
        sections.append(("overlays", "Dynamics, all groups", inner))
    sections.append(("cells", "Cells", _scroll(t["cells"].html())))
    sections.append(("settings", "Sweep settings and base config",
                     pre_json({k: spec.get(k) for k in ("source", "output_dir", "settings", "base")})))  # fmt: skip
    sub = f"sweep folder {sweep_dir} · {len(col.cells)} cells"
    return sub, sections


def _is_sweep(p: Path) -> bool:
    return (p / "sweep.json").is_file()


def _check_folder(p: Path) -> None:
    if not p.is_dir():
        raise CsrlError(f"{p} is not a folder", hint="pass a run folder (csrl train) or a sweep folder (csrl sweep)")


def _stage_runs(p: Path) -> Runs:
    """A part's logs for the stages figure: a run's own log, or a sweep's groups (mean over seeds)."""
    if _is_sweep(p):
        from csrl.report import sweep as sw

        return sw.group_runs(sw.collect(p))
    records = _run_records(p)
    return {p.name: [records]} if records else {}


def stages_report(paths: Sequence[Path]) -> str:
    """One page for several folders in training order, e.g. a ``csrl pretrain`` run then a SimCSE run or sweep
    from its model: a figure of the geometry across the stages (first folder left, the others right), then
    each folder's own report sections."""
    sections: list[tuple[str, str, str]] = []
    first = _run_records(paths[0]) if not _is_sweep(paths[0]) else []
    for later in paths[1:]:
        fig = stages_figure(first, _stage_runs(later), first_label=paths[0].name, then_label=later.name,
                            suptitle=f"{run_subject(paths[0], first)}  →  {later.name}")  # fmt: skip
        if fig is not None:
            caption = (
                f"The geometry probe over two stages on a shared y axis per metric: {paths[0].name} (left) "
                f"and {later.name} (right; mean ± std over seeds per group), each on its own step axis."
            )
            sections.append((f"stages-{len(sections)}", f"Stages: {paths[0].name} → {later.name}",
                             img(fig, "stages", caption)))  # fmt: skip
    subs = []
    for i, p in enumerate(paths):
        sub, parts = _sweep_parts(p) if _is_sweep(p) else _run_parts(p)
        subs.append(sub)
        sections += [(f"p{i}-{sid}", f"{p.name}: {heading}", html_) for sid, heading, html_ in parts]
    title = "csrl report: " + " → ".join(p.name for p in paths)
    return page(title, " | ".join(subs), sections)


def build_report(path: Path | str, *more: Path | str) -> str:
    """The HTML of a run folder or a sweep folder (one with ``sweep.json``); with ``more`` folders, one page
    for all of them in training order (:func:`stages_report`)."""
    paths = [Path(path), *(Path(m) for m in more)]
    for p in paths:
        _check_folder(p)
    if len(paths) > 1:
        return stages_report(paths)
    p = paths[0]
    return sweep_report(p) if _is_sweep(p) else run_report(p)


def page_figures(page_html: str) -> dict[str, bytes]:
    """The PNG figures of a report page by name (``<img alt>``; a repeated name gets ``-2``, ``-3``, ...)."""
    out: dict[str, bytes] = {}
    for alt, data in re.findall(r'<img alt="([^"]*)" src="data:image/png;base64,([A-Za-z0-9+/=]+)">', page_html):
        name = re.sub(r"[^A-Za-z0-9_.-]+", "_", html.unescape(alt)) or "figure"
        key, k = name, 1
        while key in out:
            k += 1
            key = f"{name}-{k}"
        out[key] = base64.b64decode(data)
    return out


def write_report(
    path: Path | str,
    out: Path | str | None = None,
    *,
    more: Sequence[Path | str] = (),
    figures_dir: Path | str | None = None,
) -> Path:
    """Write the report atomically (default ``<path>/report.html``); with ``figures_dir``, also every figure
    of the page as ``<figures_dir>/<name>.png`` (for a paper or the docs)."""
    target = Path(out) if out is not None else Path(path) / "report.html"
    page_html = build_report(path, *more)
    atomic_write_text(target, page_html)
    if figures_dir is not None:
        for name, data in page_figures(page_html).items():
            atomic_write_bytes(Path(figures_dir) / f"{name}.png", data)
    return target


__all__ = ["build_report", "page_figures", "run_report", "stages_report", "sweep_report", "write_report"]
