"""csrl encoders in MTEB: :class:`MTEBEncoder` implements MTEB's ``EncoderProtocol`` (``pip install mteb``).

.. code-block:: python

    import mteb
    from csrl.interop.mteb import MTEBEncoder

    model = MTEBEncoder("runs/simcse/best")              # or "embedded:all-MiniLM-L6-v2", pooler="mean"
    results = mteb.evaluate(model, mteb.get_tasks(tasks=["STSBenchmark"]), cache=None)

What each method does:

* ``encode(inputs, *, task_metadata, hf_split, hf_subset, prompt_type=None, **encode_kwargs)``: collects the
  ``text`` column of MTEB's DataLoader batches, prepends the prompt chosen for the task (below), and
  encodes everything in one call through :func:`csrl.evaluate.encoders.as_encode_fn` (a csrl encoder sorts
  by length and batches by ``encode_kwargs["batch_size"]``); returns a float32 ``(n, dim)`` array.
* ``similarity`` / ``similarity_pairwise``: cosine in float64, zero vectors scoring 0, exactly as csrl's
  STS protocol (:func:`csrl.evaluate.sts.cosine_scores`), whatever similarity a saved model declares.
  MTEB's ``spearman`` (model similarity) and ``cosine_spearman`` therefore agree.
* ``mteb_model_meta``: a ``ModelMeta`` with the name, revision, embedding size, parameter count, maximum
  tokens and cosine similarity; MTEB names result folders after it.

Prompts. ``prompts`` maps keys to prompt strings; for a task the first key present, in MTEB's priority
order, gives the prompt (:func:`select_prompt`):

1. ``"{task name}-{prompt type}"`` (``"STSBenchmark-query"``), 2. ``"{task name}"``,
3. ``"{task type}-{prompt type}"`` (``"Retrieval-document"``), 4. ``"{task type}"`` (``"STS"``),
5. ``"{prompt type}"`` (``"query"`` or ``"document"``); none present: no prompt.

``prompts=None`` (the default) takes the model's own ``prompts`` (a sentence-transformers folder's
``config_sentence_transformers.json``; csrl-trained models have none); ``prompts={}`` uses none. The task's
own instruction (``TaskMetadata.prompt``) is not used: csrl encoders are not instruction models. A model
that already prepends a default prompt to every sentence cannot take a second one: selecting a task
prompt for it is an error (pass ``prompts={}`` to keep only its default).

mteb is imported only to build ``mteb_model_meta``: this module, the prompt rules and the similarities work
without it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from csrl.errors import CsrlError
from csrl.evaluate.encoders import as_encode_fn, encoder_kind
from csrl.evaluate.sts import cosine_scores

__all__ = ["MTEBEncoder", "select_prompt"]

DEFAULT_MODEL = "embedded:all-MiniLM-L6-v2"


def select_prompt(
    prompts: Mapping[str, str] | None, *, task_name: str | None, task_type: str | None, prompt_type: str | None
) -> str | None:
    """The prompt for a task under MTEB's priority rules (see the module docstring), or None."""
    if not prompts:
        return None
    keys = []
    if task_name and prompt_type:
        keys.append(f"{task_name}-{prompt_type}")
    if task_name:
        keys.append(task_name)
    if task_type and prompt_type:
        keys.append(f"{task_type}-{prompt_type}")
    if task_type:
        keys.append(task_type)
    if prompt_type:
        keys.append(prompt_type)
    return next((prompts[k] for k in keys if k in prompts), None)


def _default_prompt(model: Any) -> str:
    """The prompt a model prepends by itself (sentence-transformers' ``default_prompt_name``), or ''."""
    name = getattr(model, "default_prompt_name", None)
    prompts = getattr(model, "prompts", None) or {}
    return str(prompts.get(name) or "") if name else ""


def _as_rows(x: Any) -> np.ndarray:
    """Embeddings (numpy or torch; one vector or a matrix) as a float64 ``(n, dim)`` array."""
    if hasattr(x, "detach"):
        x = x.detach().float().cpu().numpy()
    arr = np.asarray(x, dtype=np.float64)
    return arr.reshape(1, -1) if arr.ndim == 1 else arr


def _unit(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms == 0, np.inf, norms)


def _meta_name(source: str | None, model: Any, name: str | None) -> str:
    """An ``organization/model`` name, as MTEB requires."""
    if name is None and source is not None:
        local = Path(source).expanduser().exists() or source.startswith("embedded:")
        name = source if "/" in source and not local else Path(source.removeprefix("embedded:")).name
    name = name or type(model).__name__
    return name if "/" in name else f"csrl/{name}"


class MTEBEncoder:
    """A csrl encoder (or anything :func:`~csrl.evaluate.encoders.as_encode_fn` takes) as an MTEB model.

    ``model``: a model name or folder (loaded with :func:`csrl.models.encoder.load_encoder` with ``pooler``
    and ``device``), or an already loaded object (a csrl ``Encoder``, a ``SentenceTransformer``, a function
    ``list[str] -> array``). ``revision``: recorded in ``mteb_model_meta`` (the model is loaded as named).
    ``prompts``: see the module docstring. ``batch_size``: used when MTEB's ``encode_kwargs`` have none.
    ``normalize``: unit-length embeddings (cosine scores are unchanged). ``name``: the model name in MTEB's
    results (default ``csrl/<folder name>``, or the Hub id).
    """

    def __init__(
        self,
        model: Any = DEFAULT_MODEL,
        revision: str | None = None,
        *,
        device: str | None = None,
        pooler: str | None = None,
        prompts: Mapping[str, str] | None = None,
        batch_size: int = 128,
        normalize: bool = False,
        name: str | None = None,
    ) -> None:
        source = str(model) if isinstance(model, str | Path) else None
        if source is not None:
            from csrl.models.encoder import load_encoder

            self.model: Any = load_encoder(source, pooler=pooler, device=device)
        else:
            if pooler is not None or device is not None:
                raise CsrlError(
                    "pooler= and device= apply when MTEBEncoder loads a model by name",
                    hint="set them when loading the object (load_encoder(name, pooler=..., device=...))",
                )
            encoder_kind(model)  # a clear error now for an object that cannot encode
            self.model = model
        if prompts is None:  # the model's own (sentence-transformers allows None values: no prompt)
            prompts = {k: v for k, v in (getattr(self.model, "prompts", None) or {}).items() if v}
        bad = [k for k, v in prompts.items() if not (isinstance(k, str) and isinstance(v, str))]
        if bad:
            raise CsrlError(f"prompts must map strings to strings; bad keys: {bad}", hint='e.g. {"query": "query: "}')
        self.prompts: dict[str, str] = dict(prompts)
        self.revision = revision
        self.batch_size = batch_size
        self.normalize = normalize
        self.name = _meta_name(source, self.model, name)
        self._meta: Any = None

    def __repr__(self) -> str:
        return f"MTEBEncoder({self.name!r}, prompts={self.prompts})"

    # ----------------------------------------------------------------------------- prompts
    def get_prompt(self, task_metadata: Any, prompt_type: Any = None) -> str | None:
        """The prompt for this task and prompt type (``PromptType`` or its value), or None."""
        return select_prompt(
            self.prompts,
            task_name=getattr(task_metadata, "name", None),
            task_type=getattr(task_metadata, "type", None),
            prompt_type=getattr(prompt_type, "value", prompt_type),
        )

    # ----------------------------------------------------------------------------- EncoderProtocol
    def encode(
        self,
        inputs: Iterable[Mapping[str, Any]],
        *,
        task_metadata: Any,
        hf_split: str,
        hf_subset: str,
        prompt_type: Any = None,
        **kwargs: Any,
    ) -> np.ndarray:
        """Embeddings of every text of ``inputs`` (MTEB's DataLoader of batches with a ``text`` column)."""
        texts: list[str] = []
        for batch in inputs:
            if "text" not in batch:
                raise CsrlError(
                    f"MTEB task {getattr(task_metadata, 'name', '?')}: csrl encoders read text, the batches hold "
                    f"{sorted(batch)}",
                    hint="run text tasks (modalities ['text']) only",
                )
            texts.extend(batch["text"])
        prompt = self.get_prompt(task_metadata, prompt_type)
        if prompt:
            default = _default_prompt(self.model)
            if default:
                raise CsrlError(
                    f"the model prepends its default prompt {default!r} to every sentence, and the prompts select "
                    f"{prompt!r} for {getattr(task_metadata, 'name', 'this task')}: both would apply",
                    hint="pass prompts={} to keep only the model's default prompt",
                )
            texts = [prompt + t for t in texts]
        batch_size = int(kwargs.get("batch_size") or self.batch_size)
        encode = as_encode_fn(
            self.model, batch_size=batch_size, normalize=self.normalize, show_progress=kwargs.get("show_progress_bar")
        )
        return encode(texts)

    def similarity(self, embeddings1: Any, embeddings2: Any) -> torch.Tensor:
        """Cosine similarity of every row of ``embeddings1`` with every row of ``embeddings2`` (float64)."""
        a, b = _unit(_as_rows(embeddings1)), _unit(_as_rows(embeddings2))
        return torch.from_numpy(a @ b.T)

    def similarity_pairwise(self, embeddings1: Any, embeddings2: Any) -> torch.Tensor:
        """Cosine similarity of each row of ``embeddings1`` with the same row of ``embeddings2``: csrl's STS score."""
        return torch.from_numpy(cosine_scores(_as_rows(embeddings1), _as_rows(embeddings2)))

    @property
    def mteb_model_meta(self) -> Any:
        """MTEB's ``ModelMeta`` for this model (needs mteb)."""
        if self._meta is None:
            self._meta = self._build_meta()
        return self._meta

    def _build_meta(self) -> Any:
        try:
            from mteb.models.model_meta import ModelMeta, ScoringFunction
        except ImportError:
            raise CsrlError("MTEB is not installed", hint="pip install mteb (or csrl[mteb])") from None
        m = self.model
        dim = getattr(m, "embedding_dim", None) or getattr(m, "dim", None)
        max_length = getattr(m, "max_length", None)
        params = sum(p.numel() for p in m.parameters()) if callable(getattr(m, "parameters", None)) else None
        pooler = getattr(m, "pooler", None)
        return ModelMeta.create_empty(
            {
                "name": self.name,
                "revision": self.revision,
                "embed_dim": int(dim) if dim else None,
                "n_parameters": params,
                "max_tokens": max_length() if callable(max_length) else None,
                "similarity_fn_name": ScoringFunction.COSINE,
                "framework": ["PyTorch"],
                "use_instructions": bool(self.prompts),
                "experiment_kwargs": {"pooler": pooler} if isinstance(pooler, str) else None,
            }
        )
