"""The embedding cache: bitwise-identical hits, misses on every change that matters, safe storage."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pytest
import torch

from csrl.cli.main import main
from csrl.errors import CsrlError
from csrl.evaluate.embed_cache import (
    DEFAULT_MAX_BYTES,
    MAGIC,
    EmbeddingCache,
    cached_encode,
    default_cache_dir,
    encoder_encode_fn,
    model_fingerprint,
    parse_size,
    resolve_cache,
)
from csrl.models.encoder import Encoder, load_encoder, pooler_override

SENTENCES = [
    f"{a} {b} sat on the {c} mat number {i}" + " again" * (i % 5)
    for i, (a, b, c) in enumerate(
        (a, b, c) for a in ("the", "a", "one") for b in ("cat", "dog", "bird", "fox") for c in ("red", "blue", "warm")
    )
]  # 36 sentences of varied token lengths: several length-sorted batches at batch size 8


@pytest.fixture
def enc(tiny_model_dir: Path) -> Encoder:
    return load_encoder(str(tiny_model_dir), pooler="mean")


class Counting:
    """An encode function that counts its calls (a hit must not reach the encoder)."""

    def __init__(self, fn: Callable[[Sequence[str]], np.ndarray]) -> None:
        self.fn, self.calls = fn, 0

    def __call__(self, sentences: Sequence[str]) -> np.ndarray:
        self.calls += 1
        return self.fn(sentences)


def counted(
    enc: Encoder, cache: EmbeddingCache, **kw: object
) -> tuple[Counting, Callable[[Sequence[str]], np.ndarray]]:
    """``enc.encode`` with ``kw``, counted, behind the cache (key settings from the same ``kw``)."""
    fn = Counting(lambda s: enc.encode(s, **kw))  # type: ignore[arg-type]
    settings = {"call": "Encoder.encode", **{k: str(v) for k, v in kw.items()}}
    return fn, cached_encode(enc, fn, settings, cache)


# ----------------------------------------------------------------------------- hits are the uncached bits
def test_hit_is_bitwise_the_uncached_result_and_skips_the_encoder(enc: Encoder, tmp_path: Path) -> None:
    cache = EmbeddingCache(tmp_path / "c")
    fn, encode = counted(enc, cache, batch_size=8)
    first = encode(SENTENCES)
    second = encode(SENTENCES)
    uncached = enc.encode(SENTENCES, batch_size=8)
    assert fn.calls == 1
    assert second.dtype == uncached.dtype == np.float32 and second.shape == (len(SENTENCES), enc.embedding_dim)
    assert np.array_equal(first, uncached) and np.array_equal(second, uncached)
    assert len(cache.entries()) == 1


def test_encoder_encode_fn_keys_on_its_own_arguments(enc: Encoder, tmp_path: Path) -> None:
    cache = EmbeddingCache(tmp_path / "c")
    a = encoder_encode_fn(enc, batch_size=8, cache=cache)
    assert np.array_equal(a(SENTENCES), enc.encode(SENTENCES, batch_size=8))
    b = encoder_encode_fn(enc, batch_size=8, cache=cache)
    assert np.array_equal(b(SENTENCES), enc.encode(SENTENCES, batch_size=8))
    assert b.stats is not None and (b.stats.hits, b.stats.misses) == (1, 0)
    off = encoder_encode_fn(enc, batch_size=8, cache=False)
    assert off.stats is None and np.array_equal(off(SENTENCES), enc.encode(SENTENCES, batch_size=8))


def test_the_fingerprint_is_stable_across_loads(tiny_model_dir: Path) -> None:
    a = load_encoder(str(tiny_model_dir), pooler="mean")
    b = load_encoder(str(tiny_model_dir), pooler="mean")
    assert model_fingerprint(a) == model_fingerprint(b)
    a.encode(SENTENCES[:3], batch_size=2)  # the tokenizer's per-call truncation state is not part of it
    assert model_fingerprint(a) == model_fingerprint(b)


# ----------------------------------------------------------------------------- every change misses
def test_a_weight_nudged_by_1e_6_misses(enc: Encoder, tmp_path: Path) -> None:
    cache = EmbeddingCache(tmp_path / "c")
    fn, encode = counted(enc, cache, batch_size=8)
    before = encode(SENTENCES)
    param = enc.backbone.encoder.layer[-1].output.dense.weight
    with torch.no_grad():
        old = param[0, 0].item()
        param[0, 0] += 1e-6
    assert param[0, 0].item() != old
    after = encode(SENTENCES)
    assert fn.calls == 2 and len(cache.entries()) == 2
    assert np.array_equal(after, enc.encode(SENTENCES, batch_size=8)) and not np.array_equal(after, before)


def _max_length(enc: Encoder) -> None:
    enc.config = dataclasses.replace(enc.config, max_length=6)


def _tokenizer(enc: Encoder) -> None:
    from tokenizers.normalizers import BertNormalizer

    enc.tokenizer.backend_tokenizer.normalizer = BertNormalizer(lowercase=False)


def _tail(enc: Encoder) -> None:
    from sentence_transformers.base.modules import Normalize

    enc.tail.append(Normalize())


def _prompt(enc: Encoder) -> None:
    enc.prompts, enc.default_prompt_name = {"query": "query: "}, "query"


MODEL_CHANGES = {"max_length": _max_length, "tokenizer": _tokenizer, "tail": _tail, "prompt": _prompt}


@pytest.mark.parametrize("change", sorted(MODEL_CHANGES))
def test_a_changed_model_setting_misses(enc: Encoder, tmp_path: Path, change: str) -> None:
    cache = EmbeddingCache(tmp_path / "c")
    fn, encode = counted(enc, cache, batch_size=8)
    encode(SENTENCES)
    MODEL_CHANGES[change](enc)
    out = encode(SENTENCES)
    assert fn.calls == 2, f"{change} did not change the key"
    assert np.array_equal(out, enc.encode(SENTENCES, batch_size=8))


def test_a_changed_pooler_misses(enc: Encoder, tmp_path: Path) -> None:
    cache = EmbeddingCache(tmp_path / "c")
    fn, encode = counted(enc, cache, batch_size=8)
    mean = encode(SENTENCES)
    with pooler_override(enc, "max"):
        pooled_max = encode(SENTENCES)
        assert np.array_equal(pooled_max, enc.encode(SENTENCES, batch_size=8))
    assert fn.calls == 2 and not np.array_equal(mean, pooled_max)
    assert np.array_equal(encode(SENTENCES), mean) and fn.calls == 2  # back to mean: a hit


CALL_CHANGES: dict[str, dict[str, object]] = {
    "batch_size": {"batch_size": 4},
    "precision": {"batch_size": 8, "autocast_dtype": torch.bfloat16},
    "normalize": {"batch_size": 8, "normalize": True},
}


@pytest.mark.parametrize("change", sorted(CALL_CHANGES))
def test_a_changed_call_setting_misses(enc: Encoder, tmp_path: Path, change: str) -> None:
    cache = EmbeddingCache(tmp_path / "c")
    base = encoder_encode_fn(enc, batch_size=8, cache=cache)
    base(SENTENCES)
    other = encoder_encode_fn(enc, cache=cache, **CALL_CHANGES[change])  # type: ignore[arg-type]
    out = other(SENTENCES)
    assert other.stats is not None and other.stats.misses == 1 and len(cache.entries()) == 2
    assert np.array_equal(out, enc.encode(SENTENCES, **CALL_CHANGES[change]))  # type: ignore[arg-type]


@pytest.mark.parametrize("texts", ["one word changed", "order changed", "one sentence fewer"])
def test_a_changed_text_misses(enc: Encoder, tmp_path: Path, texts: str) -> None:
    cache = EmbeddingCache(tmp_path / "c")
    fn, encode = counted(enc, cache, batch_size=8)
    encode(SENTENCES)
    other = {
        "one word changed": [*SENTENCES[:-1], SENTENCES[-1].replace("mat", "rug")],
        "order changed": [SENTENCES[1], SENTENCES[0], *SENTENCES[2:]],
        "one sentence fewer": SENTENCES[:-1],
    }[texts]
    out = encode(other)
    assert fn.calls == 2 and np.array_equal(out, enc.encode(other, batch_size=8))


def test_an_unused_training_head_does_not_split_the_key(tiny_model_dir: Path) -> None:
    """Under mlp_only_train the cls head is skipped at inference: its seed-dependent init is not in the key
    (a sweep's cells share the untrained model's table); kept at inference, it is."""
    for kept in (False, True):
        enc = Encoder.from_pretrained(model=str(tiny_model_dir), pooler="cls", mlp_only_train=not kept)
        assert enc.head.linear is not None
        before = model_fingerprint(enc)
        with torch.no_grad():
            enc.head.linear.weight[0, 0] += 1.0
        assert (model_fingerprint(enc) != before) is kept


def test_functions_cannot_be_fingerprinted(tmp_path: Path) -> None:
    with pytest.raises(CsrlError, match="cannot fingerprint"):
        cached_encode(lambda s: np.zeros((len(s), 2)), lambda s: np.zeros((len(s), 2)), {}, tmp_path)


# ----------------------------------------------------------------------------- storage
def test_damaged_entries_are_misses_and_repaired(enc: Encoder, tmp_path: Path) -> None:
    cache = EmbeddingCache(tmp_path / "c")
    fn, encode = counted(enc, cache, batch_size=8)
    good = encode(SENTENCES)
    ((_, _, path),) = cache.entries()
    intact = path.read_bytes()
    damages = {
        "truncated": intact[: len(intact) // 2],
        "payload bit flipped": intact[:-4] + bytes([intact[-4] ^ 1]) + intact[-3:],
        "not an entry": b"hello",
        "empty": b"",
        "trailing bytes": intact + b"\0",
        "another key": intact.replace(path.stem.encode(), b"0" * len(path.stem), 1),
    }
    for name, data in damages.items():
        path.write_bytes(data)
        assert cache.get(path.stem, len(SENTENCES)) is None, name
        assert not path.exists(), f"{name}: the damaged entry was not removed"
        calls = fn.calls
        assert np.array_equal(encode(SENTENCES), good) and fn.calls == calls + 1, name  # recomputed ...
        assert path.read_bytes() == intact, name  # ... and stored again
    assert cache.get(path.stem, len(SENTENCES) + 1) is None  # another row count: not this call's entry


def test_a_foreign_file_cannot_pose_as_an_entry(tmp_path: Path) -> None:
    cache = EmbeddingCache(tmp_path)
    a, b = "a" * 64, "b" * 64
    assert cache.put(a, np.ones((3, 2), dtype=np.float32))
    cache.path(b).write_bytes(cache.path(a).read_bytes())  # a's entry under b's name
    assert cache.get(b) is None and not cache.path(b).exists()
    assert cache.path(a).read_bytes().startswith(MAGIC)
    got = cache.get(a, 3)
    assert got is not None and np.array_equal(got, np.ones((3, 2), dtype=np.float32))


def test_eviction_keeps_the_bound_least_recently_used_first(tmp_path: Path) -> None:
    arrays = {f"{i:x}" * 64: np.full((100, 64), i, dtype=np.float32) for i in range(1, 8)}
    probe = EmbeddingCache(tmp_path / "probe")
    probe.put("f" * 64, next(iter(arrays.values())))
    entry = probe.size()
    cache = EmbeddingCache(tmp_path / "c", max_bytes=3 * entry + entry // 2)  # room for 3 entries
    past = time.time() - 1000
    keys = list(arrays)
    for i, key in enumerate(keys):
        assert cache.put(key, arrays[key])
        os.utime(cache.path(key), (past + i, past + i))  # a strict order, whatever the clock's resolution
        assert cache.size() <= cache.max_bytes
        if i == 2:
            assert cache.get(keys[0]) is not None  # a hit refreshes the first entry: it survives
    kept = {p.stem for _, _, p in cache.entries()}
    assert kept == {keys[0], keys[5], keys[6]}
    for key in kept:
        got = cache.get(key)
        assert got is not None and np.array_equal(got, arrays[key])
    small = EmbeddingCache(tmp_path / "small", max_bytes=entry // 2)
    assert not small.put(keys[0], arrays[keys[0]]) and "bound" in (small.last_error or "")
    assert small.entries() == []


def test_concurrent_writers_and_readers_leave_a_valid_entry(tmp_path: Path) -> None:
    cache = EmbeddingCache(tmp_path)
    key, arr = "c" * 64, np.arange(40000, dtype=np.float32).reshape(200, 200)
    errors: list[str] = []

    def write() -> None:
        for _ in range(15):
            if not cache.put(key, arr):
                errors.append(cache.last_error or "?")

    def read() -> None:
        for _ in range(30):
            got = cache.get(key, 200)
            if got is not None and not np.array_equal(got, arr):
                errors.append("a reader saw a wrong array")

    threads = [threading.Thread(target=f) for f in (write, write, write, read, read)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    got = cache.get(key, 200)
    assert got is not None and np.array_equal(got, arr)
    assert [p.name for p in tmp_path.iterdir()] == [f"{key}.emb"]  # no temporary file left behind


def test_two_processes_writing_the_same_key(tmp_path: Path) -> None:
    script = (
        "import sys, numpy as np\n"
        "from csrl.evaluate.embed_cache import EmbeddingCache\n"
        "c = EmbeddingCache(sys.argv[1])\n"
        "a = np.arange(60000, dtype=np.float32).reshape(300, 200)\n"
        "assert all(c.put('d' * 64, a) for _ in range(40))\n"
    )
    procs = [subprocess.Popen([sys.executable, "-c", script, str(tmp_path)]) for _ in range(2)]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    got = EmbeddingCache(tmp_path).get("d" * 64, 300)
    assert got is not None and np.array_equal(got, np.arange(60000, dtype=np.float32).reshape(300, 200))
    assert len(list(tmp_path.iterdir())) == 1


def test_simultaneous_misses_encode_once(enc: Encoder, tmp_path: Path) -> None:
    """Two callers missing the same key at once: one encodes, the other waits and reads its entry."""
    cache = EmbeddingCache(tmp_path / "c")

    def slow(s: Sequence[str]) -> np.ndarray:
        time.sleep(0.5)
        return enc.encode(s, batch_size=8)

    fn = Counting(slow)
    results: list[np.ndarray] = []
    callers = [cached_encode(enc, fn, {"call": "slow"}, cache) for _ in range(2)]
    threads = [threading.Thread(target=lambda c=c: results.append(c(SENTENCES))) for c in callers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert fn.calls == 1 and len(results) == 2 and np.array_equal(results[0], results[1])
    assert not [p for p in (tmp_path / "c").iterdir() if p.name.endswith(".lock")]


def test_an_unwritable_folder_never_fails_the_evaluation(enc: Encoder, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    encode = encoder_encode_fn(enc, batch_size=8, cache=blocker / "cache")
    assert np.array_equal(encode(SENTENCES), enc.encode(SENTENCES, batch_size=8))
    assert encode.stats is not None and encode.stats.stored == 0 and "not all stored" in encode.stats.summary()


# ----------------------------------------------------------------------------- where, how big
def test_the_default_folder_and_bound(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert default_cache_dir({"CSRL_CACHE_DIR": str(tmp_path), "XDG_CACHE_HOME": "/x"}) == tmp_path
    assert default_cache_dir({"XDG_CACHE_HOME": "/x"}) == Path("/x/csrl/embeddings")
    assert default_cache_dir({}) == Path.home() / ".cache" / "csrl" / "embeddings"
    assert default_cache_dir({"CSRL_CACHE_DIR": "off"}) is None
    assert resolve_cache(True, {"CSRL_CACHE_DIR": "off"}) is None
    assert resolve_cache(False) is None
    made = resolve_cache(True, {"CSRL_CACHE_DIR": str(tmp_path), "CSRL_CACHE_MAX_BYTES": "500M"})
    assert made is not None and (made.root, made.max_bytes) == (tmp_path, 500 * 1024**2)
    assert resolve_cache(tmp_path / "x", {}) is not None
    assert resolve_cache(tmp_path / "x", {}).max_bytes == DEFAULT_MAX_BYTES  # type: ignore[union-attr]
    assert [parse_size(s) for s in ("1024", "2G", "2GiB", "1.5k", "3MB")] == [1024, 2 << 30, 2 << 30, 1536, 3 << 20]
    for bad in ("", "lots", "-1G", "inf", "G"):
        with pytest.raises(CsrlError, match="is not a size"):
            parse_size(bad)


# ----------------------------------------------------------------------------- the users
def _scores(path: Path) -> object:
    res = json.loads(path.read_text())
    return {k: v for k, v in res["sts"].items() if not k.startswith("seconds")}


def test_csrl_eval_caches_by_default_and_no_cache_writes_nothing(
    tiny_model_dir: Path, fake_data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    store = tmp_path / "cache"
    monkeypatch.setenv("CSRL_CACHE_DIR", str(store))
    base = ["eval", str(tiny_model_dir), "--data-dir", str(fake_data_dir), "--threads", "1"]
    assert main([*base, "--no-cache", "-o", str(tmp_path / "plain.json")]) == 0
    assert "embedding cache" not in capsys.readouterr().out
    assert not store.exists()
    assert main([*base, "-o", str(tmp_path / "miss.json")]) == 0
    out = capsys.readouterr().out
    assert f"embeddings encoded and stored in the embedding cache {store}" in out
    assert len(list(store.glob("*.emb"))) == 1
    assert main([*base, "-o", str(tmp_path / "hit.json")]) == 0
    out = capsys.readouterr().out
    assert f"embeddings read from the embedding cache {store}" in out and "--no-cache" in out
    assert "not comparable with published ones" in out.splitlines()[-2]  # the existing layout holds
    assert _scores(tmp_path / "plain.json") == _scores(tmp_path / "miss.json") == _scores(tmp_path / "hit.json")


def test_api_cache_argument(tiny_model_dir: Path, fake_data_dir: Path, tmp_path: Path) -> None:
    import csrl

    enc = load_encoder(str(tiny_model_dir))
    runs = [csrl.evaluate_encoder(enc, data_dir=fake_data_dir, cache=tmp_path / "c") for _ in range(2)]
    stats = [r.embedding_cache for r in runs]
    assert stats[0] is not None and stats[1] is not None
    assert (stats[0].misses, stats[1].hits) == (1, 1)
    assert runs[0].sts is not None and runs[1].sts is not None
    assert runs[0].sts.scores() == runs[1].sts.scores()
    by_name = csrl.evaluate_encoder(str(tiny_model_dir), data_dir=fake_data_dir, cache=tmp_path / "c")
    assert by_name.embedding_cache is not None and by_name.embedding_cache.misses == 1  # another encode path
    again = csrl.evaluate_encoder(str(tiny_model_dir), data_dir=fake_data_dir, cache=tmp_path / "c")
    assert again.embedding_cache is not None and again.embedding_cache.hits == 1
    default = csrl.evaluate_encoder(enc, data_dir=fake_data_dir)
    assert default.embedding_cache is None
    with pytest.raises(CsrlError, match="cannot fingerprint"):
        csrl.evaluate_encoder(lambda s: np.ones((len(s), 3)), data_dir=fake_data_dir, cache=True)


def test_training_caches_the_untrained_table_only(
    tiny_model_dir: Path, tiny_corpus: Path, fake_data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two runs (other seeds) from one model: the second reads the before-training table; the dev and
    final evaluations of trained weights never touch the cache."""
    from csrl.train.config import load_config
    from csrl.train.loop import train

    store = tmp_path / "cache"
    monkeypatch.setenv("CSRL_CACHE_DIR", str(store))
    logs: list[list[str]] = [[], []]
    for seed, log in zip((1, 2), logs, strict=True):
        cfg = load_config(None, [
            f"model.model={tiny_model_dir}", f"data.train_files=[{tiny_corpus}]", f"output_dir={tmp_path / str(seed)}",
            "train.batch_size=8", "train.max_steps=2", "train.eval_every=1", "train.checkpoint_every=0",
            "train.progress=false", f"train.seed={seed}",
        ])  # fmt: skip
        train(cfg, data_dir=fake_data_dir, eval_before=True, log=log.append)
    assert any("sentences encoded, stored in" in line for line in logs[0])
    assert any("embeddings read from" in line for line in logs[1])
    assert len(list(store.glob("*.emb"))) == 1
    before = [json.loads((tmp_path / s / "results" / "sts_before.json").read_text()) for s in ("1", "2")]
    assert before[0]["reported"] == before[1]["reported"]
