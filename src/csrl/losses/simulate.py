"""Paper B's simulation of GD, W and R (Section 3.1; papers.md 1.4), vectorised in torch.

Each simulated batch is one anchor with one positive at angle theta_pos ~ N(mu_pos, 0.05) and
``negatives`` negatives at theta_neg ~ N(mu_neg, 0.10) (radians, similarities cos theta). Per grid point
(mu_pos in [0.05 pi, 0.5 pi] x mu_neg in [0.05 pi, pi]) ``anchors`` batches are averaged. Angles are
read back as arccos(cos theta) in [0, pi] wherever an angle (not a cosine) enters a formula.

The losses' hyper-parameters are their declared ``paper_defaults`` (``loss_traits(name)``: InfoNCE tau
0.05, ArcCon tau 0.05 and u = 10 deg, MPT m 0.23, MET m 0.45) and GD and R are the loss files' own
per-anchor formulas (``info_nce_gd``, ``arccon_positive``, ``arccon_ratio``, ``mpt_gd``, ``met_gd``,
``met_ratio``), the ones their ``paradigm_closed_form`` uses, evaluated on the simulated cosines.

- GD maps (Fig. 2) of InfoNCE, ArcCon, MPT and MET.
- W (Fig. 3): share of the hardest negative e^{s_max/tau} / sum_j e^{s_j/tau} for each tau in
  :data:`TEMPERATURES`, mean over batches with InfoNCE GD >= 1e-2 at that tau, at mu_pos = 0.5 rad (the
  reference's setting) along the mu_neg axis (NaN where no batch qualifies).
- R maps (Fig. 4): ArcCon sin(theta_pos + u)/sin(theta_pos) and MET d_hard/d_pos, averaged over the
  batches where the positive is closer than the hardest negative and GD has not dissipated (ArcCon
  GD >= 1e-2, MET GD = 1); a grid point is masked (NaN) when fewer than half of its batches qualify.
"""

from __future__ import annotations

import csv
import json
import math
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import torch
from torch import Tensor

from csrl.losses._functional import safe_arccos
from csrl.losses.arccon import arccon_positive, arccon_ratio
from csrl.losses.infonce import info_nce_gd
from csrl.losses.registry import loss_traits
from csrl.losses.triplet import met_gd, met_ratio, mpt_gd

POS_STD, NEG_STD = 0.05, 0.10
POS_RANGE, NEG_RANGE = (0.05 * math.pi, 0.5 * math.pi), (0.05 * math.pi, math.pi)
TEMPERATURES = (0.3, 0.1, 0.05, 0.03, 0.01, 0.005)
W_MU_POS = 0.5  # radians, as the reference's W experiment
GD_MIN = 1e-2
LOSSES = ("infonce", "arccon", "mpt", "met")


def _paper(name: str, param: str) -> Any:
    """A hyper-parameter of the paper, as the loss declares it (``loss_traits(name).paper_defaults``)."""
    return loss_traits(name).paper_defaults[param]


def _softmax_temperatures() -> list[float]:
    """Every tau a log-sum-exp is needed at: InfoNCE's and ArcCon's paper values and :data:`TEMPERATURES`."""
    return sorted({_paper("infonce", "temperature"), _paper("arccon", "temperature"), *TEMPERATURES})


def _lse(s: Tensor, s_max: Tensor, tau: float) -> Tensor:
    """log sum_j e^{s_j/tau} over the last dim, stable for small tau (shift by the row max)."""
    return s_max / tau + torch.log(torch.exp((s - s_max[..., None]) / tau).sum(dim=-1))


def negative_stats(
    mu_neg: Tensor, anchors: int, negatives: int, gen: torch.Generator, chunk: int = 10
) -> dict[str, Tensor]:
    """Per (mu_neg, batch), (G, anchors): hardest-negative cosine ``s_max`` and ``lse_<tau>`` = log sum_j
    e^{s_j/tau} for the losses' paper temperatures and :data:`TEMPERATURES`. Draws ``chunk`` mu_neg values
    at a time."""
    taus = _softmax_temperatures()
    parts: dict[str, list[Tensor]] = {"s_max": [], **{f"lse_{t:g}": [] for t in taus}}
    for mu in mu_neg.split(chunk):
        s = torch.empty(mu.shape[0], anchors, negatives).normal_(generator=gen)
        s = s.mul_(NEG_STD).add_(mu[:, None, None]).cos_()
        s_max = s.amax(dim=-1)
        parts["s_max"].append(s_max)
        for t in taus:
            parts[f"lse_{t:g}"].append(_lse(s, s_max, t))
    return {k: torch.cat(v) for k, v in parts.items()}


def _row(mu_pos: float, neg: dict[str, Tensor], gen: torch.Generator) -> dict[str, Tensor]:
    """Statistics of one mu_pos row against every mu_neg (G), averaged over the batches; (G,) tensors."""
    s_max = neg["s_max"]
    s_pos = torch.cos(mu_pos + POS_STD * torch.randn(s_max.shape, generator=gen))
    tau, arc_tau = _paper("infonce", "temperature"), _paper("arccon", "temperature")
    arc_u = _paper("arccon", "margin")
    gd = {
        "infonce": info_nce_gd(s_pos / tau, neg[f"lse_{tau:g}"]),
        "arccon": info_nce_gd(arccon_positive(s_pos, arc_u) / arc_tau, neg[f"lse_{arc_tau:g}"]),
        "mpt": mpt_gd(s_pos, s_max, _paper("mpt", "margin")),
        "met": met_gd(s_pos, s_max, _paper("met", "margin")),
    }
    out = {f"gd_{k}": v.mean(dim=1) for k, v in gd.items()}
    for k, v in gd.items():
        out[f"mid_{k}"] = ((v > 1e-6) & (v < 1 - 1e-6)).float().mean(dim=1)
    closer = safe_arccos(s_pos) <= safe_arccos(s_max)
    for name, value, ok in (
        ("arccon", arccon_ratio(s_pos, arc_u), closer & (gd["arccon"] >= GD_MIN)),
        ("met", met_ratio(s_pos, s_max), closer & (gd["met"] > 0)),
    ):
        share = ok.float().mean(dim=1)
        mean = (value * ok).sum(dim=1) / ok.sum(dim=1).clamp_min(1)
        out[f"r_{name}"] = torch.where(share >= 0.5, mean, torch.full_like(mean, float("nan")))
    return out


def gd_r_maps(
    grid: int, anchors: int, negatives: int, gen: torch.Generator, *, share_negatives: bool = True
) -> dict[str, Tensor]:
    """(grid, grid) maps, rows mu_pos, columns mu_neg: ``gd_<loss>``, ``mid_<loss>`` (share of batches
    with GD strictly between 0 and 1), ``r_arccon``, ``r_met``.

    With ``share_negatives`` the negatives drawn for a mu_neg column serve every mu_pos row (common
    random numbers: each grid point still averages ``anchors`` independent batches of the protocol's
    distribution, only neighbouring points share noise), which makes the full grid take seconds.
    Without it every row draws its own negatives (about a minute on 2 cores).
    """
    mu_pos = torch.linspace(*POS_RANGE, grid)
    mu_neg = torch.linspace(*NEG_RANGE, grid)
    neg = negative_stats(mu_neg, anchors, negatives, gen) if share_negatives else {}
    rows = []
    for mp in mu_pos:
        rows.append(_row(float(mp), neg or negative_stats(mu_neg, anchors, negatives, gen), gen))
    return {k: torch.stack([r[k] for r in rows]) for k in rows[0]}


def w_curves(neg: dict[str, Tensor], gen: torch.Generator) -> Tensor:
    """(len(TEMPERATURES), G) hardest-negative share along mu_neg at mu_pos = 0.5 rad, from
    :func:`negative_stats` ``neg``, mean over batches with GD >= 1e-2 at that tau (NaN: none)."""
    s_max = neg["s_max"]
    s_pos = torch.cos(W_MU_POS + POS_STD * torch.randn(s_max.shape, generator=gen))
    curves = []
    for tau in TEMPERATURES:
        lse = neg[f"lse_{tau:g}"]
        share = torch.exp(s_max / tau - lse)
        ok = info_nce_gd(s_pos / tau, lse) >= GD_MIN
        mean = (share * ok).sum(dim=1) / ok.sum(dim=1).clamp_min(1)
        curves.append(torch.where(ok.any(dim=1), mean, torch.full_like(mean, float("nan"))))
    return torch.stack(curves)


def _nanmean(x: Tensor) -> float:
    x = x[~torch.isnan(x)]
    return float(x.mean()) if x.numel() else float("nan")


def summarise(maps: dict[str, Tensor], w: Tensor) -> dict[str, Any]:
    """Numbers behind the paper's qualitative claims (see :func:`simulate`)."""
    grid = maps["gd_infonce"].shape[0]
    mu_pos = torch.linspace(*POS_RANGE, grid)
    mu_neg = torch.linspace(*NEG_RANGE, grid)
    gap = mu_neg[None, :] - mu_pos[:, None]
    nearest = gap.abs().argmin(dim=1)
    far = gap >= 0.25 * math.pi
    gd: dict[str, dict[str, float]] = {}
    for name in LOSSES:
        m = maps[f"gd_{name}"]
        gd[name] = {
            "mean": float(m.mean()),
            "at_equal_angle": float(m[torch.arange(grid), nearest].mean()),
            "neg_closer": _nanmean(m[gap < 0]),
            "neg_far": float(m[far].mean()),
            "intermediate_batch_share": float(maps[f"mid_{name}"].mean()),
        }
    r = {}
    for name in ("arccon", "met"):
        m = maps[f"r_{name}"]
        valid = m[~torch.isnan(m)]
        r[name] = {
            "mean": _nanmean(m),
            "min": float(valid.min()) if valid.numel() else float("nan"),
            "max": float(valid.max()) if valid.numel() else float("nan"),
            "masked_share": float(torch.isnan(m).float().mean()),
        }
    share = {str(t): _nanmean(w[k]) for k, t in enumerate(TEMPERATURES)}
    common = ~torch.isnan(w).any(dim=0)  # mu_neg columns where every tau has qualifying batches
    share_common = {str(t): _nanmean(w[k][common]) for k, t in enumerate(TEMPERATURES)}
    return {"gd": gd, "w_hardest_share": share, "w_hardest_share_common": share_common, "r": r}


def _atomic_write(path: Path, write: Callable[[IO[Any]], None], binary: bool = False) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb" if binary else "w", newline=None if binary else "") as fh:
            write(fh)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _write_csv(path: Path, header: list[str], rows: list[list[float]]) -> None:
    def write(fh: IO[Any]) -> None:
        out = csv.writer(fh)
        out.writerow(header)
        out.writerows([[f"{v:.6g}" for v in row] for row in rows])

    _atomic_write(path, write)


def anchors_text(maps: dict[str, Tensor]) -> str:
    """The grid the maps were computed on, for the figure title."""
    n = maps["gd_infonce"].shape[0]
    return f"{n} x {n} grid of angle pairs"


def _figures(out: Path, maps: dict[str, Tensor], w: Tensor) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grid = maps["gd_infonce"].shape[0]
    ext = [NEG_RANGE[0] / math.pi, NEG_RANGE[1] / math.pi, POS_RANGE[0] / math.pi, POS_RANGE[1] / math.pi]

    def save(fig: Any, name: str) -> None:
        _atomic_write(out / name, lambda fh: fig.savefig(fh, format="png", dpi=110, bbox_inches="tight"), binary=True)
        plt.close(fig)

    x_label = r"mean negative angle $\mu_{\mathrm{neg}} / \pi$"
    y_label = r"positive angle $\mu_{\mathrm{pos}} / \pi$"
    fig, axes = plt.subplots(1, 4, figsize=(16, 3.6), sharey=True)
    for ax, name in zip(axes, LOSSES, strict=True):
        im = ax.imshow(maps[f"gd_{name}"].numpy(), origin="lower", extent=ext, aspect="auto", vmin=0, vmax=1)
        ax.set_title(f"GD: {name}", fontsize=10)
        ax.set_xlabel(x_label)
    axes[0].set_ylabel(y_label)
    fig.colorbar(im, ax=axes.tolist(), label=r"$\mathrm{GD}$ (mean over simulated batches)")
    fig.suptitle(f"paper B's simulation (papers.md 1.4): {anchors_text(maps)}", fontsize=10)
    save(fig, "gd_maps.png")

    fig, ax = plt.subplots(figsize=(6, 4))
    mu_neg = torch.linspace(*NEG_RANGE, grid) / math.pi
    for k, tau in enumerate(TEMPERATURES):
        ax.plot(mu_neg.numpy(), w[k].numpy(), label=rf"$\tau$ = {tau:g}")
    ax.set_xlabel(x_label)
    ax.set_ylabel(r"$W_{\max}$: hardest-negative share of the push")
    ax.set_title(rf"InfoNCE weight W at $\mu_{{\mathrm{{pos}}}}$ = {W_MU_POS} rad, batches with GD $\geq$ {GD_MIN:g}")
    ax.legend()
    save(fig, "w_share.png")

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), sharey=True)
    for ax, name in zip(axes, ("arccon", "met"), strict=True):
        im = ax.imshow(maps[f"r_{name}"].numpy(), origin="lower", extent=ext, aspect="auto", vmin=0, vmax=5)
        ax.set_title(f"R: {name} (blank: GD masked)", fontsize=10)
        ax.set_xlabel(x_label)
    axes[0].set_ylabel(y_label)
    fig.colorbar(im, ax=axes.tolist(), label=r"$R$ (pull / push, mean over simulated batches)")
    save(fig, "r_maps.png")


def simulate(
    out_dir: str | os.PathLike[str],
    *,
    grid: int = 100,
    anchors: int = 1000,
    negatives: int = 127,
    seed: int = 0,
    figures: bool = True,
    share_negatives: bool = True,
) -> dict[str, Any]:
    """Run the simulation of papers.md 1.4 and write its data and figures to ``out_dir``.

    Args: ``grid`` points per axis (100), ``anchors`` simulated batches per point (1000), ``negatives``
    per batch (127 = batch 128 - 1), ``seed`` of the torch.Generator, ``figures`` to draw PNGs,
    ``share_negatives`` to reuse each mu_neg column's negatives across mu_pos rows (see
    :func:`gd_r_maps`; False draws them afresh per row, the reference's literal independence).
    Writes (atomically: temp file in ``out_dir`` then ``os.replace``) ``gd_maps.csv``, ``r_maps.csv``,
    ``w_share.csv``, ``summary.json`` and, with ``figures``, ``gd_maps.png``, ``w_share.png``,
    ``r_maps.png``. Returns the summary: ``gd[loss]`` with ``mean``, ``at_equal_angle`` (mu_neg nearest
    mu_pos), ``neg_closer`` (mu_neg < mu_pos), ``neg_far`` (mu_neg >= mu_pos + pi/4),
    ``intermediate_batch_share`` (batches with 0 < GD < 1; 0 for the MPT/MET switches);
    ``w_hardest_share[tau]`` (mean over mu_neg where defined), ``w_hardest_share_common[tau]`` (mean
    over the mu_neg columns where every tau is defined); ``r[loss]`` mean/min/max/masked_share; ``seconds``.
    Full size takes a few seconds on 2 CPU cores (about a minute with ``share_negatives=False``).
    """
    for name, value in (("grid", grid), ("anchors", anchors), ("negatives", negatives)):
        if value < 2:
            raise ValueError(f"{name} must be >= 2, got {value}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    gen = torch.Generator().manual_seed(seed)
    maps = gd_r_maps(grid, anchors, negatives, gen, share_negatives=share_negatives)
    w = w_curves(negative_stats(torch.linspace(*NEG_RANGE, grid), anchors, negatives, gen), gen)
    summary = summarise(maps, w)
    summary["seconds_compute"] = time.perf_counter() - start
    summary["config"] = {
        "grid": grid,
        "anchors": anchors,
        "negatives": negatives,
        "seed": seed,
        "share_negatives": share_negatives,
    }

    mu_pos = (torch.linspace(*POS_RANGE, grid) / math.pi).tolist()
    mu_neg = (torch.linspace(*NEG_RANGE, grid) / math.pi).tolist()
    cells = [(i, j) for i in range(grid) for j in range(grid)]
    _write_csv(
        out / "gd_maps.csv",
        ["mu_pos_pi", "mu_neg_pi", *LOSSES],
        [[mu_pos[i], mu_neg[j], *(float(maps[f"gd_{k}"][i, j]) for k in LOSSES)] for i, j in cells],
    )
    _write_csv(
        out / "r_maps.csv",
        ["mu_pos_pi", "mu_neg_pi", "r_arccon", "r_met"],
        [[mu_pos[i], mu_neg[j], float(maps["r_arccon"][i, j]), float(maps["r_met"][i, j])] for i, j in cells],
    )
    _write_csv(
        out / "w_share.csv",
        ["mu_neg_pi", "tau", "share"],
        [[mu_neg[j], t, float(w[k, j])] for k, t in enumerate(TEMPERATURES) for j in range(grid)],
    )
    if figures:
        _figures(out, maps, w)
    summary["seconds"] = time.perf_counter() - start
    _atomic_write(out / "summary.json", lambda fh: json.dump(summary, fh, indent=2))
    return summary
