"""The model card: Hugging Face metadata, the real base model, the protocol, the training settings, citations."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from csrl.evaluate.sts import STSResults, TaskResult, markdown_table
from csrl.models.card import (
    CITATIONS,
    MODEL_ID_PLACEHOLDER,
    PROTOCOL,
    CardFacts,
    hub_base_model,
    model_card,
    set_model_id,
    sts_scores_from_markdown,
)
from csrl.models.encoder import Encoder, default_model_path
from csrl.models.save import save_encoder

FACTS = CardFacts(
    modules=["Transformer", "Pooling", "Normalize"],
    pooler="mean",
    head="none",
    head_at_inference=False,
    embedding_dim=384,
    max_seq_length=256,
)
TRAIN = {
    "model": {"model": "embedded:all-MiniLM-L6-v2", "pooler": "mean", "head": "auto", "mlp_only_train": True},
    "data": {"train_files": ["train/wiki/wiki1m_for_simcse.head.txt"], "max_length": 32, "max_sentences": 6400},
    "loss": {"name": "arccon", "params": {"margin": 10.0, "temperature": 0.05}},
    "train": {"batch_size": 64, "lr": 5e-5, "max_steps": 100, "seed": 42, "eval_every": 25, "precision": "bf16"},
}
SCORES = {
    "STS12": 72.04,
    "STS13": 79.7,
    "STS14": 74.31,
    "STS15": 80.94,
    "STS16": 78.21,
    "STS-B": 78.87,
    "SICK-R": 71.08,
}


def _front_matter(card: str) -> dict:
    assert card.startswith("---\n")
    return yaml.safe_load(card.split("---\n")[1])


def _results(scores: dict[str, float]) -> STSResults:
    tasks = [TaskResult(n, n, 10, {}, {"all": v, "mean": v, "wmean": v}, {"all": v}) for n, v in scores.items()]
    return STSResults(tasks)


def test_metadata_follows_the_hub_conventions() -> None:
    card = model_card(FACTS, base_model="sentence-transformers/all-MiniLM-L6-v2", train_config=TRAIN, results=SCORES)
    meta = _front_matter(card)
    assert meta["base_model"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert meta["library_name"] == "sentence-transformers" and meta["pipeline_tag"] == "sentence-similarity"
    assert meta["datasets"] == ["princeton-nlp/datasets-for-simcse"]
    assert {"sentence-transformers", "sentence-similarity", "loss:arccon"} <= set(meta["tags"])
    results = meta["model-index"][0]["results"]
    got = {r["dataset"]["name"].split(" ")[0]: r["metrics"][0]["value"] for r in results}
    assert got == SCORES
    assert all(r["metrics"][0]["type"] == "spearman_cosine" for r in results)
    assert results[0]["dataset"]["type"] == "mteb/sts12-sts" and results[0]["task"]["type"] == "semantic-similarity"


def test_text_states_protocol_training_and_citations() -> None:
    card = model_card(FACTS, base_model="sentence-transformers/all-MiniLM-L6-v2", train_config=TRAIN, results=SCORES)
    assert PROTOCOL in card and "`all` aggregate" in card and "x 100" in card
    assert "| batch size | 64 |" in card and "| learning rate | 5e-05" in card and "100 steps" in card
    assert "(first 6400 records)" in card and '"margin": 10.0' in card
    assert "gao2021simcse" in card and "zhang2022arccse" in card and "reimers2019sentencebert" in card
    assert "| this model | 72.04 | 79.70 | 74.31 | 80.94 | 78.21 | 78.87 | 71.08 |" in card  # the scores as a table
    assert f'SentenceTransformer("{MODEL_ID_PLACEHOLDER}")' in card
    assert 'SentenceTransformer("me/x")' in set_model_id(card, "me/x")


@pytest.mark.parametrize("loss", sorted(CITATIONS))
def test_every_registered_loss_has_a_citation_entry(loss: str) -> None:
    from csrl.losses import loss_names

    assert loss in loss_names()
    card = model_card(FACTS, base_model=None, train_config={**TRAIN, "loss": {"name": loss, "params": {}}})
    assert "gao2021simcse" in card and "base_model" not in _front_matter(card)


def test_scores_read_back_from_csrl_table() -> None:
    table = markdown_table({"before training": _results(dict.fromkeys(SCORES, 50.0)), "after": _results(SCORES)})
    got = sts_scores_from_markdown(table)
    assert {k: got[k] for k in SCORES} == SCORES and got["Avg"] == pytest.approx(
        np.mean(list(SCORES.values())), abs=0.01
    )
    meta = _front_matter(model_card(FACTS, base_model="a/b", results_md=table))
    assert len(meta["model-index"][0]["results"]) == 7


def test_base_model_names(tmp_path: Path) -> None:
    assert hub_base_model("embedded:all-MiniLM-L6-v2") == "sentence-transformers/all-MiniLM-L6-v2"
    assert hub_base_model(default_model_path()) == "sentence-transformers/all-MiniLM-L6-v2"
    assert hub_base_model("bert-base-uncased") == "bert-base-uncased"
    assert (
        hub_base_model("princeton-nlp/unsup-simcse-bert-base-uncased") == "princeton-nlp/unsup-simcse-bert-base-uncased"
    )
    assert hub_base_model(str(tmp_path)) is None  # a local folder of unknown origin
    run_best = tmp_path / "runs" / "q10" / "best"
    run_best.mkdir(parents=True)
    (run_best / "csrl_encoder.json").write_text(json.dumps({"base_model": "google-bert/bert-base-uncased"}))
    assert hub_base_model(str(run_best)) == "google-bert/bert-base-uncased"  # a csrl run: its own base


def test_saved_best_model_card_names_the_base_not_the_run_folder(tiny_model_dir: Path, tmp_path: Path) -> None:
    """The run's best/ folder is reloaded and saved again at the end of training (``finish``): the card must
    still name the base model of the training config, not ``runs/.../best``."""
    best = tmp_path / "runs" / "q10" / "best"
    train = {**TRAIN, "model": {**TRAIN["model"], "model": "bert-base-uncased"}}
    enc = Encoder.from_pretrained(model=str(tiny_model_dir), pooler="mean")
    save_encoder(enc, best, train_config=train)
    again = Encoder.from_pretrained(model=str(best))
    table = markdown_table({"after training (best dev)": _results(SCORES)})
    save_encoder(again, best, train_config=train, results_md=table)
    card = (best / "README.md").read_text()
    meta = _front_matter(card)
    assert meta["base_model"] == "bert-base-uncased" and str(best) not in card
    assert len(meta["model-index"][0]["results"]) == 7
    # a model trained from this run names the run's base
    assert hub_base_model(str(best)) == "bert-base-uncased"
