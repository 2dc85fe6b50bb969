"""``csrl eval`` as a library function: STS (SentEval protocol) and transfer tasks for one model."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, cast

from csrl.data.sts import default_data_dir, load_sts_suite
from csrl.errors import CsrlError
from csrl.evaluate.sts import STSResults, evaluate_sts, markdown_table
from csrl.evaluate.transfer import TransferResults, evaluate_transfer
from csrl.models.encoder import load_encoder
from csrl.utils.io import atomic_write_json
from csrl.utils.precision import autocast_dtype

TASK_GROUPS = ("sts", "transfer")


@dataclass
class Evaluation:
    """The results of :func:`evaluate_model` (a group not asked for is None)."""

    label: str
    pooler: str
    precision: str
    aggregate: str
    sts: STSResults | None = None
    transfer: TransferResults | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.sts is not None:
            out["sts"] = json.loads(self.sts.to_json())
        if self.transfer is not None:
            out["transfer"] = json.loads(self.transfer.to_json())
        return out

    def sts_markdown(self) -> str:
        assert self.sts is not None
        return markdown_table({self.label: self.sts}, aggregate=self.aggregate)


def parse_task_groups(text: str) -> set[str]:
    tasks = {t.strip() for t in text.split(",") if t.strip()}
    unknown = tasks - set(TASK_GROUPS)
    if unknown:
        raise CsrlError(
            f"unknown task group(s) {', '.join(sorted(unknown))}", hint="use --tasks sts, transfer or sts,transfer"
        )
    return tasks


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
) -> Evaluation:
    """Evaluate ``model`` on the task groups in ``tasks`` (``sts``, ``transfer``); JSON to ``output`` if given.

    Every distinct sentence is encoded once (STS), or all distinct sentences in one length-sorted call
    (transfer). ``precision``: fp32 (reproduces papers.md 4.1), bf16 or fp16 autocast.
    """
    groups = parse_task_groups(tasks)
    enc = load_encoder(model, pooler=pooler, device=device)
    dtype = autocast_dtype(precision, enc.device.type, setting="--precision")

    def encode(sentences: Any) -> Any:
        return enc.encode(sentences, batch_size=batch_size, autocast_dtype=dtype)

    result = Evaluation(f"{Path(model).name or model} ({enc.pooler})", enc.pooler, precision, aggregate)
    if "sts" in groups:
        result.sts = evaluate_sts(encode, load_sts_suite(data_dir), aggregate=aggregate)
    if "transfer" in groups:
        # one call: the encoder sorts all distinct sentences by token count and batches them itself
        features = cast(Literal["senteval", "full"], mrpc_features)
        root = data_dir if data_dir is not None else default_data_dir()
        result.transfer = evaluate_transfer(encode, root, protocol=protocol, batch_size=None, pair_features=features)
    if output is not None:
        atomic_write_json(Path(output), result.to_dict())
    return result


__all__ = ["TASK_GROUPS", "Evaluation", "evaluate_model", "parse_task_groups"]
