"""The model card (``README.md``) of a saved model, after the sentence-transformers / Hugging Face conventions.

YAML metadata (written by ``huggingface_hub.ModelCardData``): ``base_model`` (the Hub id training started
from, never the run's own folder), ``datasets``, ``library_name: sentence-transformers``, ``pipeline_tag:
sentence-similarity``, ``tags`` and a ``model-index`` with the STS results. The text: the model, its use,
the evaluation protocol stated exactly, the training loss and hyper-parameters, and the citations of the
methods used (:data:`CITATIONS`, by loss name).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MODEL_ID_PLACEHOLDER = "PATH_OR_REPO_ID"  # replaced by the repository id when the model is pushed

EMBEDDED_HUB_ID = "sentence-transformers/all-MiniLM-L6-v2"

PROTOCOL = (
    "SimCSE's SentEval protocol (csrl `evaluate.sts`): the score of a pair is the cosine similarity of its two "
    "embeddings (no regressor); the metric is Spearman's rank correlation with the gold scores, x 100. STS12-16 "
    "report the `all` aggregate: one Spearman over the concatenation of the year's sub-datasets (pairs without a "
    "gold score dropped); STS-B and SICK-R report their test split. Sentences are whitespace-tokenised and "
    "re-joined as SentEval does and are not truncated to the 32 training tokens. Avg is the plain mean of the 7."
)

# Hugging Face Hub datasets of the 7 STS test sets (the same pairs; csrl reads SentEval's copies).
STS_DATASETS = {
    "STS12": "mteb/sts12-sts",
    "STS13": "mteb/sts13-sts",
    "STS14": "mteb/sts14-sts",
    "STS15": "mteb/sts15-sts",
    "STS16": "mteb/sts16-sts",
    "STS-B": "mteb/stsbenchmark-sts",
    "SICK-R": "mteb/sickr-sts",
}

# training files (by name) -> the Hub dataset they come from
TRAIN_DATASETS = {
    "wiki1m_for_simcse": "princeton-nlp/datasets-for-simcse",
    "nli_for_simcse": "princeton-nlp/datasets-for-simcse",
    "snli": "stanfordnlp/snli",
}

_SBERT = """@inproceedings{reimers2019sentencebert,
  title = {Sentence-{BERT}: Sentence Embeddings using {S}iamese {BERT}-Networks},
  author = {Reimers, Nils and Gurevych, Iryna},
  booktitle = {Proceedings of the 2019 Conference on Empirical Methods in Natural Language Processing},
  year = {2019},
  url = {https://arxiv.org/abs/1908.10084}
}"""
_SIMCSE = """@inproceedings{gao2021simcse,
  title = {{SimCSE}: Simple Contrastive Learning of Sentence Embeddings},
  author = {Gao, Tianyu and Yao, Xingcheng and Chen, Danqi},
  booktitle = {Proceedings of the 2021 Conference on Empirical Methods in Natural Language Processing},
  year = {2021},
  url = {https://arxiv.org/abs/2104.08821}
}"""
_PARADIGM = """@inproceedings{li2024unified,
  title = {Towards Better Understanding of Contrastive Sentence Representation Learning:
           A Unified Paradigm for Gradient},
  author = {Li and Zhang and Nie},
  booktitle = {Proceedings of the 62nd Annual Meeting of the Association for Computational Linguistics},
  pages = {14506--14521},
  year = {2024},
  url = {https://arxiv.org/abs/2402.18281}
}"""
_ARCCSE = """@inproceedings{zhang2022arccse,
  title = {A Contrastive Framework for Learning Sentence Representations from Pairwise and
           Triple-wise Perspective in Angular Space},
  author = {Zhang, Yuhao and others},
  booktitle = {Proceedings of the 60th Annual Meeting of the Association for Computational Linguistics},
  year = {2022}
}"""
_ALIGN_UNIFORM = """@inproceedings{wang2020hypersphere,
  title = {Understanding Contrastive Representation Learning through Alignment and Uniformity on the Hypersphere},
  author = {Wang, Tongzhou and Isola, Phillip},
  booktitle = {Proceedings of the 37th International Conference on Machine Learning},
  year = {2020},
  url = {https://arxiv.org/abs/2005.10242}
}"""
_BARLOW = """@inproceedings{zbontar2021barlow,
  title = {Barlow Twins: Self-Supervised Learning via Redundancy Reduction},
  author = {Zbontar, Jure and Jing, Li and Misra, Ishan and LeCun, Yann and Deny, St{\\'e}phane},
  booktitle = {Proceedings of the 38th International Conference on Machine Learning},
  year = {2021},
  url = {https://arxiv.org/abs/2103.03230}
}"""
_VICREG = """@inproceedings{bardes2022vicreg,
  title = {{VICReg}: Variance-Invariance-Covariance Regularization for Self-Supervised Learning},
  author = {Bardes, Adrien and Ponce, Jean and LeCun, Yann},
  booktitle = {International Conference on Learning Representations},
  year = {2022},
  url = {https://arxiv.org/abs/2105.04906}
}"""
_COSENT = """@online{su2022cosent,
  title = {{CoSENT} (1): a more effective sentence vector scheme than Sentence-{BERT}},
  author = {Su, Jianlin},
  year = {2022},
  url = {https://kexue.fm/archives/8847}
}"""

# loss name -> (what it is, the papers to cite besides SimCSE and Sentence-BERT)
CITATIONS: dict[str, tuple[str, tuple[str, ...]]] = {
    "infonce": ("InfoNCE (SimCSE)", ()),
    "arccon": ("ArcCon (ArcCSE)", (_ARCCSE, _PARADIGM)),
    "mpt": ("MPT, margin triplet on cosine similarity", (_PARADIGM,)),
    "met": ("MET, margin triplet on Euclidean distance", (_PARADIGM,)),
    "mat": ("MAT, margin triplet on angles", (_PARADIGM,)),
    "mhe": ("alignment + uniformity (MHE)", (_ALIGN_UNIFORM, _PARADIGM)),
    "mhs": ("alignment + maximum hyperspherical separation (MHS)", (_PARADIGM,)),
    "barlowtwins": ("Barlow Twins (sample-wise surrogate)", (_BARLOW, _PARADIGM)),
    "vicreg": ("VICReg (sample-wise surrogate)", (_VICREG, _PARADIGM)),
    "surrogate": ("paper B's component-built surrogate", (_PARADIGM,)),
    "cosent": ("CoSENT (in-batch)", (_COSENT,)),
}


@dataclass(frozen=True)
class CardFacts:
    """What the card says about the saved model itself."""

    modules: Sequence[str]  # the sentence-transformers modules, in order
    pooler: str
    head: str  # none | linear_tanh | linear | tanh_linear
    head_at_inference: bool
    embedding_dim: int
    max_seq_length: int
    prompt: str = ""
    needs_csrl: bool = False  # csrl's own modules: SentenceTransformer(..., trust_remote_code=True) with csrl installed
    csrl_only: bool = False  # a pooler sentence-transformers cannot run (prompt): load with csrl only
    prompt_template: str = ""  # the prompt pooler's template (PromptBERT)


def hub_base_model(model: str) -> str | None:
    """The Hub id ``model`` names: itself for a Hub id, all-MiniLM-L6-v2 for the embedded default, the recorded
    base of a csrl-saved folder (``csrl_encoder.json``: ``base_model``); None for any other local folder."""
    from csrl.models.encoder import CSRL_CONFIG, DEFAULT_MODEL, default_model_path, resolve_model_name

    if resolve_model_name(model) != model or model == DEFAULT_MODEL:
        return EMBEDDED_HUB_ID
    local = Path(model).expanduser()
    if local.exists():
        if local.resolve() == Path(default_model_path()).resolve():
            return EMBEDDED_HUB_ID
        try:
            saved = json.loads((local / CSRL_CONFIG).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        base = saved.get("base_model") if isinstance(saved, dict) else None
        return base if isinstance(base, str) and base else None
    if model.startswith((".", "/", "~")) or model.count("/") > 1:
        return None
    return model


def sts_scores_from_markdown(table: str) -> dict[str, float]:
    """The scores of the last row of csrl's STS table (:func:`csrl.evaluate.sts.markdown_table`)."""
    rows = [line.strip() for line in table.strip().splitlines() if line.strip().startswith("|")]
    if len(rows) < 3:
        return {}
    names = [c.strip() for c in rows[0].strip("|").split("|")][1:]
    values = [c.strip() for c in rows[-1].strip("|").split("|")][1:]
    out: dict[str, float] = {}
    for name, value in zip(names, values, strict=False):
        try:
            out[name] = float(value)
        except ValueError:
            continue
    return out


def _datasets(train_config: Mapping[str, Any] | None) -> list[str]:
    files = (train_config or {}).get("data", {}).get("train_files", ()) or ()
    found: list[str] = []
    for f in files:
        name = Path(str(f)).name.lower()
        for key, hub_id in TRAIN_DATASETS.items():
            if key in name and hub_id not in found:
                found.append(hub_id)
    return found


def _metadata(
    facts: CardFacts,
    base_model: str | None,
    train_config: Mapping[str, Any] | None,
    results: Mapping[str, float] | None,
    model_name: str,
) -> str:
    from huggingface_hub import EvalResult, ModelCardData

    loss = str((train_config or {}).get("loss", {}).get("name", "")) or None
    evals = [
        EvalResult(
            task_type="semantic-similarity",
            task_name="Semantic Similarity",
            dataset_type=hub_id,
            dataset_name=f"{task} (SentEval protocol{', all' if task.startswith('STS1') else ', test'})",
            dataset_split="test",
            metric_type="spearman_cosine",
            metric_name="Spearman (cosine) x 100",
            metric_value=round(float(results[task]), 2),
        )
        for task, hub_id in STS_DATASETS.items()
        if results and task in results
    ]
    tags = ["sentence-transformers", "sentence-similarity", "feature-extraction", "csrl", "contrastive-learning"]
    if loss:
        tags.append(f"loss:{loss}")
    data = ModelCardData(
        base_model=base_model,
        datasets=_datasets(train_config) or None,
        library_name="sentence-transformers",
        pipeline_tag="sentence-similarity",
        tags=tags,
        model_name=model_name,
        eval_results=evals or None,
    )
    return data.to_yaml()


def _training_section(train_config: Mapping[str, Any]) -> list[str]:
    loss = train_config.get("loss", {})
    name = str(loss.get("name", "?"))
    what = CITATIONS.get(name, (name, ()))[0]
    t, d, m = train_config.get("train", {}), train_config.get("data", {}), train_config.get("model", {})
    steps = f"{t.get('max_steps')} steps" if t.get("max_steps") else f"{t.get('epochs', 1)} epoch(s)"
    sentences = f" (first {d['max_sentences']} records)" if d.get("max_sentences") else ""
    rows = [
        ("loss", f"`{name}`: {what}"),
        ("loss parameters", f"`{json.dumps(dict(loss.get('params', {})), sort_keys=True)}`"),
        ("training data", ", ".join(f"`{f}`" for f in d.get("train_files", ())) + sentences),
        ("batch size", t.get("batch_size")),
        ("learning rate", f"{t.get('lr')} (AdamW, linear decay, {t.get('warmup_steps', 0)} warm-up steps)"),
        ("weight decay", t.get("weight_decay")),
        ("length of training", steps),
        ("max training length", f"{d.get('max_length')} tokens"),
        ("pooler / head", f"`{m.get('pooler')}` / `{m.get('head')}` (mlp_only_train: {m.get('mlp_only_train')})"),
        ("precision", t.get("precision")),
        ("seed", t.get("seed")),
        ("model selection", f"best STS-B dev Spearman, evaluated every {t.get('eval_every')} steps"),
    ]
    lines = ["## Training", "", "| setting | value |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in rows]
    lines += ["", "<details><summary>Full csrl training config</summary>", "", "```json"]
    lines += [json.dumps(train_config, indent=2), "```", "", "</details>", ""]
    return lines


def _citations(train_config: Mapping[str, Any] | None) -> list[str]:
    name = str((train_config or {}).get("loss", {}).get("name", "infonce"))
    entries = [_SIMCSE, *CITATIONS.get(name, ("", ()))[1], _SBERT]
    seen: list[str] = []
    for e in entries:
        if e not in seen:
            seen.append(e)
    return ["## Citation", "", "```bibtex", "\n\n".join(seen), "```", ""]


def model_card(
    facts: CardFacts,
    *,
    base_model: str | None,
    train_config: Mapping[str, Any] | None = None,
    results: Mapping[str, float] | None = None,
    results_md: str | None = None,
    model_id: str | None = None,
) -> str:
    """The card's Markdown. results: STS Spearman x 100 by task (``STS12`` ... ``SICK-R``); when None they
    are read from ``results_md`` (csrl's STS table, last row). model_id: the Hub repository, if known."""
    if results is None and results_md:
        results = sts_scores_from_markdown(results_md) or None
    name = model_id or f"csrl {facts.pooler} sentence encoder" + (f" from {base_model}" if base_model else "")
    ref = model_id or MODEL_ID_PLACEHOLDER
    base = f"[{base_model}](https://huggingface.co/{base_model})" if base_model else "a local model"
    head = (
        f"`{facts.head}`, kept at inference"
        if facts.head_at_inference
        else f"`{facts.head}`, training only"
        if facts.head != "none"
        else "none"
    )
    trust = ", trust_remote_code=True" if facts.needs_csrl else ""
    lines = [
        "---",
        _metadata(facts, base_model, train_config, results, name),
        "---",
        "",
        f"# {name}",
        "",
        f"A [sentence-transformers](https://www.SBERT.net) model trained with csrl (contrastive sentence "
        f"representation learning) from "
        f"{base}. It maps sentences to a {facts.embedding_dim}-dimensional dense vector space; compare them "
        "with cosine similarity.",
        "",
        "## Model details",
        "",
        f"- **Base model:** {base}",
        f"- **Pooling:** `{facts.pooler}`; **training head:** {head}",
        f"- **Maximum sequence length:** {facts.max_seq_length} tokens",
        f"- **Output dimensionality:** {facts.embedding_dim}",
        "- **Similarity function:** cosine",
        f"- **Modules:** {' -> '.join(facts.modules)}",
    ]
    if facts.prompt:
        lines.append(f"- **Default prompt:** `{facts.prompt}` (prepended to every sentence)")
    if facts.prompt_template:
        lines.append(f"- **Prompt template:** `{facts.prompt_template}` (the sentence vector is the [MASK] state)")
    lines += ["", "## Usage", ""]
    if facts.csrl_only:
        lines += [
            "This model uses csrl's `prompt` pooler (PromptBERT), which the sentence-transformers format cannot "
            "express: sentence-transformers refuses to load it (with a message saying so). Load it with csrl:",
            "",
            "```python",
            "import csrl",
            "",
            f'encoder = csrl.load_encoder("{ref}")',
            'embeddings = csrl.encode(encoder, ["A man is playing a guitar.", "Someone plays an instrument."])',
            "```",
            "",
        ]
    else:
        lines += [
            "```python",
            "from sentence_transformers import SentenceTransformer",
            "",
            f'model = SentenceTransformer("{ref}"{trust})',
            'embeddings = model.encode(["A man is playing a guitar.", "Someone plays an instrument."])',
            "print(model.similarity(embeddings, embeddings))",
            "```",
            "",
        ]
    if facts.needs_csrl and not facts.csrl_only:
        lines += ["This model uses csrl's own modules: install csrl (`pip install csrl`) to load it.", ""]
    lines += [f"With csrl: `csrl eval {ref}` (the STS table below), `csrl encode {ref} -i s.txt -o e.npy`.", ""]
    if results_md or results:
        lines += ["## Evaluation", "", PROTOCOL, ""]
        lines += [results_md, ""] if results_md else [_results_table(results or {}), ""]
    if train_config:
        lines += _training_section(train_config)
    lines += _citations(train_config)
    return "\n".join(lines)


def _results_table(results: Mapping[str, float]) -> str:
    names = [n for n in (*STS_DATASETS, "Avg") if n in results]
    return "\n".join(
        [
            "| Spearman x100 (STS12-16: `all`) | " + " | ".join(names) + " |",
            "|---|" + "---:|" * len(names),
            "| this model | " + " | ".join(f"{results[n]:.2f}" for n in names) + " |",
        ]
    )


def set_model_id(card: str, model_id: str) -> str:
    """The card with the placeholder model id replaced by ``model_id`` (usage snippets, title)."""
    return re.sub(re.escape(MODEL_ID_PLACEHOLDER), model_id, card)


__all__ = [
    "CITATIONS",
    "CardFacts",
    "MODEL_ID_PLACEHOLDER",
    "PROTOCOL",
    "hub_base_model",
    "model_card",
    "set_model_id",
    "sts_scores_from_markdown",
]
