"""An on-disk cache of evaluation embeddings: an unchanged model is encoded once, not at every evaluation.

What is cached is one **encode call**: the whole ordered list of sentences an evaluation passes to its
encode function (the STS suite's distinct sentences, the transfer tasks' distinct sentences), never single
sentences. csrl's encoder sorts a call's sentences by length and batches them, so a sentence's vector
depends (in its last bits) on the other sentences of the call; caching whole calls keeps a cached result
**bitwise identical** to the uncached one.

The key (:func:`embedding_key`) is a sha256 over everything that decides those bits:

* the model (:func:`model_fingerprint`): every parameter and buffer the encode uses (backbone, the
  sentence-transformers tail ``Dense``/``Normalize``, csrl's head when it applies at inference), each hashed
  with its name, dtype and shape (sha256 of the in-memory tensors: ~0.06 s for all-MiniLM-L6-v2's 90 MB on
  one core with SHA extensions); the tokenizer (its full serialisation: vocabulary, normaliser, special and
  added tokens); the pooler, its layers, the prompt, the tail's configuration, the maximum length, the
  backbone's config and attention implementation, and the device;
* the call's settings: batch size, ``normalize``, the autocast dtype (precision), the encode path;
* the runtime: torch/transformers/tokenizers/numpy (and sentence-transformers) versions, torch threads,
  the CPU's kernel capability, fp32 matmul precision (TF32), a digest of the encoding source files, and
  :data:`ALGORITHM_VERSION` (bump it when the encode algorithm changes in a way the files do not show);
* the text: the number of sentences and a digest of the ordered list.

Entries live in one folder (:func:`default_cache_dir`: ``$CSRL_CACHE_DIR``, else
``$XDG_CACHE_HOME/csrl/embeddings``, else ``~/.cache/csrl/embeddings``; ``CSRL_CACHE_DIR=off`` turns the
cache off), bounded in size (:data:`DEFAULT_MAX_BYTES`, 2 GiB; ``CSRL_CACHE_MAX_BYTES`` or ``max_bytes``)
with least-recently-used eviction (a hit refreshes the entry's mtime). Many processes may share the folder
(a sweep's cells): a writer writes a temporary file in the folder and renames it into place (atomic), a
reader that finds its file evicted under it sees a miss, and an entry that is damaged, truncated, or holds
another key or shape is a miss and is removed (the entry stores its key, shape, dtype and the sha256 of its
payload, all checked on read). Processes that miss the same key at the same time wait for the first one's
result (a lock file per key, POSIX only) instead of encoding the same sentences side by side. A cache that
cannot be written (read-only, disk full) never fails an evaluation: the embeddings are computed as without it.

The one place in the library that reads the environment is :func:`default_cache_dir` / :func:`resolve_cache`
(``cache=True``), so that ``csrl train`` subprocesses of a sweep (which cache the untrained model's STS
table) honour the same folder as ``csrl eval``.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import numpy as np

from csrl.errors import CsrlError

if TYPE_CHECKING:
    import torch

__all__ = [
    "ALGORITHM_VERSION",
    "DEFAULT_MAX_BYTES",
    "CacheStats",
    "CachedEncode",
    "EmbeddingCache",
    "cached_encode",
    "default_cache_dir",
    "embedding_key",
    "encoder_encode_fn",
    "model_fingerprint",
    "parse_size",
    "resolve_cache",
    "tokenizer_fingerprint",
    "weights_digest",
]

ALGORITHM_VERSION = "encode-1"  # length-sorted batches, pooler, tail, optional normalisation, float32 out
DEFAULT_MAX_BYTES = 2 * 1024**3
ENTRY_FORMAT = 1
MAGIC = b"CSRLEMB1"
SUFFIX = ".emb"
TMP_SUFFIX = ".tmp"
LOCK_SUFFIX = ".lock"
STALE_TMP_S = 3600.0  # a temporary or lock file this old is a crashed writer's: removed at the next eviction
LOCK_WAIT_S = 3600.0  # wait at most this long for another process encoding the same call, then encode too
MAX_HEADER = 1 << 16
# The files whose code turns sentences into the vectors csrl caches (found by name, never imported here).
ENCODE_SOURCES = (
    "csrl.models.encoder",
    "csrl.models.pooling",
    "csrl.models.prompt",
    "csrl.models.heads",
    "csrl.models.st_format",
    "csrl.evaluate.encoders",
)
_VERSIONED = ("torch", "transformers", "tokenizers", "numpy", "sentence-transformers")
_SIZE_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}

Log = Callable[[str], None]


# ----------------------------------------------------------------------------- where and how big
def default_cache_dir(environ: Mapping[str, str] | None = None) -> Path | None:
    """``$CSRL_CACHE_DIR``, else ``$XDG_CACHE_HOME/csrl/embeddings``, else ``~/.cache/csrl/embeddings``;
    None when ``CSRL_CACHE_DIR=off``. ``environ`` defaults to ``os.environ``."""
    env = os.environ if environ is None else environ
    chosen = env.get("CSRL_CACHE_DIR", "").strip()
    if chosen:
        return None if chosen.lower() == "off" else Path(chosen).expanduser()
    if env.get("XDG_CACHE_HOME"):
        return Path(env["XDG_CACHE_HOME"]).expanduser() / "csrl" / "embeddings"
    return Path.home() / ".cache" / "csrl" / "embeddings"


def parse_size(text: str, *, what: str = "CSRL_CACHE_MAX_BYTES") -> int:
    """Bytes from ``"2147483648"``, ``"2G"``, ``"500M"``, ``"512KiB"`` (binary units); CsrlError otherwise."""
    raw = text.strip().upper().removesuffix("B").removesuffix("I")
    unit = raw[-1:] if raw[-1:] in _SIZE_UNITS else ""
    number = raw[: len(raw) - len(unit)].strip()
    try:
        value = float(number) * _SIZE_UNITS[unit]
    except ValueError:
        value = -1.0
    if not np.isfinite(value) or value < 0 or not number:
        raise CsrlError(
            f"{what}={text!r} is not a size", hint="give bytes or a size with a unit, e.g. 2G, 500M, 2147483648"
        )
    return int(value)


def resolve_cache(
    cache: bool | str | os.PathLike[str] | EmbeddingCache | None, environ: Mapping[str, str] | None = None
) -> EmbeddingCache | None:
    """What ``cache=`` means: False/None no cache; True the default folder (:func:`default_cache_dir`; None
    there when ``CSRL_CACHE_DIR=off``); a path that folder; an :class:`EmbeddingCache` itself. The bound is
    ``$CSRL_CACHE_MAX_BYTES`` when set, else :data:`DEFAULT_MAX_BYTES`."""
    if cache is None or cache is False:
        return None
    if isinstance(cache, EmbeddingCache):
        return cache
    env = os.environ if environ is None else environ
    bound = env.get("CSRL_CACHE_MAX_BYTES", "").strip()
    max_bytes = parse_size(bound) if bound else DEFAULT_MAX_BYTES
    root = default_cache_dir(env) if cache is True else Path(cache).expanduser()
    return None if root is None else EmbeddingCache(root, max_bytes=max_bytes)


# ----------------------------------------------------------------------------- the store
class _Damaged(Exception):
    """An entry that is not what its name promises (truncated, garbled, another key or shape)."""


class EmbeddingCache:
    """A folder of ``<key>.emb`` entries, at most ``max_bytes`` in all (least recently used evicted first).

    An entry is ``MAGIC``, a 4-byte header length, a JSON header (key, shape, dtype, payload sha256) and
    the array in ``.npy`` format. :meth:`get` returns it only when all of these check out; otherwise the
    file is removed and the call is a miss. Writes are atomic (temporary file + ``os.replace``).
    """

    def __init__(self, root: str | os.PathLike[str], max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        if max_bytes < 0:
            raise CsrlError(f"the embedding cache bound must be >= 0 bytes, got {max_bytes}")
        self.root = Path(root)
        self.max_bytes = int(max_bytes)
        self.last_error: str | None = None  # why the last put stored nothing

    def __repr__(self) -> str:
        return f"EmbeddingCache({str(self.root)!r}, max_bytes={self.max_bytes})"

    def path(self, key: str) -> Path:
        if not key or not all(c in "0123456789abcdef" for c in key):
            raise ValueError(f"a cache key is a lowercase hex digest, got {key!r}")
        return self.root / f"{key}{SUFFIX}"

    # ------------------------------------------------------------------ reading
    def get(self, key: str, n_rows: int | None = None) -> np.ndarray | None:
        """The stored array of ``key`` (``n_rows`` rows when given), or None: absent, evicted meanwhile,
        unreadable, or damaged (then removed). A hit refreshes the entry's mtime (its LRU age)."""
        path = self.path(key)
        try:
            with path.open("rb") as f:
                arr = _read_entry(f, key)
            if n_rows is not None and arr.shape[0] != n_rows:
                raise _Damaged(f"{arr.shape[0]} rows, {n_rows} expected")
        except FileNotFoundError:
            return None
        except _Damaged:
            _unlink(path)
            return None
        except OSError as exc:  # unreadable (permissions, I/O error): a miss, the file is left alone
            self.last_error = str(exc)
            return None
        with contextlib.suppress(OSError):
            os.utime(path)
        return arr

    # ------------------------------------------------------------------ writing
    def put(self, key: str, array: np.ndarray) -> bool:
        """Store ``array`` (2-D, numeric) under ``key``, then evict down to the bound; False (and
        :attr:`last_error`) when nothing was stored: too large for the bound, or the folder cannot be written."""
        path = self.path(key)
        arr = np.ascontiguousarray(array)
        if arr.ndim != 2 or arr.dtype.hasobject:
            self.last_error = f"not a 2-D numeric array ({arr.dtype}, shape {arr.shape})"
            return False
        meta = {"format": ENTRY_FORMAT, "key": key, "shape": list(arr.shape), "dtype": arr.dtype.str}
        header = json.dumps({**meta, "sha256": _array_digest(arr)}).encode()
        if arr.nbytes + len(header) + 256 > self.max_bytes:
            self.last_error = f"{arr.nbytes / 1024**2:.1f} MiB is more than the cache's bound ({self.max_bytes} bytes)"
            return False
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.root, prefix=".", suffix=TMP_SUFFIX)
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(MAGIC + len(header).to_bytes(4, "little") + header)
                    np.lib.format.write_array(f, arr, allow_pickle=False)
                os.replace(tmp, path)
            except BaseException:
                _unlink(Path(tmp))
                raise
        except OSError as exc:
            self.last_error = f"cannot write to {self.root}: {exc.strerror or exc}"
            return False
        self.last_error = None
        self.evict()
        return True

    def entries(self) -> list[tuple[float, int, Path]]:
        """(mtime, bytes, path) of every entry, oldest first (files vanishing meanwhile are skipped)."""
        out: list[tuple[float, int, Path]] = []
        try:
            listing = list(os.scandir(self.root))
        except OSError:
            return out
        now = time.time()
        for e in listing:
            try:
                st = e.stat()
            except OSError:
                continue
            if e.name.endswith(SUFFIX) and not e.name.startswith("."):
                out.append((st.st_mtime, st.st_size, Path(e.path)))
            elif e.name.endswith((TMP_SUFFIX, LOCK_SUFFIX)) and now - st.st_mtime > STALE_TMP_S:
                _unlink(Path(e.path))
        return sorted(out)

    def size(self) -> int:
        """Bytes held by the entries."""
        return sum(size for _, size, _ in self.entries())

    def evict(self) -> int:
        """Remove the least recently used entries until the folder holds at most ``max_bytes``; how many
        were removed. Safe while other processes read, write and evict (a vanished file is skipped)."""
        entries = self.entries()
        total, removed = sum(size for _, size, _ in entries), 0
        for _, size, path in entries:
            if total <= self.max_bytes:
                break
            removed += _unlink(path)
            total -= size
        return removed

    @contextlib.contextmanager
    def computing(self, key: str, *, wait_s: float = LOCK_WAIT_S) -> Iterator[None]:
        """Hold ``key``'s lock file while encoding, so that another process missing the same key waits for
        this result instead of computing it too (POSIX ``flock``; elsewhere, or when the folder cannot be
        written, nothing is locked). After ``wait_s`` a waiter goes ahead. Results never depend on the lock."""
        try:
            import fcntl

            self.root.mkdir(parents=True, exist_ok=True)
            lock = self.root / f".{key}{LOCK_SUFFIX}"
            fh = lock.open("a+b")
        except (ImportError, OSError):
            yield
            return
        try:
            deadline = time.monotonic() + wait_s
            while True:
                try:
                    fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        break
                    time.sleep(0.1)
            yield
        finally:
            _unlink(lock)  # before the release: a waiter on this file then re-reads the entry
            fh.close()


def _unlink(path: Path) -> int:
    try:
        path.unlink()
        return 1
    except OSError:  # gone already (another process evicted it), or not ours to remove
        return 0


def _array_digest(arr: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(arr).data.cast("B")).hexdigest()


def _read_entry(f: IO[bytes], key: str) -> np.ndarray:
    """Parse and verify one entry; :class:`_Damaged` for anything that does not check out."""
    if f.read(len(MAGIC)) != MAGIC:
        raise _Damaged("not an entry")
    size = int.from_bytes(f.read(4), "little")
    if not 0 < size <= MAX_HEADER:
        raise _Damaged("bad header length")
    try:
        header = json.loads(f.read(size))
        arr = np.lib.format.read_array(f, allow_pickle=False)
    except (ValueError, EOFError, UnicodeDecodeError) as exc:  # truncated or garbled
        raise _Damaged(str(exc)) from None
    if not isinstance(header, dict) or header.get("key") != key or header.get("format") != ENTRY_FORMAT:
        raise _Damaged("another key")
    if arr.ndim != 2 or list(arr.shape) != header.get("shape") or arr.dtype.str != header.get("dtype"):
        raise _Damaged("shape or dtype differ from the header")
    if f.read(1) or _array_digest(arr) != header.get("sha256"):
        raise _Damaged("payload differs from its digest")
    return arr


# ----------------------------------------------------------------------------- fingerprints
def weights_digest(module: Any, *, skip: Sequence[str] = ()) -> str:
    """sha256 over every parameter and buffer of ``module`` (non-persistent buffers included), each with
    its name, dtype and shape; names starting with a prefix in ``skip`` are left out."""
    import torch

    h = hashlib.sha256()
    named = [("param", module.named_parameters()), ("buffer", module.named_buffers())]
    for kind, items in named:
        for name, tensor in items:
            if skip and name.startswith(tuple(skip)):
                continue
            t = tensor.detach()
            h.update(f"{kind} {name} {t.dtype} {tuple(t.shape)}\n".encode())
            h.update(_tensor_bytes(t, torch))
    return h.hexdigest()


def _tensor_bytes(t: torch.Tensor, torch_mod: Any) -> memoryview | bytes:
    try:
        flat = t.cpu().contiguous().reshape(-1).view(torch_mod.uint8)
        return flat.numpy().data
    except (RuntimeError, TypeError):  # sparse, quantised, ...: their serialisation stands for their bytes
        import io

        buf = io.BytesIO()
        torch_mod.save(t.cpu(), buf)
        return buf.getvalue()


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """sha256 of what turns text into ids: a fast tokenizer's full serialisation (vocabulary, normaliser,
    pre-tokeniser, post-processor, added tokens; the per-call truncation and padding state left out), else
    the vocabulary and init arguments; plus class, special tokens, padding side, input names, length."""
    h = hashlib.sha256()
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        spec = json.loads(backend.to_str())
        spec.pop("truncation", None)
        spec.pop("padding", None)
        h.update(json.dumps(spec).encode())  # the library serialises in a fixed order (vocabulary by id)
    else:
        vocab = tokenizer.get_vocab() if hasattr(tokenizer, "get_vocab") else {}
        h.update(json.dumps(sorted(vocab.items()), default=str).encode())
        h.update(json.dumps(getattr(tokenizer, "init_kwargs", {}), sort_keys=True, default=str).encode())
    meta = {
        "class": f"{type(tokenizer).__module__}.{type(tokenizer).__qualname__}",
        "special": getattr(tokenizer, "special_tokens_map", {}),
        "padding_side": getattr(tokenizer, "padding_side", None),
        "truncation_side": getattr(tokenizer, "truncation_side", None),
        "pad_token_id": getattr(tokenizer, "pad_token_id", None),
        "input_names": list(getattr(tokenizer, "model_input_names", ())),
        "model_max_length": getattr(tokenizer, "model_max_length", None),
        "len": len(tokenizer) if hasattr(tokenizer, "__len__") else None,
    }
    h.update(json.dumps(meta, sort_keys=True, default=str).encode())
    return h.hexdigest()


def _is_csrl_encoder(obj: Any) -> bool:
    return type(obj).__module__.startswith("csrl.") and all(
        hasattr(obj, a) for a in ("backbone", "tokenizer", "pooler", "tail", "head", "config", "max_length")
    )


def _is_torch_module(obj: Any) -> bool:
    return callable(getattr(obj, "named_parameters", None)) and callable(getattr(obj, "named_buffers", None))


def _device(obj: Any) -> str:
    """The device the model computes on, with what changes floats there (GPU name, TF32 switches)."""
    import torch

    param = next(iter(obj.parameters()), None) if hasattr(obj, "parameters") else None
    device = param.device if param is not None else torch.device("cpu")
    if device.type != "cuda":
        return str(device.type)
    name = torch.cuda.get_device_name(device)
    tf32 = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    return f"cuda {name} cc{torch.cuda.get_device_capability(device)} cuda{torch.version.cuda} tf32={tf32}"


def _backbone_config(backbone: Any) -> dict[str, Any]:
    config = getattr(backbone, "config", None)
    if config is None or not hasattr(config, "to_dict"):
        return {}
    out = {k: v for k, v in config.to_dict().items() if k != "_name_or_path"}
    out["attn_implementation"] = getattr(config, "_attn_implementation", None)
    return out


def _describe_csrl_encoder(encoder: Any) -> dict[str, Any]:
    # under mlp_only_train the head is skipped at inference: its (seed-dependent) init must not split the key
    head_used = encoder.pooler in ("cls", "prompt") and not encoder.config.mlp_only_train
    prompt_pooling: dict[str, Any] = {}
    if encoder.pooler == "prompt":  # PromptBERT's template and denoising (the training-only view-2 template aside)
        c = encoder.config
        keys = ("prompt_template", "prompt_denoise", "prompt_denoise_at_inference")
        prompt_pooling = {"prompt_pooling": {k: getattr(c, k) for k in keys}}
    return {
        **prompt_pooling,
        "kind": "csrl-encoder",
        "class": f"{type(encoder).__module__}.{type(encoder).__qualname__}",
        "backbone_class": type(encoder.backbone).__qualname__,
        "backbone_config": _backbone_config(encoder.backbone),
        "pooler": encoder.pooler,
        "first_last_layers": list(encoder.config.first_last_layers),
        "head": repr(encoder.head) if head_used else None,
        "prompt": getattr(encoder, "prompt", ""),
        "include_prompt": getattr(encoder, "include_prompt", True),
        "tail": [repr(m) for m in encoder.tail],
        "max_length": encoder.max_length(),
        "tokenizer": tokenizer_fingerprint(encoder.tokenizer),
        "weights": weights_digest(encoder, skip=() if head_used else ("head.",)),
        "device": _device(encoder),
    }


def _describe_module(model: Any) -> dict[str, Any]:
    """A torch module with an ``encode`` method that holds everything it uses (a SentenceTransformer)."""
    tokenizer = getattr(model, "tokenizer", None)
    return {
        "kind": "module",
        "class": f"{type(model).__module__}.{type(model).__qualname__}",
        "repr": repr(model),  # a SentenceTransformer's modules with their configs (max length, pooling, ...)
        "prompts": getattr(model, "prompts", None),
        "default_prompt_name": getattr(model, "default_prompt_name", None),
        "tokenizer": tokenizer_fingerprint(tokenizer) if tokenizer is not None else None,
        "weights": weights_digest(model),
        "device": _device(model),
    }


def fingerprintable(model: Any) -> bool:
    """Whether :func:`model_fingerprint` can describe ``model`` completely: a csrl ``Encoder``, or a
    ``sentence_transformers.SentenceTransformer``. Plain functions and other objects cannot be."""
    if _is_csrl_encoder(model):
        return True
    encode = getattr(model, "encode", None)
    return _is_torch_module(model) and callable(encode) and type(model).__module__.startswith("sentence_transformers")


def model_fingerprint(encoder: Any) -> str:
    """sha256 of the model's state as it encodes now: weights (in memory), tokenizer, pooler, prompt, tail,
    maximum length, backbone config, device (see the module docstring). Computed afresh at every call, so
    weights changed in place give a new fingerprint. CsrlError for objects it cannot describe."""
    if _is_csrl_encoder(encoder):
        desc = _describe_csrl_encoder(encoder)
    elif fingerprintable(encoder):
        desc = _describe_module(encoder)
    else:
        raise CsrlError(
            f"the embedding cache cannot fingerprint a {type(encoder).__name__}: its weights and code are unknown",
            hint="evaluate it with cache=False, or pass a csrl Encoder or a SentenceTransformer",
        )
    return hashlib.sha256(json.dumps(desc, sort_keys=True, default=str).encode()).hexdigest()


@lru_cache(maxsize=1)
def _code_digest() -> str:
    """sha256 of the encoding source files (:data:`ENCODE_SOURCES` and this module), read once a process."""
    h = hashlib.sha256(ALGORITHM_VERSION.encode())
    for name in (*ENCODE_SOURCES, __name__):
        spec = importlib.util.find_spec(name)
        origin = spec.origin if spec is not None else None
        h.update(name.encode())
        if origin and os.path.isfile(origin):
            h.update(Path(origin).read_bytes())
    return h.hexdigest()


def _runtime() -> dict[str, Any]:
    import torch

    versions: dict[str, str | None] = {}
    for dist in _VERSIONED:
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            versions[dist] = None
    get_capability = getattr(torch.backends.cpu, "get_cpu_capability", lambda: None)
    return {
        "algorithm": ALGORITHM_VERSION,
        "code": _code_digest(),
        "versions": versions,
        "threads": torch.get_num_threads(),
        "cpu_capability": get_capability(),
        "fp32_matmul": torch.get_float32_matmul_precision(),
    }


def _text_digest(sentences: Sequence[str]) -> str:
    h = hashlib.sha256()
    for s in sentences:
        b = s.encode("utf-8", "surrogatepass")
        h.update(len(b).to_bytes(8, "little"))
        h.update(b)
    return h.hexdigest()


def embedding_key(encoder: Any, settings: Mapping[str, Any], sentences: Sequence[str]) -> str:
    """The cache key of encoding ``sentences`` (in this order) with ``encoder`` under ``settings``."""
    desc = {
        "model": model_fingerprint(encoder),
        "settings": dict(settings),
        "runtime": _runtime(),
        "n": len(sentences),
        "text": _text_digest(sentences),
    }
    return hashlib.sha256(json.dumps(desc, sort_keys=True, default=str).encode()).hexdigest()


# ----------------------------------------------------------------------------- the encode wrapper
@dataclass
class CacheStats:
    """What the cache did for one evaluation: encode calls served from it (``hits``) or encoded (``misses``),
    of which ``stored`` were written; ``note`` says why one was not."""

    root: Path
    hits: int = 0
    misses: int = 0
    stored: int = 0
    sentences_read: int = 0
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """One line for the user: where the embeddings came from."""
        where = f"the embedding cache {self.root}"
        if not self.hits and not self.misses:
            return f"{where}: no encode call"
        if not self.misses:
            return f"embeddings read from {where} ({self.sentences_read} sentences, none encoded)"
        if self.stored == self.misses:
            stored = f"stored in {where}"
        else:
            stored = f"not all stored in {where}: {'; '.join(dict.fromkeys(self.notes))}"
        if not self.hits:
            return f"embeddings encoded and {stored}"
        return f"{self.hits} encode call(s) read from {where}; {self.misses} encoded and {stored}"


class CachedEncode:
    """``encode(sentences)`` that reads the whole call from the cache when its key is there, else runs the
    wrapped function and stores the result. ``cache=None``: the wrapped function, untouched."""

    def __init__(
        self,
        encoder: Any,
        encode: Callable[[Sequence[str]], np.ndarray],
        settings: Mapping[str, Any],
        cache: EmbeddingCache | None,
        *,
        log: Log | None = None,
    ) -> None:
        if cache is not None and not fingerprintable(encoder):
            model_fingerprint(encoder)  # raises the CsrlError that explains
        self.encoder, self.encode, self.settings, self.cache, self.log = encoder, encode, dict(settings), cache, log
        self.stats = CacheStats(cache.root) if cache is not None else None

    def __call__(self, sentences: Sequence[str]) -> np.ndarray:
        texts = list(sentences)
        if self.cache is None or self.stats is None or not texts or not all(isinstance(s, str) for s in texts):
            return self.encode(sentences)  # nothing to key on: the encoder reports its own errors
        key = embedding_key(self.encoder, self.settings, texts)
        found = self.cache.get(key, len(texts))
        if found is None:
            with self.cache.computing(key):
                found = self.cache.get(key, len(texts))  # another process may have stored it while we waited
                if found is None:
                    return self._encode_and_store(key, texts)
        self.stats.hits += 1
        self.stats.sentences_read += len(texts)
        if self.log is not None:
            self.log(f"embedding cache: {len(texts)} embeddings read from {self.cache.root} (nothing encoded)")
        return found

    def _encode_and_store(self, key: str, texts: list[str]) -> np.ndarray:
        assert self.cache is not None and self.stats is not None
        out = self.encode(texts)
        self.stats.misses += 1
        stored = isinstance(out, np.ndarray) and self.cache.put(key, out)
        if stored:
            self.stats.stored += 1
        else:
            self.stats.notes.append(self.cache.last_error or f"the encoder returned a {type(out).__name__}")
        if self.log is not None:
            what = f"stored in {self.cache.root}" if stored else f"not stored ({self.stats.notes[-1]})"
            self.log(f"embedding cache: {len(texts)} sentences encoded, {what}")
        return out


def cached_encode(
    encoder: Any,
    encode: Callable[[Sequence[str]], np.ndarray],
    settings: Mapping[str, Any],
    cache: bool | str | os.PathLike[str] | EmbeddingCache | None,
    *,
    log: Log | None = None,
) -> CachedEncode:
    """``encode`` (a function of ``encoder``) with the embedding cache in front. ``settings``: everything
    besides the model and the text that decides the output bits (batch size, precision, normalisation,
    which encode path); it becomes part of the key. ``cache``: as :func:`resolve_cache` takes it."""
    return CachedEncode(encoder, encode, settings, resolve_cache(cache), log=log)


def encoder_encode_fn(
    encoder: Any,
    *,
    batch_size: int = 128,
    normalize: bool = False,
    autocast_dtype: torch.dtype | None = None,
    cache: bool | str | os.PathLike[str] | EmbeddingCache | None = False,
    log: Log | None = None,
) -> CachedEncode:
    """``encoder.encode(sentences, batch_size=..., normalize=..., autocast_dtype=...)`` of a csrl ``Encoder``,
    cached when ``cache`` says so; the key's settings come from the same arguments as the call."""

    def encode(sentences: Sequence[str]) -> np.ndarray:
        return encoder.encode(sentences, batch_size=batch_size, normalize=normalize, autocast_dtype=autocast_dtype)  # type: ignore[no-any-return]

    settings = {
        "call": "Encoder.encode",
        "batch_size": batch_size,
        "normalize": normalize,
        "autocast": None if autocast_dtype is None else str(autocast_dtype),
    }
    return cached_encode(encoder, encode, settings, cache, log=log)
