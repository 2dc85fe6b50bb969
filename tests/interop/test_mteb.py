"""csrl encoders as MTEB models: the protocol methods, prompts, and an offline MTEB STS run on local STS-B."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from csrl.data.sts import STSTask, load_sts_task
from csrl.errors import CsrlError
from csrl.evaluate.encoders import as_encode_fn
from csrl.evaluate.sts import cosine_scores, evaluate_sts
from csrl.interop.mteb import MTEBEncoder, select_prompt

needs_mteb = pytest.mark.skipif(importlib.util.find_spec("mteb") is None, reason="mteb is not installed")
STS_TASK = SimpleNamespace(name="STSBenchmark", type="STS")


class _Recorder:
    """An encode function that records what it is given (4-dim vectors from the text length)."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    def __call__(self, batch: list[str]) -> np.ndarray:
        self.seen.extend(batch)
        return np.array([[len(t), 1.0, t.count(" "), 2.0] for t in batch], dtype=np.float32)


def _loader(texts: list[str], size: int = 2) -> list[dict[str, Any]]:
    """What MTEB's DataLoader yields for a text task: batches with a ``text`` column."""
    return [{"text": texts[i : i + size]} for i in range(0, len(texts), size)]


def test_prompt_priority_follows_mteb() -> None:
    prompts = {
        "query": "q: ",
        "STS": "sts: ",
        "STS-query": "sts-q: ",
        "STSBenchmark": "b: ",
        "STSBenchmark-query": "bq: ",
    }

    def pick(p: dict[str, str] | None, prompt_type: str | None = "query") -> str | None:
        return select_prompt(p, task_name="STSBenchmark", task_type="STS", prompt_type=prompt_type)

    assert pick(prompts) == "bq: "
    assert pick({k: v for k, v in prompts.items() if k != "STSBenchmark-query"}) == "b: "
    assert pick({"STS-query": "sts-q: ", "STS": "sts: ", "query": "q: "}) == "sts-q: "
    assert pick({"STS": "sts: ", "query": "q: "}) == "sts: "
    assert pick({"query": "q: "}) == "q: "
    assert pick({"query": "q: "}, prompt_type=None) is None
    assert pick({"document": "d: "}) is None and pick(None) is None


def test_encode_collects_batches_and_applies_the_prompt() -> None:
    rec = _Recorder()
    model = MTEBEncoder(rec, prompts={"STS": "sts: "}, batch_size=2)
    texts = ["a b", "c", "d e f"]
    out = model.encode(_loader(texts), task_metadata=STS_TASK, hf_split="test", hf_subset="default")
    assert rec.seen == ["sts: a b", "sts: c", "sts: d e f"]
    assert out.shape == (3, 4) and out.dtype == np.float32
    plain = MTEBEncoder(rec, prompts={})
    rec.seen.clear()
    plain.encode(_loader(texts), task_metadata=STS_TASK, hf_split="test", hf_subset="default", batch_size=8)
    assert rec.seen == texts


def test_a_second_prompt_on_top_of_a_default_one_is_refused() -> None:
    class WithDefault(_Recorder):
        prompts = {"query": "query: ", "classification": "classify: "}
        default_prompt_name = "classification"

    model = MTEBEncoder(WithDefault())  # the model's own prompts
    assert model.prompts == WithDefault.prompts
    with pytest.raises(CsrlError, match="default prompt 'classify: '") as e:
        model.encode(_loader(["x"]), task_metadata=STS_TASK, hf_split="t", hf_subset="d", prompt_type="query")
    assert "prompts={}" in (e.value.hint or "")
    MTEBEncoder(WithDefault(), prompts={}).encode(
        _loader(["x"]), task_metadata=STS_TASK, hf_split="t", hf_subset="d", prompt_type="query"
    )


def test_non_text_inputs_and_bad_prompts_are_refused() -> None:
    with pytest.raises(CsrlError, match="csrl encoders read text"):
        MTEBEncoder(_Recorder()).encode([{"image": [1]}], task_metadata=STS_TASK, hf_split="t", hf_subset="d")
    with pytest.raises(CsrlError, match="prompts must map strings to strings"):
        MTEBEncoder(_Recorder(), prompts={"query": 3})  # type: ignore[dict-item]
    with pytest.raises(CsrlError, match="pooler= and device= apply when MTEBEncoder loads"):
        MTEBEncoder(_Recorder(), pooler="mean")


def test_similarities_are_csrl_cosines() -> None:
    import torch

    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((5, 8)).astype(np.float32), rng.standard_normal((5, 8)).astype(np.float32)
    a[2] = 0.0  # a zero vector scores 0, as in csrl's protocol
    model = MTEBEncoder(_Recorder())
    pair = model.similarity_pairwise(a, torch.from_numpy(b))
    np.testing.assert_array_equal(pair.numpy(), cosine_scores(a, b))
    full = model.similarity(a, b).numpy()
    np.testing.assert_allclose(np.diag(full), cosine_scores(a, b), atol=1e-12)
    assert full.shape == (5, 5) and full[2].tolist() == [0.0] * 5
    assert model.similarity(a[0], b).shape == (1, 5)


@needs_mteb
def test_model_meta(tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MTEB_CACHE", str(tmp_path / "mteb-cache"))  # importing mteb creates its cache folder
    model = MTEBEncoder(str(tiny_model_dir), pooler="mean", revision="r1")
    meta = model.mteb_model_meta
    assert meta.name == f"csrl/{tiny_model_dir.name}" and meta.revision == "r1"
    assert meta.embed_dim == 32 and meta.n_parameters == sum(p.numel() for p in model.model.parameters())
    assert meta.similarity_fn_name.value == "cosine" and meta.experiment_kwargs == {"pooler": "mean"}
    assert MTEBEncoder(_Recorder(), name="me/mine").mteb_model_meta.name == "me/mine"


def _local_stsb(task: STSTask) -> Any:
    """An MTEB STS task whose data are csrl's STS-B pairs and gold scores (no download)."""
    import datasets
    from mteb.abstasks.sts import AbsTaskSTS
    from mteb.abstasks.task_metadata import TaskMetadata

    pairs = task.subsets[0]

    class LocalSTSB(AbsTaskSTS):
        min_score, max_score = 0, 5
        metadata = TaskMetadata(
            name="CsrlLocalSTSBenchmark",
            dataset={"path": "local/stsb", "revision": "senteval"},
            description="STS-B test from the local SentEval files (sts/stsb/sts-test.csv)",
            reference=None,
            type="STS",
            category="t2t",
            modalities=["text"],
            eval_splits=["test"],
            eval_langs=["eng-Latn"],
            main_score="cosine_spearman",
            date=None,
            domains=None,
            task_subtypes=None,
            license=None,
            annotations_creators=None,
            dialect=None,
            sample_creation=None,
            bibtex_citation=None,
        )

        def load_data(self, num_proc: int | None = None, **kwargs: Any) -> None:
            rows = {
                "sentence1": list(pairs.sentences1),
                "sentence2": list(pairs.sentences2),
                "score": pairs.scores.tolist(),
            }
            self.dataset = {"default": datasets.DatasetDict({"test": datasets.Dataset.from_dict(rows)})}
            self.data_loaded = True

    return LocalSTSB()


@needs_mteb
@pytest.mark.slow
def test_mteb_sts_on_local_stsb_matches_csrl(data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MTEB_CACHE", str(tmp_path / "mteb-cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import mteb

    stsb = load_sts_task("stsb", data_dir, split="test")
    model = MTEBEncoder("embedded:all-MiniLM-L6-v2", pooler="mean")
    result = mteb.evaluate(
        model,
        [_local_stsb(stsb)],
        cache=None,
        co2_tracker=False,
        show_progress_bar=False,
        encode_kwargs={"batch_size": 128},
    )
    assert not result.exceptions
    scores = result.task_results[0].scores["test"][0]
    ours = evaluate_sts(as_encode_fn(model.model), [stsb]).tasks[0].score()
    assert scores["cosine_spearman"] * 100 == pytest.approx(ours, abs=0.01)
    assert scores["spearman"] * 100 == pytest.approx(ours, abs=0.01)  # our similarity_pairwise
    assert ours == pytest.approx(82.03, abs=0.01)  # papers.md 4.1
    assert not any(p.is_file() for p in (tmp_path / "mteb-cache").rglob("*"))  # cache=None: nothing saved
