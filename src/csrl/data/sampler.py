"""Seeded, resumable, shardable batch samplers over record indices ``0..n-1``.

Order: epoch ``e`` visits the records in ``np.random.default_rng([seed, e]).permutation(n)``, so any
epoch can be rebuilt from ``(seed, epoch)`` alone. The permutation is cut into *global* batches of
``batch_size * world_size`` indices; rank ``r`` takes the contiguous slice
``[r * batch_size, (r + 1) * batch_size)`` of each global batch. Together the ranks cover the global
batch exactly once, which is what in-batch negatives gathered across ranks expect.

State: ``(epoch, position)``, where ``position`` counts the batches already handed out in ``epoch``.
Iterating yields the rest of the current epoch; when it is exhausted the state moves to
``(epoch + 1, 0)``. ``state_dict()``/``load_state_dict()`` round-trip it, so a new sampler loaded with a
saved state yields exactly the batches the old one had not yet yielded. Behind a prefetching
``DataLoader`` the sampler runs ahead of training: save the position of the last batch the training
loop actually consumed (``{"epoch": e, "position": steps_done_in_epoch}``), not the sampler's own.

Length grouping (``lengths`` and ``group_batches=k > 1``): after the permutation, every window of ``k``
full global batches is sorted by record length (longest first) and cut into batches, then the epoch's
full global batches are shuffled again (``default_rng([seed, epoch, 1])``). Batches then hold records of
similar length, so dynamic padding wastes little; the order still depends on ``(seed, epoch)`` alone.
The leftover partial batch stays last.

:class:`NoDuplicatesSampler` additionally keeps equal texts out of one global batch (an in-batch
"negative" equal to the positive is a false negative).
"""

from __future__ import annotations

import hashlib
import heapq
import itertools
import math
from collections import defaultdict, deque
from collections.abc import Hashable, Iterator, Sequence
from typing import Any, Protocol

import numpy as np

from csrl.errors import CsrlError

__all__ = [
    "EpochSampler",
    "NoDuplicatesSampler",
    "find_duplicates_in_batch",
    "record_keys",
    "text_key",
]


class EpochSampler:
    """Batches of indices from a per-epoch seeded permutation; see the module docstring for order and state.

    ``drop_last=True`` drops the final incomplete global batch. With ``drop_last=False`` the final global
    batch is kept; if ``world_size > 1`` it is padded by wrapping around to the start of the epoch's
    order up to a multiple of ``world_size``, so every rank gets a batch of the same size (a few records
    are then seen twice in that epoch). ``shuffle=False`` visits records in file order.
    """

    def __init__(
        self,
        n: int,
        batch_size: int,
        seed: int,
        *,
        drop_last: bool = True,
        rank: int = 0,
        world_size: int = 1,
        shuffle: bool = True,
        lengths: np.ndarray | None = None,
        group_batches: int = 1,
    ) -> None:
        if batch_size < 1 or world_size < 1 or not 0 <= rank < world_size:
            raise CsrlError(
                f"invalid sampler settings: batch_size={batch_size}, rank={rank}, world_size={world_size}",
                hint="batch_size and world_size must be >= 1 and 0 <= rank < world_size",
            )
        self.n, self.batch_size, self.seed = int(n), int(batch_size), int(seed)
        self.drop_last, self.rank, self.world_size, self.shuffle = drop_last, rank, world_size, shuffle
        self.global_batch_size = self.batch_size * self.world_size
        if self.n == 0 or (drop_last and self.n < self.global_batch_size):
            raise CsrlError(
                f"the corpus has {self.n} records but one global batch needs {self.global_batch_size} "
                f"(batch_size={self.batch_size} x world_size={self.world_size})",
                hint="use a smaller batch size or fewer processes, add training data, or set drop_last=False",
            )
        if group_batches < 1 or (group_batches > 1 and (lengths is None or len(lengths) < self.n)):
            raise CsrlError(
                f"invalid length grouping: group_batches={group_batches} with "
                f"{'no' if lengths is None else len(lengths)} lengths for {self.n} records",
                hint="group_batches >= 1; grouping (> 1) needs one length per record",
            )
        self.group_batches = int(group_batches)
        self.lengths = None if lengths is None else np.asarray(lengths, dtype=np.int64)
        self.epoch = 0
        self.position = 0
        self._cache: tuple[int, np.ndarray] | None = None

    # ---- order -------------------------------------------------------------------------------------

    def order(self, epoch: int) -> np.ndarray:
        """All indices of ``epoch`` in visiting order (``int64``, length ``n``)."""
        if self._cache is None or self._cache[0] != epoch:
            if self.shuffle:
                perm = np.random.default_rng([self.seed, epoch]).permutation(self.n)
            else:
                perm = np.arange(self.n)
            if self.group_batches > 1:
                perm = self._group_by_length(perm.astype(np.int64, copy=False), epoch)
            self._cache = (epoch, perm.astype(np.int64, copy=False))
        return self._cache[1]

    def _group_by_length(self, perm: np.ndarray, epoch: int) -> np.ndarray:
        """Sort windows of ``group_batches`` full global batches by length, then shuffle the batches."""
        assert self.lengths is not None
        g = self.global_batch_size
        full = (self.n // g) * g
        span = g * self.group_batches
        head = perm[:full]
        pieces = [c[np.argsort(-self.lengths[c], kind="stable")] for c in np.split(head, range(span, full, span))]
        batches = np.concatenate(pieces).reshape(-1, g) if full else head.reshape(0, g)
        batches = batches[np.random.default_rng([self.seed, epoch, 1]).permutation(len(batches))]
        return np.concatenate([batches.ravel(), perm[full:]])

    @property
    def steps_per_epoch(self) -> int:
        """Batches per epoch for each rank (the same on every rank)."""
        if self.drop_last:
            return self.n // self.global_batch_size
        return math.ceil(self.n / self.global_batch_size)

    def __len__(self) -> int:
        return self.steps_per_epoch

    def global_batch(self, epoch: int, k: int) -> np.ndarray:
        """Global batch ``k`` of ``epoch`` (all ranks' indices, rank 0's slice first)."""
        order = self.order(epoch)
        g = self.global_batch_size
        batch = order[k * g : (k + 1) * g]
        if len(batch) < g and self.world_size > 1:  # only with drop_last=False: pad to equal shards
            need = -len(batch) % self.world_size
            batch = np.concatenate([batch, np.resize(order, need)])
        return batch

    def batch(self, epoch: int, k: int) -> list[int]:
        """This rank's batch ``k`` of ``epoch``: its contiguous slice of the global batch."""
        if not 0 <= k < self.steps_per_epoch:
            raise IndexError(f"batch {k} out of range: an epoch has {self.steps_per_epoch} batches")
        g = self.global_batch(epoch, k)
        per_rank = len(g) // self.world_size
        return [int(i) for i in g[self.rank * per_rank : (self.rank + 1) * per_rank]]

    # ---- iteration and state -----------------------------------------------------------------------

    def __iter__(self) -> Iterator[list[int]]:
        if self.position >= self.steps_per_epoch:
            self.epoch, self.position = self.epoch + 1, 0
        epoch = self.epoch
        while self.epoch == epoch and self.position < self.steps_per_epoch:
            k = self.position
            self.position += 1
            yield self.batch(epoch, k)
        if self.epoch == epoch:
            self.epoch, self.position = epoch + 1, 0

    def set_epoch(self, epoch: int) -> None:
        """Jump to the start of ``epoch``."""
        self.epoch, self.position = int(epoch), 0

    def _fingerprint(self) -> dict[str, Any]:
        return {
            "n": self.n,
            "batch_size": self.batch_size,
            "world_size": self.world_size,
            "seed": self.seed,
            "shuffle": self.shuffle,
            "drop_last": self.drop_last,
            **({"group_batches": self.group_batches} if self.group_batches > 1 else {}),
        }

    def state_dict(self) -> dict[str, Any]:
        """JSON-serialisable state: ``epoch``, ``position`` and the settings they are only valid for."""
        return {"epoch": self.epoch, "position": self.position, **self._fingerprint()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from a saved state; settings present in ``state`` must match this sampler's."""
        mine = self._fingerprint()
        diff = {k: (state[k], v) for k, v in mine.items() if k in state and state[k] != v}
        if diff:
            listed = ", ".join(f"{k}: saved {a!r} vs now {b!r}" for k, (a, b) in diff.items())
            raise CsrlError(
                f"cannot resume the sampler: settings differ from the saved run ({listed})",
                hint="resume with the same corpus, batch size, seed and number of processes",
            )
        epoch, position = int(state["epoch"]), int(state["position"])
        if epoch < 0 or not 0 <= position <= self.steps_per_epoch:
            raise CsrlError(
                f"cannot resume the sampler: position {position} of epoch {epoch} is outside 0..{self.steps_per_epoch}",
                hint="the saved state is corrupt or from another run; start a fresh run",
            )
        self.epoch, self.position = epoch, position


class _KeyLookup(Protocol):
    def __len__(self) -> int: ...

    def __getitem__(self, i: int, /) -> Any: ...


class NoDuplicatesSampler(EpochSampler):
    """Like :class:`EpochSampler`, but no key appears twice in one global batch.

    ``keys[i]`` holds the keys of record ``i``: one hashable, or a sequence of them (one per text of the
    record, e.g. a row of ``record_keys(corpus)``). Global batches are filled greedily from the epoch's
    permutation; a record with a key already in the batch being filled is deferred, and deferred records
    are tried first, in deferral order, when the next batch starts. Keys only need equality, so the
    plan depends on ``(seed, epoch)`` alone and is resumable. Keys inside one record may repeat.

    Only full global batches are made: the records left over at the end of an epoch (fewer than a batch,
    or only duplicates of each other) are dropped, so ``drop_last`` must be ``True``.
    ``steps_per_epoch`` is an upper bound (``n // global_batch_size``); an epoch with many duplicates
    can have fewer batches. Planning an epoch is a Python loop over ``n`` records (1-2 s per
    million, duplicates or not: see :meth:`plan`); the plan of the current epoch is cached. Epoch 0 is
    planned on construction, so a corpus that cannot fill a single duplicate-free batch (fewer distinct
    texts than the global batch size) raises :class:`CsrlError` at once instead of never yielding.
    """

    def __init__(
        self,
        keys: _KeyLookup | np.ndarray,
        batch_size: int,
        seed: int,
        *,
        drop_last: bool = True,
        rank: int = 0,
        world_size: int = 1,
        shuffle: bool = True,
        lengths: np.ndarray | None = None,
        group_batches: int = 1,
    ) -> None:
        if not drop_last:
            raise CsrlError(
                "NoDuplicatesSampler needs drop_last=True",
                hint="leftover records at the end of an epoch cannot always fill a batch without duplicates",
            )
        super().__init__(
            len(keys), batch_size, seed, drop_last=True, rank=rank, world_size=world_size, shuffle=shuffle,
            lengths=lengths, group_batches=group_batches,
        )  # fmt: skip
        self._keys = keys
        self._plan: tuple[int, list[np.ndarray]] | None = None
        self.plan(0)  # fails now, with the numbers, if no batch can be made

    def _record_keys(self, i: int) -> tuple[Hashable, ...]:
        k = self._keys[i]
        if isinstance(k, np.ndarray):
            return tuple(k.tolist())
        if isinstance(k, str | bytes) or not isinstance(k, Sequence):
            return (k,)
        return tuple(k)

    def plan(self, epoch: int) -> list[np.ndarray]:
        """Every global batch of ``epoch``, in order; :class:`CsrlError` when not even one can be made.

        Deferred records wait in queues, one per key tuple, and a heap orders the queues by their oldest
        record. Retrying the deferred records at the start of a batch in deferral order only ever accepts
        the oldest record of a queue (the others share its keys, now in the batch), so the retry visits
        each queue's head once: ``O(batch * log(queues))`` per batch, where a list rescan would cost
        ``O(deferred)`` and grow quadratic in a corpus dominated by one repeated text.
        Termination: every record is offered once from the permutation; each retry pops every heap
        entry at most once before the entries it set aside are pushed back; each batch emitted removes
        ``global_batch_size`` records for good.
        """
        if self._plan is not None and self._plan[0] == epoch:
            return self._plan[1]
        g = self.global_batch_size
        batches: list[np.ndarray] = []
        current: list[int] = []
        seen: set[Hashable] = set()
        queues: dict[tuple[Hashable, ...], deque[tuple[int, int]]] = {}  # keys -> (deferral number, record)
        heads: list[tuple[int, tuple[Hashable, ...]]] = []  # (deferral number of a queue's oldest record, keys)
        deferrals = itertools.count()

        def retry_deferred() -> None:  # in deferral order, until the batch is full
            aside = []
            while heads and len(current) < g:
                _, ks = heapq.heappop(heads)
                q = queues[ks]
                if seen.isdisjoint(ks):
                    current.append(q.popleft()[1])
                    seen.update(ks)
                if q:
                    aside.append((q[0][0], ks))
                else:
                    del queues[ks]
            for item in aside:
                heapq.heappush(heads, item)

        for i in self.order(epoch).tolist():
            ks = self._record_keys(i)
            if seen.isdisjoint(ks):
                current.append(i)
                seen.update(ks)
            else:  # deferred: wait in the queue of its keys
                number, q = next(deferrals), queues.get(ks)
                if q is None:
                    q = queues[ks] = deque()
                    heapq.heappush(heads, (number, ks))
                q.append((number, i))
            while len(current) == g:  # emit, then start the next batch with the deferred records
                batches.append(np.asarray(current, dtype=np.int64))
                current.clear()
                seen.clear()
                retry_deferred()
        if not batches:
            raise self._no_batch(epoch)
        self._plan = (epoch, batches)
        return batches

    def _no_batch(self, epoch: int) -> CsrlError:
        distinct = len({k for i in range(self.n) for k in self._record_keys(i)})
        return CsrlError(
            f"no duplicates: epoch {epoch} cannot fill a single batch of {self.global_batch_size} records whose "
            f"texts all differ (batch_size={self.batch_size} x world_size={self.world_size}); the {self.n} "
            f"records hold only {distinct} distinct text(s)",
            hint="use a smaller batch size (with one text per record: at most the number of distinct texts), "
            "add distinct records, or turn duplicate-free batches off (data.no_duplicates=false)",
        )

    def steps_in_epoch(self, epoch: int) -> int:
        """Exact number of batches of ``epoch`` (plans the epoch)."""
        return len(self.plan(epoch))

    def global_batch(self, epoch: int, k: int) -> np.ndarray:
        return self.plan(epoch)[k]

    def batch(self, epoch: int, k: int) -> list[int]:
        g = self.plan(epoch)[k]
        b = self.batch_size
        return [int(i) for i in g[self.rank * b : (self.rank + 1) * b]]

    def __iter__(self) -> Iterator[list[int]]:
        if self.position >= self.steps_in_epoch(self.epoch):
            self.epoch, self.position = self.epoch + 1, 0
        epoch = self.epoch
        while self.epoch == epoch and self.position < self.steps_in_epoch(epoch):
            k = self.position
            self.position += 1
            yield self.batch(epoch, k)
        if self.epoch == epoch:
            self.epoch, self.position = epoch + 1, 0


def text_key(text: str) -> int:
    """A stable 63-bit key of a text (BLAKE2b; unlike ``hash()`` it is the same in every process)."""
    digest = hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


class _Records(Protocol):
    def __len__(self) -> int: ...

    def get(self, i: int, /) -> tuple[str, ...]: ...


def record_keys(corpus: _Records) -> np.ndarray:
    """``(n, fields)`` int64 array of :func:`text_key` of every field of every record, for
    :class:`NoDuplicatesSampler`. Reads the whole corpus once (a few seconds per million records) and
    keeps 8 bytes per text."""
    n = len(corpus)
    width = len(corpus.get(0)) if n else 0
    out = np.empty((n, width), dtype=np.int64)
    for i in range(n):
        out[i] = [text_key(t) for t in corpus.get(i)]
    return out


def find_duplicates_in_batch(texts: Sequence[str]) -> list[tuple[int, int]]:
    """Every pair ``(i, j)``, ``i < j``, with ``texts[i] == texts[j]``, sorted; empty when all differ."""
    positions: defaultdict[str, list[int]] = defaultdict(list)
    for j, t in enumerate(texts):
        positions[t].append(j)
    pairs = [(a, b) for ps in positions.values() if len(ps) > 1 for x, a in enumerate(ps) for b in ps[x + 1 :]]
    return sorted(pairs)
