from __future__ import annotations

import itertools
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from csrl.data.corpora import open_corpus
from csrl.data.sampler import (
    EpochSampler,
    NoDuplicatesSampler,
    find_duplicates_in_batch,
    record_keys,
    text_key,
)
from csrl.errors import CsrlError


def epoch_batches(s: EpochSampler) -> list[list[int]]:
    return list(s)


def test_permutation_is_seeded_per_epoch_and_covers() -> None:
    s = EpochSampler(103, 10, seed=7, drop_last=False)
    assert s.steps_per_epoch == len(s) == 11
    e0 = epoch_batches(s)
    assert sorted(itertools.chain(*e0)) == list(range(103))
    assert [len(b) for b in e0] == [10] * 10 + [3]
    assert list(itertools.chain(*e0)) == np.random.default_rng([7, 0]).permutation(103).tolist()
    e1 = epoch_batches(s)
    assert e1 != e0 and sorted(itertools.chain(*e1)) == list(range(103))
    assert s.state_dict()["epoch"] == 2
    again = EpochSampler(103, 10, seed=7, drop_last=False)
    assert epoch_batches(again) == e0 and epoch_batches(again) == e1
    assert epoch_batches(EpochSampler(103, 10, seed=8, drop_last=False)) != e0


def test_drop_last_and_no_shuffle() -> None:
    s = EpochSampler(25, 10, seed=0)
    batches = epoch_batches(s)
    assert len(batches) == 2 and all(len(b) == 10 for b in batches)
    assert len(set(itertools.chain(*batches))) == 20
    assert epoch_batches(EpochSampler(25, 10, seed=0, shuffle=False)) == [list(range(10)), list(range(10, 20))]


@pytest.mark.parametrize("k", [0, 1, 5, 9, 10, 23])
def test_resume_equivalence(k: int) -> None:
    """k batches, save, new sampler + load: the rest equals an uninterrupted run, across epochs."""
    reference = EpochSampler(100, 10, seed=3)
    expected = [b for _ in range(3) for b in reference]
    s = EpochSampler(100, 10, seed=3)
    got: list[list[int]] = []
    while len(got) < k:
        for b in s:
            got.append(b)
            if len(got) == k:
                break
    state = json.loads(json.dumps(s.state_dict()))  # must survive JSON
    resumed = EpochSampler(100, 10, seed=3)
    resumed.load_state_dict(state)
    while len(got) < 30:
        got.extend(resumed)
    assert got[:30] == expected


def test_load_state_checks_settings() -> None:
    state = EpochSampler(100, 10, seed=3).state_dict()
    with pytest.raises(CsrlError, match=r"settings differ from the saved run \(n: saved 100 vs now 99\)"):
        EpochSampler(99, 10, seed=3).load_state_dict(state)
    with pytest.raises(CsrlError, match="outside"):
        EpochSampler(100, 10, seed=3).load_state_dict({**state, "position": 11})


@pytest.mark.parametrize("drop_last", [True, False])
def test_sharding_contiguous_disjoint_covering(drop_last: bool) -> None:
    n, b, world = 107, 4, 3
    ranks = [EpochSampler(n, b, seed=1, rank=r, world_size=world, drop_last=drop_last) for r in range(world)]
    per_rank = [epoch_batches(s) for s in ranks]
    steps = ranks[0].steps_per_epoch
    assert all(len(p) == steps for p in per_rank)
    for k in range(steps):
        sizes = {len(p[k]) for p in per_rank}
        assert len(sizes) == 1  # every rank gets the same batch size
        joined = list(itertools.chain(*(p[k] for p in per_rank)))
        assert joined == ranks[0].global_batch(0, k).tolist()  # rank r holds slice r of the global batch
    order = np.random.default_rng([1, 0]).permutation(n).tolist()
    global_order = [i for k in range(steps) for i in ranks[0].global_batch(0, k).tolist()]
    assert global_order[: min(n, len(global_order))] == order[: len(global_order)]
    seen = list(itertools.chain(*itertools.chain(*per_rank)))
    if drop_last:
        assert len(seen) == len(set(seen)) == (n // (b * world)) * b * world
    else:
        assert set(seen) == set(range(n))  # the padded tail repeats a few records from the start
        assert len(seen) - n < world


def test_corpus_smaller_than_a_batch() -> None:
    with pytest.raises(CsrlError, match=r"has 5 records but one global batch needs 8 \(batch_size=4 x world_size=2\)"):
        EpochSampler(5, 4, seed=0, world_size=2)
    assert EpochSampler(5, 8, seed=0, drop_last=False).steps_per_epoch == 1
    with pytest.raises(CsrlError):
        EpochSampler(0, 8, seed=0, drop_last=False)
    with pytest.raises(CsrlError, match="rank"):
        EpochSampler(50, 4, seed=0, rank=2, world_size=2)


def dup_keys(n: int, distinct: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, distinct, size=n)


@pytest.mark.parametrize("world", [1, 2])
def test_no_duplicates_never_repeats_a_key_in_a_global_batch(world: int) -> None:
    keys = dup_keys(400, 60)  # heavy duplication
    samplers = [NoDuplicatesSampler(keys, 8, seed=5, rank=r, world_size=world) for r in range(world)]
    per_rank = [epoch_batches(s) for s in samplers]
    steps = len(per_rank[0])
    assert steps >= 3 and all(len(p) == steps for p in per_rank)
    used: list[int] = []
    for k in range(steps):
        global_batch = list(itertools.chain(*(p[k] for p in per_rank)))
        assert len(global_batch) == 8 * world
        ks = keys[global_batch].tolist()
        assert len(set(ks)) == len(ks)
        used += global_batch
    assert len(used) == len(set(used))  # no record twice in an epoch


def test_no_duplicates_deterministic_and_resumable() -> None:
    keys = dup_keys(300, 100, seed=1)
    reference = NoDuplicatesSampler(keys, 10, seed=2)
    full = list(reference) + list(reference)
    assert full[: len(full) // 2] != full[len(full) // 2 :]
    s = NoDuplicatesSampler(keys, 10, seed=2)
    first = list(itertools.islice(iter(s), 7))
    resumed = NoDuplicatesSampler(keys, 10, seed=2)
    resumed.load_state_dict(s.state_dict())
    rest = list(resumed) + list(resumed)
    assert first + rest == full


def test_no_duplicates_without_duplicates_equals_plain_order() -> None:
    plain = epoch_batches(EpochSampler(50, 5, seed=4))
    assert epoch_batches(NoDuplicatesSampler(np.arange(50), 5, seed=4)) == plain


def test_no_duplicates_multi_field_keys_from_corpus(tmp_path: Path) -> None:
    p = tmp_path / "nli.csv"
    rows = ["sent0,sent1,hard_neg"] + [f"a{i % 7},b{i},c{i % 5}" for i in range(60)]
    p.write_text("\n".join(rows) + "\n")
    corpus = open_corpus(p)
    keys = record_keys(corpus)
    assert keys.shape == (60, 3) and keys.dtype == np.int64
    s = NoDuplicatesSampler(keys, 4, seed=0)
    for batch in s:
        texts = [t for i in batch for t in corpus.get(i)]
        assert find_duplicates_in_batch(texts) == []


def test_no_duplicates_requires_drop_last() -> None:
    with pytest.raises(CsrlError, match="drop_last=True"):
        NoDuplicatesSampler(np.arange(10), 2, seed=0, drop_last=False)


def test_find_duplicates_in_batch() -> None:
    assert find_duplicates_in_batch(["a", "b", "c"]) == []
    assert find_duplicates_in_batch(["a", "b", "a", "c", "b", "a"]) == [(0, 2), (0, 5), (1, 4), (2, 5)]


def test_text_key_is_stable_across_processes() -> None:
    code = "from csrl.data.sampler import text_key; print(text_key('héllo wörld'))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert int(out) == text_key("héllo wörld") and 0 <= text_key("x") < 2**63
    assert Counter(text_key(str(i)) for i in range(1000)).most_common(1)[0][1] == 1


# ---------------------------------------------------------------- length grouping
def _padded_width(sampler: EpochSampler, lengths: np.ndarray, epoch: int = 0) -> int:
    """Sum over batches of batch size x longest record: what dynamic padding costs."""
    return sum(len(b) * int(lengths[b].max()) for b in (sampler.batch(epoch, k) for k in range(len(sampler))))


@pytest.mark.parametrize("world", [1, 2])
def test_length_grouping_covers_the_epoch_and_cuts_padding(world: int) -> None:
    rng = np.random.default_rng(0)
    n, bs = 1000, 8
    lengths = rng.integers(1, 200, size=n)
    plain = [EpochSampler(n, bs, 3, rank=r, world_size=world) for r in range(world)]
    grouped = [
        EpochSampler(n, bs, 3, rank=r, world_size=world, lengths=lengths, group_batches=10) for r in range(world)
    ]
    seen = sorted(i for s in grouped for b in s for i in b)
    full = (n // (bs * world)) * bs * world
    assert len(seen) == full and len(set(seen)) == full  # every record of the full batches, once
    assert grouped[0].order(0)[full:].tolist() == plain[0].order(0)[full:].tolist()  # leftovers stay last
    for g, p in zip(grouped, plain, strict=True):
        assert _padded_width(g, lengths) < 0.75 * _padded_width(p, lengths)
    # within a window, a global batch holds neighbouring lengths: its spread is small
    spreads = [np.ptp(lengths[grouped[0].global_batch(0, k)]) for k in range(len(grouped[0]))]
    assert np.median(spreads) < 0.25 * np.ptp(lengths)
    # order depends on (seed, epoch) only, and differs between epochs
    again = EpochSampler(n, bs * world, 3, lengths=lengths, group_batches=10)
    assert (
        again.order(1).tolist() == EpochSampler(n, bs * world, 3, lengths=lengths, group_batches=10).order(1).tolist()
    )
    assert again.order(0).tolist() != again.order(1).tolist()


def test_length_grouping_resumes_and_checks_settings() -> None:
    lengths = np.arange(300) % 37
    a = EpochSampler(300, 10, 5, lengths=lengths, group_batches=4)
    it = iter(a)
    first = [next(it) for _ in range(7)]
    state = a.state_dict()
    rest = list(it)
    b = EpochSampler(300, 10, 5, lengths=lengths, group_batches=4)
    b.load_state_dict(state)
    assert list(b) == rest and len(first) + len(rest) == len(a)
    with pytest.raises(CsrlError, match="group_batches"):
        EpochSampler(300, 10, 5, lengths=lengths, group_batches=8).load_state_dict(state)
    with pytest.raises(CsrlError, match="one length per record"):
        EpochSampler(300, 10, 5, group_batches=4)


def test_corpus_record_bytes_are_the_lines_byte_lengths(tmp_path: Path) -> None:
    path = tmp_path / "c.txt"
    lines = ["short", "a much longer line é", "mid length"]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with open_corpus(path) as corpus:
        assert corpus.record_bytes().tolist() == [len(x.encode("utf-8")) for x in lines]


# ---- no endless loops: a plan that cannot fill a batch fails at once; a skewed corpus plans in linear time


def _list_rescan_plan(keys: list[tuple[int, ...]], order: list[int], g: int) -> list[list[int]]:
    """The greedy plan written as a plain rescan of the deferred list (the documented rule, quadratic)."""
    batches: list[list[int]] = []
    deferred: list[int] = []
    current: list[int] = []
    seen: set[int] = set()

    def offer(i: int) -> None:
        if any(k in seen for k in keys[i]):
            deferred.append(i)
        else:
            current.append(i)
            seen.update(keys[i])

    for i in order:
        offer(i)
        while len(current) == g:
            batches.append(current.copy())
            current.clear()
            seen.clear()
            waiting = deferred.copy()
            deferred.clear()
            for j, d in enumerate(waiting):
                if len(current) == g:
                    deferred.extend(waiting[j:])
                    break
                offer(d)
    return batches


@pytest.mark.parametrize("width", [1, 3])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_no_duplicates_plan_equals_the_list_rescan(width: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    keys = rng.integers(0, 40 * width**2, size=(500, width))
    keys[:150, 0] = 3  # one text dominates: many records wait in the deferred queues
    s = NoDuplicatesSampler(keys, 6, seed=seed, world_size=2)
    for epoch in (0, 1):
        as_tuples = [tuple(r) for r in keys.tolist()]
        expected = _list_rescan_plan(as_tuples, s.order(epoch).tolist(), 12)
        assert [b.tolist() for b in s.plan(epoch)] == expected
        assert len(expected) >= 5


def test_no_duplicates_with_too_few_distinct_texts_fails_fast(tmp_path: Path) -> None:
    p = tmp_path / "three.txt"
    p.write_text("".join(f"{t}\n" for t in ["a red cat", "a blue dog", "a green bird"] * 100))
    keys = record_keys(open_corpus(p))
    with pytest.raises(CsrlError, match=r"batch of 8 records whose texts all differ.*300 records hold only 3 distinct"):
        NoDuplicatesSampler(keys, 8, seed=0)
    with pytest.raises(CsrlError, match="only 3 distinct"):  # 2 x 2 per rank: a global batch of 4
        NoDuplicatesSampler(keys, 2, seed=0, world_size=2)
    assert len(list(NoDuplicatesSampler(keys, 3, seed=0))) == 100  # 3 distinct texts fill batches of 3


def test_no_duplicates_plans_a_skewed_corpus_in_linear_time() -> None:
    import time

    keys = np.arange(200_000, dtype=np.int64)
    keys[:100_000] = 7  # half the corpus is one text: a rescan of the deferred list is ~10^9 steps
    t0 = time.perf_counter()
    s = NoDuplicatesSampler(keys, 64, seed=0)
    assert time.perf_counter() - t0 < 10
    batches = s.plan(0)
    assert len(batches) == 100_001 // 63  # every batch: 63 distinct texts and one copy of the repeated one
    assert all(int((keys[b] == 7).sum()) == 1 for b in batches)


def test_training_with_too_few_distinct_texts_fails_before_loading_the_model(tmp_path: Path) -> None:
    from csrl.train.config import load_config
    from csrl.train.loop import train

    p = tmp_path / "three.txt"
    p.write_text("".join(f"{t}\n" for t in ["a red cat", "a blue dog", "a green bird"] * 100))
    cfg = load_config(
        None,
        [f"model.model={tmp_path / 'no-model-needed'}", f"data.train_files=[{p}]", f"output_dir={tmp_path / 'run'}",
         "train.batch_size=8", "data.no_duplicates=true", "train.final_eval=false", "train.progress=false"],
    )  # fmt: skip
    with pytest.raises(CsrlError, match="only 3 distinct text"):
        train(cfg)
    assert not (tmp_path / "run").exists()
