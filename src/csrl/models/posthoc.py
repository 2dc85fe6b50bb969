"""Post-hoc isotropy: BERT-whitening and all-but-the-top, fitted on a corpus and saved into the model folder.

Both are affine maps ``y = (x - mu) M`` of the sentence embedding ``x`` (a row vector), fitted once on the
embeddings of a corpus, with no training:

- **whitening** (Su et al., 2021, "Whitening Sentence Representations for Better Semantics and Faster
  Retrieval"): ``mu`` = the corpus mean, ``Sigma`` = the covariance, ``Sigma = U Lambda U^T``,
  ``M = W = U Lambda^{-1/2}``; keeping the first ``k`` columns of ``W`` reduces the dimension to ``k``
  (the directions of largest variance). On the fit corpus the output has mean 0 and covariance ``I_k``.
- **all-but-the-top** (ABTT; Mu & Viswanath, ICLR 2018, "All-but-the-Top: Simple and Effective
  Postprocessing for Word Representations"): subtract ``mu``, then remove the projections on the top ``D``
  principal directions ``u_1 .. u_D``: ``M = I - sum_{i<=D} u_i u_i^T`` (the paper's ``D ~ d/100``;
  :func:`default_components`). The output keeps the dimension, has mean 0 on the fit corpus, and no
  component along ``u_1 .. u_D``.

Numerical choices (the fit runs in float64 on the float32 embeddings):

- ``Sigma`` is the unbiased covariance ``Xc^T Xc / (n - 1)`` (``Xc`` = centred embeddings), as Su et al.'s
  code (``np.cov``); its eigen-decomposition is taken from the SVD of ``Xc / sqrt(n - 1)`` (``Lambda`` =
  the squared singular values, ``U`` = the right singular vectors), which never forms ``Sigma`` and so
  does not square the condition number.
- whitening divides by ``sqrt(lambda_i)``: a direction whose variance is below ``rcond * lambda_1``
  (default :data:`RCOND` = 1e-7, about float32's resolution) carries rounding noise, not signal, and
  whitening it would scale that noise to unit variance. Such directions are never regularised with an
  epsilon (the output covariance would then silently not be the identity); they are left out instead:
  ``dims=None`` keeps the ``r`` directions above the floor (the numerical rank; ``d - 1`` for a
  LayerNorm-final transformer, whose pooled vectors lie on a hyperplane), recorded as the output
  dimension, and an explicit ``dims > r`` is refused with ``r`` named (a corpus of ``n`` sentences spans
  at most ``n - 1`` directions: fit on more sentences).
- the map is stored in float32 (what sentence-transformers runs); applying it to float32 embeddings
  agrees with the float64 formula to about ``1e-7 * |x| / sqrt(lambda_min)`` per coordinate.

Where it goes: a sentence-transformers ``Dense`` module with the identity activation (``weight = M^T``,
``bias = -mu M``) placed on the model's final embedding, just before the folder's trailing ``Normalize``
modules if it has any: after the pooling, a csrl head kept at inference and any ``Dense`` projection of the
folder, so it maps exactly the vectors it was fitted on. A trailing ``Normalize`` (all-MiniLM-L6-v2 ends
with one) is kept after it: the folder's output convention (unit vectors, so dot product = cosine) stays,
and cosine similarity, what both papers evaluate, is the same with or without it (it rescales each vector
by a positive number). A folder without ``Normalize`` gets none. Training from such a folder optimises
the pooled vector and keeps the fitted map as it was: fit it again afterwards.

The corpus is named explicitly and recorded (``csrl_posthoc.json`` in the module's folder, and a section
of the model card); a corpus file that is one of the STS/SICK test files of the data folder is refused
(:func:`check_not_test_file`): fitting on test text is a leak.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from csrl.errors import CsrlError
from csrl.models.encoder import Encoder, load_encoder

METHODS = ("whitening", "abtt")
RCOND = 1e-7
POSTHOC_RECORD = "csrl_posthoc.json"
# files under <data>/sts that are training or development splits; every other file there is test text
_NOT_TEST = frozenset({"sts-train.csv", "sts-dev.csv", "SICK_train.txt", "SICK_trial.txt"})
_REFERENCES = {
    "whitening": "Su, Cao, Liu, Ou (2021), Whitening Sentence Representations for Better Semantics and Faster "
    "Retrieval, arXiv:2103.15316",
    "abtt": "Mu, Viswanath (2018), All-but-the-Top: Simple and Effective Postprocessing for Word "
    "Representations, ICLR 2018, arXiv:1702.01417",
}


@dataclass(frozen=True)
class PosthocTransform:
    """``y = (x - mean) @ matrix``, fitted in float64.

    eigenvalues: the covariance spectrum of the fit embeddings, descending (``Lambda``). dims: the output
    dimension. components: ABTT's ``D`` (None for whitening).
    """

    method: str
    mean: np.ndarray  # (d,)
    matrix: np.ndarray  # (d, dims)
    eigenvalues: np.ndarray  # (min(n, d),)
    n_sentences: int
    components: int | None = None
    rcond: float = RCOND

    @property
    def input_dim(self) -> int:
        return int(self.matrix.shape[0])

    @property
    def dims(self) -> int:
        return int(self.matrix.shape[1])

    def apply(self, x: np.ndarray) -> np.ndarray:
        """The map in float64 (the reference the saved float32 module is checked against)."""
        return (np.asarray(x, dtype=np.float64) - self.mean) @ self.matrix

    def float32_error(self, x: np.ndarray) -> float:
        """The scale of float32 rounding in the saved module's output on rows ``x``: ``eps32 * max(|x| |M| +
        |mu M|)`` (a dot product of float32 terms is off by a few ``eps32`` times the sum of their magnitudes;
        the bias ``-mu M`` cancels most of ``x M``, so directions of tiny variance, with large ``M``, raise it)."""
        a = np.abs(np.asarray(x, dtype=np.float64)) @ np.abs(self.matrix) + np.abs(self.mean @ self.matrix)
        return float(np.finfo(np.float32).eps * a.max())

    def dense(self) -> nn.Module:
        """The map as sentence-transformers' ``Dense`` (identity activation): ``W^T x + b`` with ``W^T =
        matrix^T`` and ``b = -mean @ matrix`` (the bias computed in float64, then stored in float32)."""
        from sentence_transformers.base.modules import Dense

        weight = torch.from_numpy(np.ascontiguousarray(self.matrix.T)).float()
        bias = torch.from_numpy(-(self.mean @ self.matrix)).float()
        return Dense(self.input_dim, self.dims, bias=True, activation_function=nn.Identity(),
                     init_weight=weight, init_bias=bias)  # fmt: skip


def _spectrum(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mean, eigenvalues descending, eigenvectors as columns) of the unbiased covariance of the rows of ``x``."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 2:
        raise CsrlError(f"need at least 2 embeddings to fit, got an array of shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise CsrlError("the embeddings contain NaN or Inf values", hint="the model gives non-finite vectors")
    mean = x.mean(axis=0)
    _, s, vt = np.linalg.svd((x - mean) / np.sqrt(x.shape[0] - 1), full_matrices=False)
    return mean, s**2, vt.T


def fit_whitening(x: np.ndarray, dims: int | None = None, *, rcond: float = RCOND) -> PosthocTransform:
    """BERT-whitening of the rows of ``x`` (``(n, d)``) to ``dims`` output dimensions.

    None: every direction of non-negligible variance (the numerical rank ``r``, see the module's notes). That
    is usually ``d - 1``, not ``d``: a transformer's last LayerNorm centres each token vector over its
    coordinates, so pooled vectors lie on a hyperplane and ``Sigma`` has one zero eigenvalue (up to rounding)
    that whitening must not divide by. An explicit ``dims`` above ``r`` is refused.
    """
    d = int(np.shape(x)[1]) if np.ndim(x) == 2 else 0
    if dims is not None and not 1 <= dims <= d:
        raise CsrlError(f"dims={dims} is out of range for {d}-dim embeddings", hint=f"use 1 <= dims <= {d}")
    if not 0 < rcond < 1:
        raise CsrlError(f"rcond={rcond} must lie in (0, 1)")
    mean, lam, u = _spectrum(x)
    usable = int(np.sum(lam > rcond * lam[0])) if lam[0] > 0 else 0
    if usable == 0:
        raise CsrlError(f"the {len(x)} fit embeddings are all equal: there is no variance to whiten")
    k = usable if dims is None else dims
    if k > usable:
        raise CsrlError(
            f"whitening to {k} dimensions needs {k} directions of non-negligible variance; the {len(x)} fit "
            f"sentences give {usable} (variance above {rcond:g} x the largest)",
            hint=f"pass dims <= {usable} (--dims), or fit on more sentences (n sentences span at most n - 1 "
            "directions)",
        )
    w = u[:, :k] / np.sqrt(lam[:k])
    return PosthocTransform("whitening", mean, w, lam, len(x), rcond=rcond)


def default_components(dim: int) -> int:
    """ABTT's ``D``: the paper's ``d / 100``, rounded, at least 1."""
    return max(1, round(dim / 100))


def fit_abtt(x: np.ndarray, components: int | None = None) -> PosthocTransform:
    """All-but-the-top of the rows of ``x``: centre, then remove the top ``components`` principal directions."""
    d = int(np.shape(x)[1]) if np.ndim(x) == 2 else 0
    D = default_components(d) if components is None else components
    if not 0 <= D < d:
        raise CsrlError(f"components={D} is out of range for {d}-dim embeddings", hint=f"use 0 <= components < {d}")
    mean, lam, u = _spectrum(x)
    if D > len(lam):
        raise CsrlError(f"{len(x)} sentences give only {len(lam)} principal directions, fewer than components={D}")
    top = u[:, :D]
    return PosthocTransform("abtt", mean, np.eye(d) - top @ top.T, lam, len(x), components=D)


def fit_transform(x: np.ndarray, method: str, *, dims: int | None = None, components: int | None = None,
                  rcond: float = RCOND) -> PosthocTransform:  # fmt: skip
    """Either fit by name (``whitening`` takes ``dims``, ``abtt`` takes ``components``)."""
    if method == "whitening":
        if components is not None:
            raise CsrlError("components applies to method abtt, not whitening", hint="use dims for whitening")
        return fit_whitening(x, dims, rcond=rcond)
    if method == "abtt":
        if dims is not None:
            raise CsrlError("dims applies to method whitening, not abtt", hint="ABTT keeps the dimension")
        return fit_abtt(x, components)
    raise CsrlError(f"unknown post-hoc method {method!r}", hint=f"valid methods: {', '.join(METHODS)}")


# ----------------------------------------------------------------------------------------- the corpus
def check_not_test_file(path: Path, data_dir: Path | None) -> None:
    """Refuse a corpus file that is STS/SICK test text of ``data_dir``: any file under ``<data>/sts``
    (STS12-16, the STS-B and SICK-R test splits, their raw copies and variants) except the STS-B and SICK
    train/dev splits, or a file elsewhere with the same bytes as one of them. ``data_dir`` None: the default
    data folder (:func:`csrl.data.sts.default_data_dir`), as for evaluation."""
    if data_dir is None:
        from csrl.data.sts import default_data_dir

        data_dir = default_data_dir()
    root = Path(data_dir).expanduser() / "sts"
    if not root.is_dir():
        return
    real = path.resolve()
    tests = [f for f in sorted(root.rglob("*")) if f.is_file() and f.name not in _NOT_TEST]
    hint = "fitting on the evaluation's test sentences leaks them into the model; fit on training text (e.g. " \
        "train/wiki/wiki1m_for_simcse.txt) or the STS-B / SICK train split"  # fmt: skip
    size, digest = real.stat().st_size, None
    for f in tests:
        if f.resolve() == real:
            raise CsrlError(f"{path} is an STS/SICK test file of the data folder {data_dir}", hint=hint)
        if f.stat().st_size == size:
            digest = digest or _sha256(real)
            if _sha256(f) == digest:
                raise CsrlError(f"{path} has the same content as the STS/SICK test file {f}", hint=hint)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_corpus(
    corpus: Path | str | Sequence[str], *, limit: int | None = None, data_dir: Path | None = None
) -> tuple[list[str], str]:
    """(sentences, description): a file's non-blank lines (the test-file rule checked) or a list as given;
    the first ``limit`` only (None: all)."""
    if limit is not None and limit < 1:
        raise CsrlError(f"limit={limit} must be a positive number of sentences")
    if isinstance(corpus, str | os.PathLike):
        from csrl.data.corpora import read_lines

        path = Path(corpus).expanduser()
        if not path.is_file():
            raise CsrlError(f"corpus file {path} not found", hint="pass a UTF-8 text file with one sentence per line")
        check_not_test_file(path, data_dir)
        sentences, source = [s for s in read_lines(path, what="corpus file") if s.strip()], str(path)
    else:
        if not all(isinstance(s, str) for s in corpus):
            raise CsrlError("the corpus must be a file path or a sequence of strings")
        sentences, source = [s for s in corpus if s.strip()], "sentences given in the Python call"
    if limit is not None:
        sentences = sentences[:limit]
    return sentences, source


# --------------------------------------------------------------------------------- the model folder
def _insert_position(enc: Encoder) -> int:
    """Index in ``enc.tail`` before the trailing ``Normalize`` modules (the map acts on the final vector)."""
    from sentence_transformers.base.modules import Normalize

    pos = len(enc.tail)
    while pos > 0 and isinstance(enc.tail[pos - 1], Normalize):
        pos -= 1
    return pos


def fit_embeddings(enc: Encoder, sentences: Sequence[str], *, batch_size: int = 128) -> np.ndarray:
    """The vectors the map will act on: ``encode`` in float32 with the tail cut before its trailing Normalize."""
    pos = _insert_position(enc)
    full = enc.tail
    enc.tail = nn.ModuleList(list(full)[:pos])
    try:
        return enc.encode(list(sentences), batch_size=batch_size)
    finally:
        enc.tail = full


@dataclass
class PosthocResult:
    """What :func:`fit_posthoc` wrote: the folder, the transform, and the record kept beside the module."""

    out: Path
    transform: PosthocTransform
    record: dict[str, Any] = field(default_factory=dict)


def _record(t: PosthocTransform, model: str, source: str, sentences: Sequence[str], normalized: bool,
            module_path: str, x: np.ndarray) -> dict[str, Any]:  # fmt: skip
    from csrl import __version__

    return {
        "method": t.method,
        "reference": _REFERENCES[t.method],
        "model": model,
        "corpus": source,
        "corpus_sentences": len(sentences),
        "corpus_sha256": hashlib.sha256("\n".join(sentences).encode("utf-8")).hexdigest(),
        "input_dim": t.input_dim,
        "output_dim": t.dims,
        "components": t.components,
        "rcond": t.rcond if t.method == "whitening" else None,
        "covariance": "unbiased (n - 1), eigen-decomposition from the SVD of the centred embeddings, float64",
        "eigenvalues_top": [float(v) for v in t.eigenvalues[:10]],
        "eigenvalue_min_kept": float(t.eigenvalues[t.dims - 1]) if t.method == "whitening" else None,
        "float32_error_estimate": t.float32_error(x),
        "module": module_path,
        "normalized_after": normalized,
        "csrl_version": __version__,
    }


def _card_section(rec: dict[str, Any]) -> str:
    what = (
        f"BERT-whitening to {rec['output_dim']} dimensions"
        if rec["method"] == "whitening"
        else f"all-but-the-top (the top {rec['components']} principal directions removed)"
    )
    after = "then the folder's Normalize" if rec["normalized_after"] else "no normalisation after it"
    return (
        "\n## Post-hoc isotropy\n\n"
        f"The embedding is post-processed by {what}: the Dense module `{rec['module']}` (identity activation) "
        f"maps `x -> (x - mu) M`, {after}. It was fitted with csrl {rec['csrl_version']} on "
        f"{rec['corpus_sentences']} sentences of `{rec['corpus']}` (sha256 of the sentences joined by newlines: "
        f"`{rec['corpus_sha256']}`), embedded by `{rec['model']}`; the details are in "
        f"`{rec['module']}/{POSTHOC_RECORD}`. Reference: {rec['reference']}.\n"
    )


def fit_posthoc(
    model: str | Path,
    corpus: Path | str | Sequence[str],
    *,
    method: str = "whitening",
    dims: int | None = None,
    components: int | None = None,
    out: Path | str,
    limit: int | None = None,
    pooler: str | None = None,
    data_dir: Path | str | None = None,
    batch_size: int = 128,
    device: str | None = None,
    rcond: float = RCOND,
    overwrite: bool = False,
) -> PosthocResult:
    """Fit ``method`` on the embeddings ``model`` gives for ``corpus`` and save the model with the map to ``out``.

    corpus: a text file (one sentence per line, blank lines skipped; refused when it is STS/SICK test
    text of ``data_dir``, see :func:`check_not_test_file`) or a list of sentences; ``limit``: its first N.
    dims: whitening's output dimension (None: all). components: ABTT's ``D`` (None: :func:`default_components`).
    out: a new folder (an existing non-empty one only with ``overwrite``; never the model's own folder).
    """
    from csrl.models.encoder import resolve_model_name
    from csrl.models.save import save_encoder
    from csrl.utils.io import atomic_dir

    if method not in METHODS:
        raise CsrlError(f"unknown post-hoc method {method!r}", hint=f"valid methods: {', '.join(METHODS)}")
    out = Path(out).expanduser()
    source_dir = Path(resolve_model_name(str(model))).expanduser()
    if source_dir.exists() and out.resolve() == source_dir.resolve():
        raise CsrlError(f"the output folder {out} is the model's own folder", hint="write to a new folder (--out)")
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise CsrlError(f"the output folder {out} exists and is not empty", hint="choose a new folder, or overwrite")
    sentences, source = read_corpus(corpus, limit=limit, data_dir=Path(data_dir) if data_dir else None)
    enc = load_encoder(str(model), pooler=pooler, device=device)
    x = fit_embeddings(enc, sentences, batch_size=batch_size)
    t = fit_transform(x, method, dims=dims, components=components, rcond=rcond)
    pos = _insert_position(enc)
    enc.tail = nn.ModuleList([*list(enc.tail)[:pos], t.dense(), *list(enc.tail)[pos:]])
    normalized = pos < len(enc.tail) - 1
    with atomic_dir(out) as tmp:
        save_encoder(enc, tmp)
        modules = json.loads((tmp / "modules.json").read_text(encoding="utf-8"))
        index = len(modules) - (len(enc.tail) - pos)  # the map's place in modules.json
        module_path = str(modules[index]["path"])
        rec = _record(t, str(model), source, sentences, normalized, module_path, x)
        (tmp / module_path / POSTHOC_RECORD).write_text(json.dumps(rec, indent=2), encoding="utf-8")
        with open(tmp / "README.md", "a", encoding="utf-8") as f:
            f.write(_card_section(rec))
    return PosthocResult(out, t, rec)


__all__ = [
    "METHODS",
    "POSTHOC_RECORD",
    "RCOND",
    "PosthocResult",
    "PosthocTransform",
    "check_not_test_file",
    "default_components",
    "fit_abtt",
    "fit_embeddings",
    "fit_posthoc",
    "fit_transform",
    "fit_whitening",
    "read_corpus",
]
