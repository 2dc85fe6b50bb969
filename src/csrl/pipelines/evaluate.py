"""``csrl eval`` as a library function: STS (SentEval protocol) and transfer tasks for one model."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast

import numpy as np

from csrl.data.manifest import ManifestEntry, check_data_dir, default_manifest
from csrl.data.sts import default_data_dir, load_sts_suite
from csrl.errors import CsrlError
from csrl.evaluate.embed_cache import CacheStats, EmbeddingCache, encoder_encode_fn
from csrl.evaluate.sts import STSResults, evaluate_sts, markdown_table
from csrl.evaluate.transfer import TransferResults, evaluate_transfer
from csrl.models.encoder import load_encoder
from csrl.utils.io import atomic_write_json
from csrl.utils.precision import autocast_dtype, resolve_precision

TASK_GROUPS = ("sts", "transfer")
# What the evaluation reads (csrl.data.sts / csrl.data.transfer), in the data manifest's terms: STS12-16
# read every STS.input.*.txt of their folder and its gold file, STS-B and SICK-R their test split; the
# transfer tasks (SST fine-grained is not one) read every file of their folder.
_STS_YEARS = ("sts12", "sts13", "sts14", "sts15", "sts16")
_STS_TEST_FILES = ("sts/stsb/sts-test.csv", "sts/sickr/SICK_test_annotated.txt")
_TRANSFER_TASKS = ("mr", "cr", "subj", "mpqa", "sst2", "trec", "mrpc")
_STATUS = {"unrecognised": "modified", "variant": "variant", "missing": "missing"}


@dataclass(frozen=True)
class DataCheck:
    """The sha256 of every data file an evaluation reads, against the data manifest (``csrl data check``).

    ``mismatched``: one ``{"path", "status", "detail"}`` per file that is not the standard one; status
    ``modified`` (other bytes), ``variant`` (a known alternative, e.g. another tokenization), ``missing``
    (an STS12-16 sub-dataset then silently drops out of the ``all`` aggregate) or ``unknown`` (a file the
    loader reads that the manifest does not list). Nothing is cached: each evaluation hashes again.
    """

    root: Path
    checked: int
    mismatched: tuple[dict[str, str], ...]
    seconds: float

    @property
    def ok(self) -> bool:
        return not self.mismatched

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "checked": self.checked,
            "mismatched": [dict(m) for m in self.mismatched],
            "seconds": round(self.seconds, 3),
        }

    def summary(self, limit: int = 10) -> str:
        """What differs, one file a line (the first ``limit``)."""
        lines = [
            f"the data under {self.root} differs from the standard files in {len(self.mismatched)} of the "
            f"{self.checked} files this evaluation reads (`csrl data check` lists every file):"
        ]
        lines += [f"  {m['status']}: {m['path']} ({m['detail']})" for m in self.mismatched[:limit]]
        if len(self.mismatched) > limit:
            lines.append(f"  ... and {len(self.mismatched) - limit} more (all of them in the JSON output)")
        return "\n".join(lines)


def _read_by_evaluation(entry: ManifestEntry, groups: set[str]) -> bool:
    year_file = entry.task in _STS_YEARS and entry.required and entry.path.endswith(".txt")  # not *.LICENSE
    if "sts" in groups and (entry.path in _STS_TEST_FILES or year_file):
        return True
    return "transfer" in groups and entry.task in _TRANSFER_TASKS


def check_evaluation_data(
    root: Path, groups: Iterable[str], manifest: Sequence[ManifestEntry] | None = None
) -> DataCheck:
    """Hash the files the task ``groups`` read under ``root`` and compare them with ``manifest`` (default:
    csrl's); STS12-16 inputs the manifest does not list are reported as ``unknown`` (the loader reads them)."""
    start, wanted = time.perf_counter(), set(groups)
    manifest = default_manifest() if manifest is None else manifest
    entries = [e for e in manifest if _read_by_evaluation(e, wanted)]
    report = check_data_dir(root, manifest=entries)
    mismatched = [
        {"path": f.entry.path, "status": _STATUS[f.status], "detail": f.detail or "not found"}
        for f in report.files
        if f.status != "ok"
    ]
    checked, known = len(entries), {e.path for e in manifest}
    if "sts" in wanted:
        for year in _STS_YEARS:
            for p in sorted((root / "sts" / year).glob("STS.input.*.txt")):
                rel = p.relative_to(root).as_posix()
                if rel not in known:
                    checked += 1
                    mismatched.append({"path": rel, "status": "unknown", "detail": "not a standard file"})
    for m in mismatched:
        if m["status"] == "variant":
            m["detail"] = f"the {m['detail']} variant"
    return DataCheck(root, checked, tuple(mismatched), time.perf_counter() - start)


@dataclass
class Evaluation:
    """The results of :func:`evaluate_model` (a group not asked for is None)."""

    label: str
    pooler: str
    precision: str  # what ran (``auto`` resolved)
    aggregate: str
    sts: STSResults | None = None
    transfer: TransferResults | None = None
    data_check: DataCheck | None = None  # None when the data folder does not exist (the loaders say so)
    embedding_cache: CacheStats | None = None  # what the embedding cache did; None when it was off
    sts_dims: dict[int, STSResults] = field(default_factory=dict)  # STS of the first m coordinates (--dims)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"precision": self.precision}
        if self.data_check is not None:
            out["data_check"] = self.data_check.to_dict()
        if self.sts is not None:
            out["sts"] = json.loads(self.sts.to_json())
        if self.sts_dims:
            out["sts_dims"] = {str(m): json.loads(r.to_json()) for m, r in self.sts_dims.items()}
        if self.transfer is not None:
            out["transfer"] = json.loads(self.transfer.to_json())
        return out

    def sts_markdown(self) -> str:
        assert self.sts is not None
        rows = {self.label: self.sts, **{f"{self.label} [:{m}]": r for m, r in self.sts_dims.items()}}
        return markdown_table(rows, aggregate=self.aggregate)


def parse_task_groups(text: str) -> set[str]:
    tasks = {t.strip() for t in text.split(",") if t.strip()}
    unknown = tasks - set(TASK_GROUPS)
    if unknown:
        raise CsrlError(
            f"unknown task group(s) {', '.join(sorted(unknown))}", hint="use --tasks sts, transfer or sts,transfer"
        )
    return tasks


def check_dims(dims: Sequence[int], width: int) -> tuple[int, ...]:
    """``dims`` sorted and deduplicated; CsrlError for a truncation the ``width``-dim embedding does not have."""
    out = tuple(sorted(set(dims)))
    bad = [m for m in out if isinstance(m, bool) or not isinstance(m, int) or not 1 <= m <= width]
    if bad:
        raise CsrlError(
            f"dims {', '.join(map(str, bad))}: the embedding has {width} dimensions",
            hint=f"truncate to between 1 and {width} dimensions (the first m coordinates are kept)",
        )
    return out


class _EncodeOnce:
    """``encode`` that remembers its last call: the full-width STS embeddings are encoded (or read from the
    cache) once and every truncation is a slice of them."""

    def __init__(self, encode: Callable[[Sequence[str]], Any]) -> None:
        self.encode = encode
        self.key: tuple[str, ...] | None = None
        self.value: np.ndarray | None = None

    def __call__(self, sentences: Sequence[str]) -> np.ndarray:
        key = tuple(sentences)
        if self.value is None or key != self.key:
            self.value, self.key = np.asarray(self.encode(sentences)), key
        return self.value

    def truncated(self, m: int) -> Callable[[Sequence[str]], np.ndarray]:
        return lambda sentences: self(sentences)[:, :m]


def evaluate_model(
    model: str,
    *,
    data_dir: Path | None,
    tasks: str = "sts",
    pooler: str | None = None,
    aggregate: str = "all",
    protocol: str = "fasttest",
    mrpc_features: str = "senteval",
    batch_size: int = 128,
    precision: str = "fp32",
    device: str | None = None,
    output: Path | str | None = None,
    strict: bool = False,
    cache: bool | str | Path | EmbeddingCache | None = False,
    dims: Sequence[int] = (),
) -> Evaluation:
    """Evaluate ``model`` on the task groups in ``tasks`` (``sts``, ``transfer``); JSON to ``output`` if given.

    Every distinct sentence is encoded once (STS), or all distinct sentences in one length-sorted call
    (transfer). ``precision``: fp32 (reproduces papers.md 4.1), ``auto`` (bf16 where native, else fp32),
    bf16 or fp16 autocast. The data files read are first checked against the manifest
    (:func:`check_evaluation_data`, in ``result.data_check``); ``strict`` refuses data that differs.
    ``cache``: the embedding cache (:mod:`csrl.evaluate.embed_cache`): True its default folder, a path, or
    an ``EmbeddingCache``; a repeated evaluation of the same model and settings then reads the embeddings
    (bitwise the same) instead of encoding (``result.embedding_cache`` says what it did).
    ``dims``: STS also on the first m coordinates of each embedding, for each m (Matryoshka embeddings):
    encoded once at full width, each truncation scored with the usual cosine (``result.sts_dims``).
    """
    groups = parse_task_groups(tasks)
    root, check = checked_data(data_dir, groups, strict=strict)
    enc = load_encoder(model, pooler=pooler, device=device)
    dims = check_dims(dims, enc.embedding_dim)  # before any encoding
    precision = resolve_precision(precision, enc.device, setting="--precision")
    dtype = autocast_dtype(precision, enc.device.type, setting="--precision")

    encode = encoder_encode_fn(enc, batch_size=batch_size, autocast_dtype=dtype, cache=cache)
    result = Evaluation(f"{Path(model).name or model} ({enc.pooler})", enc.pooler, precision, aggregate)
    result.data_check = check
    result.embedding_cache = encode.stats
    return run_task_groups(
        result, encode, groups, root, protocol=protocol, mrpc_features=mrpc_features, output=output, dims=dims
    )


def checked_data(data_dir: Path | None, groups: set[str], *, strict: bool) -> tuple[Path, DataCheck | None]:
    """The data folder and the sha256 check of the files the evaluation reads; ``strict`` refuses a mismatch."""
    root = data_dir if data_dir is not None else default_data_dir()
    check = check_evaluation_data(root, groups) if root.is_dir() else None
    if strict and check is not None and not check.ok:
        raise CsrlError(
            "strict data check: " + check.summary(),
            hint="restore the standard files (`csrl data fetch --groups sts,transfer`, then `csrl data check`), "
            "or evaluate without --strict (strict=False): the results then carry the mismatch",
        )
    return root, check


def run_task_groups(
    result: Evaluation,
    encode: Callable[[Sequence[str]], Any],
    groups: set[str],
    root: Path,
    *,
    protocol: str,
    mrpc_features: str,
    output: Path | str | None,
    dims: Sequence[int] = (),
) -> Evaluation:
    """Score ``encode`` on the STS suite and/or the transfer tasks into ``result``; JSON to ``output``.
    ``dims``: STS of each truncation too (:func:`evaluate_model`); the transfer tasks use the full width."""
    if "sts" in groups:
        suite = load_sts_suite(root)
        once = _EncodeOnce(encode)
        result.sts = evaluate_sts(once if dims else encode, suite, aggregate=result.aggregate)
        if dims:
            assert once.value is not None
            for m in check_dims(dims, once.value.shape[1]):
                result.sts_dims[m] = evaluate_sts(once.truncated(m), suite, aggregate=result.aggregate)
    if "transfer" in groups:
        # one call: the encoder sorts all distinct sentences by token count and batches them itself
        features = cast(Literal["senteval", "full"], mrpc_features)
        result.transfer = evaluate_transfer(encode, root, protocol=protocol, batch_size=None, pair_features=features)
    if output is not None:
        atomic_write_json(Path(output), result.to_dict())
    return result


__all__ = [
    "TASK_GROUPS",
    "DataCheck",
    "Evaluation",
    "check_dims",
    "check_evaluation_data",
    "checked_data",
    "evaluate_model",
    "parse_task_groups",
    "run_task_groups",
]
