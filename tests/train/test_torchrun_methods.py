"""``torchrun --nproc_per_node 2 -m csrl train`` for the newer methods: the real launcher, the real CLI, gloo on CPU.

Deterministic methods (dropout 0): the two-rank run must log the loss (and every loss term) of the single-process
run on the same global batches at every step, since each method's extra inputs are gathered across ranks
(SimCSE++'s dropout-free clean view, SNCSE's negation view, the gold scores of scored pairs, NLI's hard negatives,
ESimCSE's momentum queue with word repetition off) and the Matryoshka prefixes are taken of the gathered batch.

Stochastic methods (ESimCSE's word repetition, DiffCSE's masking and sampling: rank-local random draws, so two
ranks do not replay one process): the run must finish, log one finite loss per step, write the method's state
into its checkpoints and not into ``best/``, and every rank must end with the same weights (the DiffCSE
discriminator included: a module DDP did not know would train on each rank's half of the batch and drift apart)
and the same momentum encoder and queue. Each rank's final state is read through a launcher that wraps
``csrl.train.loop.finish`` and then runs the real CLI.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from ddp_helpers import free_port, torchrun_overrides
from safetensors.torch import load_file

from csrl.train.config import load_config
from csrl.train.loop import train

STEPS = 4
BATCH = 8  # global; 4 rows per rank
QUEUE_RATIO = 1.5  # ESimCSE's queue: 12 rows, so step 3 drops half of step 1's keys (FIFO order across ranks)


@pytest.fixture(scope="module")
def stsb_file(tmp_path_factory: pytest.TempPathFactory, tiny_corpus: Path) -> Path:
    """40 pairs in SentEval's STS-B layout (genre, file, year, id, score, sentence1, sentence2)."""
    rng = random.Random(5)
    sents = tiny_corpus.read_text().splitlines()
    path = tmp_path_factory.mktemp("stsb") / "sts-train.csv"
    rows = [f"g\tf\t2012\t{i}\t{rng.uniform(0, 5):.2f}\t{rng.choice(sents)}\t{rng.choice(sents)}" for i in range(40)]
    path.write_text("\n".join(rows) + "\n")
    return path


@pytest.fixture(scope="module")
def triplets_file(tmp_path_factory: pytest.TempPathFactory, tiny_corpus: Path) -> Path:
    """40 NLI-style triplets: (sentence, the sentence without its first word, another sentence)."""
    rng = random.Random(6)
    sents = tiny_corpus.read_text().splitlines()
    path = tmp_path_factory.mktemp("nli") / "triplets.csv"
    rows = []
    for s in rng.sample(sents, 40):
        rows.append(f"{s},{s.split(' ', 1)[1]},{rng.choice(sents)}")
    path.write_text("sent0,sent1,hard_neg\n" + "\n".join(rows) + "\n")
    return path


def _overrides(model: Path, train_file: Path, out: Path) -> list[str]:
    return torchrun_overrides(model, train_file, out, batch_size=BATCH, steps=STEPS)


def _torchrun(
    recipe: Path, overrides: list[str], *, script: Path | None = None, env: dict[str, str] | None = None
) -> str:
    """``torchrun --nproc_per_node 2 -m csrl train RECIPE`` (or ``SCRIPT train RECIPE``); returns its stdout."""
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
        f"--master_port={free_port()}",
        *(["-m", "csrl"] if script is None else [str(script)]), "train", str(recipe), "--no-before",
    ]  # fmt: skip
    for o in overrides:
        cmd += ["--set", o]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore", **(env or {})}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.stdout.count("run: ") == 1, "only rank 0 reports"
    assert f"steps: {STEPS}" in proc.stdout
    return proc.stdout


def _records(run: Path) -> dict[int, dict[str, float]]:
    """Each step's logged values (``train/loss`` and the ``loss/*`` terms); a step logged twice fails."""
    recs = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in recs if "train/loss" in r]
    assert steps == sorted(set(steps)), f"a step was logged twice: {steps}"
    keep = ("train/loss", "loss/")
    return {r["step"]: {k: v for k, v in r.items() if k.startswith(keep)} for r in recs if "train/loss" in r}


def _flat(checkpoint: Path) -> torch.Tensor:
    """Every tensor of a checkpoint's ``model.safetensors``, in name order, as one vector."""
    weights = load_file(checkpoint / "model.safetensors")
    return torch.cat([weights[k].flatten().double() for k in sorted(weights)])


# ----------------------------------------------------------------------------- deterministic methods
RECIPES = {
    "simcsepp": "loss:\n  name: simcsepp\n  params: {temperature: 0.05, dcl_weight: 0.1, dcl_temperature: 5.0, off_dropout: true}\n",
    # SNCSE's loss works with any pooler: the folder's own (cls) instead of the recipe's prompt pooler
    "sncse": "loss:\n  name: sncse\n  params: {temperature: 0.05, alpha: 0.1, beta: 0.3, bml_weight: 0.5}\n",
    "matryoshka": "loss:\n  name: matryoshka\n  params: {inner: infonce, inner_params: {temperature: 0.05}, dims: [8, 16, 32], weights: [1.0, 0.5, 2.0]}\n",
    "cosent-stsb": "data:\n  format: stsb\nloss:\n  name: cosent\n  params: {scale: 20.0}\n",
    "angle-nli": "data:\n  format: csv\n  columns: [sent0, sent1, hard_neg]\nloss:\n  name: angle\n  params: {positive_score: 1.0}\n",
    # word repetition off: the queue (gathered momentum keys, FIFO) is then the only thing beyond InfoNCE
    "esimcse-nodup": f"loss:\n  name: esimcse\n  params: {{temperature: 0.05, dup_rate: 0.0, momentum: 0.9, queue_ratio: {QUEUE_RATIO}}}\n",
}
# the terms each method must log (so the comparison covers the extra inputs' terms, not only the total)
TERMS = {
    "simcsepp": {"loss/infonce", "loss/dcl"},
    "sncse": {"loss/infonce", "loss/bml", "loss/soft_gap"},
    "matryoshka": {"loss/dim8", "loss/dim16", "loss/dim32", "loss/infonce"},
    "cosent-stsb": {"loss/cosent"},
    "angle-nli": {"loss/cosine", "loss/ibn", "loss/angle"},
    "esimcse-nodup": {"loss/esimcse"},
}


@pytest.mark.parametrize("method", sorted(RECIPES))
def test_torchrun_two_ranks_match_one_process(
    method: str, no_dropout_model: Path, tiny_corpus: Path, stsb_file: Path, triplets_file: Path, tmp_path: Path
) -> None:
    data = {"cosent-stsb": stsb_file, "angle-nli": triplets_file}.get(method, tiny_corpus)
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(RECIPES[method])
    single = train(load_config(recipe, _overrides(no_dropout_model, data, tmp_path / "single")))
    assert single.steps == STEPS
    _torchrun(recipe, _overrides(no_dropout_model, data, tmp_path / "ddp"))

    ref, got = _records(tmp_path / "single"), _records(tmp_path / "ddp")
    assert got.keys() == ref.keys() == set(range(1, STEPS + 1))
    for step in ref:
        assert TERMS[method] <= ref[step].keys(), (step, sorted(ref[step]))
        assert got[step].keys() == ref[step].keys(), step
        for key, value in ref[step].items():
            # fp32 runs agree to ~1e-6; a step moves the loss by ~2e-4 to 1e-3 relative
            assert got[step][key] == pytest.approx(value, rel=1e-5, abs=1e-6), (step, key)
    # the losses at steps 2..4 depend on every earlier update (and ESimCSE's on the queue of earlier steps)
    assert len({round(ref[s]["train/loss"], 6) for s in ref}) == STEPS, "the loss must change along the run"
    ckpts = sorted(p.name for p in (tmp_path / "ddp" / "checkpoints").iterdir())
    assert (
        ckpts
        == sorted(p.name for p in (tmp_path / "single" / "checkpoints").iterdir())
        == ["step-0000002", "step-0000004"]
    )
    # the weights' trajectory itself: the final weights differ from the single run's by a small fraction of what
    # steps 3 and 4 moved them. Not elementwise, and not tighter: the step-1 gradients agree to ~1e-5 (measured), but
    # AdamW divides by sqrt(v) + 1e-8, so gradient entries near 1e-8 (CoSENT's are ~1e-6 on this model) turn fp32
    # noise into whole updates; measured drift 2e-4 (ESimCSE) to 2e-2 (CoSENT). A gradient missing a rank's half of
    # the batch changes the update's direction by O(1).
    single2, single4, ddp4 = (
        _flat(tmp_path / run / "checkpoints" / name)
        for run, name in (("single", ckpts[0]), ("single", ckpts[1]), ("ddp", ckpts[1]))
    )
    drift = float((ddp4 - single4).norm() / (single4 - single2).norm())
    assert drift < 0.1, f"two-rank weights drift from the single run's: {drift:.2e} of the last two steps' update"
    assert (tmp_path / "ddp" / "best" / "model.safetensors").exists()

    if method == "esimcse-nodup":  # the same queue, row for row, and the same momentum encoder
        last = f"checkpoints/{ckpts[-1]}/state.pt"
        mine = torch.load(tmp_path / "ddp" / last, weights_only=False)["method"]["momentum"]
        theirs = torch.load(tmp_path / "single" / last, weights_only=False)["method"]["momentum"]
        assert mine["queue"].shape == (round(QUEUE_RATIO * BATCH), 32)
        torch.testing.assert_close(mine["queue"], theirs["queue"], rtol=1e-4, atol=1e-5)
        for k, v in theirs["encoder"].items():
            torch.testing.assert_close(mine["encoder"][k], v, rtol=1e-4, atol=1e-5, msg=lambda m, k=k: f"{k}: {m}")


# ----------------------------------------------------------------------------- stochastic methods
LAUNCHER = '''\
"""torchrun target: the real CLI, with csrl.train.loop.finish wrapped to save each rank's final state."""
import os
import sys

import torch

import csrl.train.loop as loop
from csrl.cli.main import main
from csrl.train import distributed as dist

real_finish = loop.finish


def finish(run, state, before):
    weights = {k: v.detach().clone() for k, v in run.encoder.state_dict().items()}
    saved = {"step": state.step, "encoder": weights, "method": run.method.state_dict()}
    torch.save(saved, os.path.join(os.environ["RANK_STATE_DIR"], f"rank{dist.rank()}.pt"))
    return real_finish(run, state, before)


loop.finish = finish
sys.exit(main())
'''

RTD_WEIGHT = 0.5  # large enough that the RTD term moves the logged loss visibly


@pytest.fixture(scope="module")
def generator_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from test_diffcse import _minilm_tokenizer, _save_mlm

    return _save_mlm(tmp_path_factory.mktemp("generator"), _minilm_tokenizer())


def test_torchrun_esimcse_and_diffcse_keep_ranks_in_sync(
    no_dropout_model: Path, generator_dir: Path, tiny_corpus: Path, tmp_path: Path
) -> None:
    """ESimCSE with word repetition and DiffCSE in one two-rank run (both draw rank-local random numbers)."""
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        f"loss:\n  name: esimcse\n  params: {{temperature: 0.05, dup_rate: 0.32, momentum: 0.9, queue_ratio: {QUEUE_RATIO}}}\n"
        f"train:\n  diffcse_weight: {RTD_WEIGHT}\n  diffcse_generator: {generator_dir}\n  diffcse_mask_ratio: 0.3\n"
    )
    launcher, states = tmp_path / "launch.py", tmp_path / "ranks"
    launcher.write_text(LAUNCHER)
    states.mkdir()
    run = tmp_path / "ddp"
    _torchrun(
        recipe, _overrides(no_dropout_model, tiny_corpus, run), script=launcher, env={"RANK_STATE_DIR": str(states)}
    )

    # one finite loss per step; the logged total is the global InfoNCE-with-queue plus lambda x rank 0's RTD loss
    # (the RTD term is scaled by the world size like the contrastive loss, and the log divides it back)
    recs = _records(run)
    assert sorted(recs) == list(range(1, STEPS + 1))
    for step, r in recs.items():
        assert all(torch.isfinite(torch.tensor(v)) for v in r.values()), (step, r)
        assert 0.0 < r["loss/rtd_replaced"] < 1.0, (step, r)
        assert r["train/loss"] == pytest.approx(r["loss/esimcse"] + RTD_WEIGHT * r["loss/rtd"], rel=1e-5), step

    # every rank ends with the same weights (DDP all-reduced every gradient, the discriminator's included), the same
    # momentum encoder and the same global queue; rank 0's are what the final checkpoint holds
    rank0, rank1 = (torch.load(states / f"rank{r}.pt", weights_only=False) for r in (0, 1))
    assert rank0["step"] == rank1["step"] == STEPS
    assert rank0["encoder"].keys() == rank1["encoder"].keys()
    disc = sorted(k for k in rank0["encoder"] if k.startswith("diffcse."))
    assert "diffcse.head.weight" in disc and any(k.startswith("diffcse.backbone.") for k in disc)
    for k, v in rank0["encoder"].items():
        torch.testing.assert_close(
            rank1["encoder"][k], v, rtol=0, atol=0, msg=lambda m, k=k: f"{k} differs across ranks: {m}"
        )
    q0, q1 = rank0["method"]["momentum"], rank1["method"]["momentum"]
    assert q0["queue"].shape == (round(QUEUE_RATIO * BATCH), 32), "the queue is full"
    torch.testing.assert_close(q1["queue"], q0["queue"], rtol=0, atol=0)
    for k, v in q0["encoder"].items():
        torch.testing.assert_close(q1["encoder"][k], v, rtol=0, atol=0, msg=lambda m, k=k: f"momentum {k}: {m}")

    last = sorted((run / "checkpoints").iterdir())[-1]
    assert last.name == f"step-{STEPS:07d}"
    written = load_file(last / "model.safetensors")
    assert written.keys() == rank0["encoder"].keys(), "the checkpoint carries the discriminator, not the generator"
    for k, v in written.items():
        torch.testing.assert_close(v, rank0["encoder"][k], rtol=0, atol=0)
    method = torch.load(last / "state.pt", weights_only=False)["method"]["momentum"]
    torch.testing.assert_close(method["queue"], q0["queue"], rtol=0, atol=0)

    # D started as a copy of the backbone and was trained; the encoder's backbone moved too
    initial = load_file(no_dropout_model / "model.safetensors")
    moved = [k for k in initial if not torch.equal(written[f"diffcse.backbone.{k}"], initial[k])]
    assert len(moved) > len(initial) // 2, f"the discriminator barely trained: {len(moved)}/{len(initial)} moved"
    assert not torch.equal(written["diffcse.backbone.encoder.layer.0.attention.self.query.weight"],
                           written["backbone.encoder.layer.0.attention.self.query.weight"])  # fmt: skip

    # best/ is the sentence encoder alone: no discriminator, generator or momentum tensors
    best = {k for f in (run / "best").rglob("*.safetensors") for k in load_file(f)}
    assert best and not any("diffcse" in k or "generator" in k or "momentum" in k for k in best), sorted(best)[:5]
