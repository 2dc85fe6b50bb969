"""Supervised training on scored pairs (CoSENT, AnglE on STS-B) and on NLI triplets (AnglE), end to end with the tiny
model: the recipes of configs/methods/, the scores reaching the loss (plain, GradCache and gathered steps), no
paradigm statistics where they do not apply, and bad scored-pair files refused with file and line."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

import pytest
import torch
from ddp_helpers import FakeDist

from csrl.cli.main import main
from csrl.losses import build_loss
from csrl.losses.cosent import cosent_scored
from csrl.models.encoder import Encoder
from csrl.train import distributed as csrl_dist
from csrl.train.batches import open_training_data
from csrl.train.config import load_config
from csrl.train.methods import paradigm_form
from csrl.train.step import Views, cached_embed_and_backward, compute_loss, embed_and_backward

CONFIGS = Path(__file__).parents[2] / "configs"
METHODS = CONFIGS / "methods"


def _sets(model: Path, out: Path, *extra: str) -> list[str]:
    return [f"model.model={model}", f"output_dir={out}", "train.batch_size=8", "train.max_steps=3",
            "train.eval_every=2", "train.checkpoint_every=0", "train.precision=fp32", "train.num_threads=1",
            "train.progress=false", *extra]  # fmt: skip


def _records(run_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _argv(recipe: str, data_dir: Path, sets: list[str]) -> list[str]:
    argv = ["train", str(METHODS / recipe), "--data-dir", str(data_dir), "--no-before"]
    for s in sets:
        argv += ["--set", s]
    return argv


def test_recipes_say_what_they_train_on() -> None:
    quick = load_config(CONFIGS / "quickstart-cpu.yaml")
    for name, loss in (("cosent-stsb", "cosent"), ("angle-stsb", "angle")):
        cfg = load_config(METHODS / f"{name}.yaml")
        header = (METHODS / f"{name}.yaml").read_text()
        assert "base: ../quickstart-cpu.yaml" in header and "SUPERVISED, IN-DOMAIN" in header
        assert "in-domain evaluation" in header
        assert cfg.data.train_files == ("sts/stsb/sts-train.csv",) and cfg.data.format == "stsb"
        assert cfg.loss.name == loss and cfg.train == quick.train and cfg.model == quick.model
    assert dict(load_config(METHODS / "angle-stsb.yaml").loss.params)["positive_score"] == 4.0
    nli, sup = load_config(METHODS / "angle-nli.yaml"), load_config(CONFIGS / "simcse-sup-cpu.yaml")
    assert nli.loss.name == "angle" and nli.data == sup.data and nli.data.columns == ("sent0", "sent1", "hard_neg")
    assert nli.train == sup.train and nli.model == sup.model


@pytest.mark.parametrize(
    "recipe,terms",
    [("cosent-stsb.yaml", {"loss/cosent"}), ("angle-stsb.yaml", {"loss/cosine", "loss/ibn", "loss/angle"})],
)
def test_stsb_recipes_train_on_scored_pairs(
    recipe: str, terms: set[str], tiny_model_dir: Path, fake_data_dir: Path, tmp_path: Path,
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    seen: list[Any] = []
    loss_cls = type(build_loss(recipe.split("-")[0]))
    forward = loss_cls.forward

    def spy(self: Any, z1: Any, z2: Any, hard_neg: Any = None, scores: Any = None) -> Any:
        seen.append(scores)
        return forward(self, z1, z2, hard_neg, scores)

    monkeypatch.setattr(loss_cls, "forward", spy)
    run_dir = tmp_path / "run"
    assert main(_argv(recipe, fake_data_dir, _sets(tiny_model_dir, run_dir))) == 0, capsys.readouterr().err
    steps = [r for r in _records(run_dir) if "train/loss" in r]
    assert [r["step"] for r in steps] == [1, 2, 3] and all(terms <= set(r) for r in steps)
    assert not any(k.startswith("paradigm/") for r in steps for k in r)  # no GD/W/R on scored pairs
    lines = (fake_data_dir / "sts/stsb/sts-train.csv").read_text().splitlines()
    gold = set(torch.tensor([float(line.split("\t")[4]) for line in lines], dtype=torch.float32).tolist())
    assert len(seen) == 3 and all(s is not None and s.shape == (8,) and set(s.tolist()) <= gold for s in seen)
    assert [r["step"] for r in _records(run_dir) if "eval/stsb_dev_spearman" in r] == [2, 3]
    assert "Avg" in json.loads((run_dir / "results" / "sts_test.json").read_text())["reported"]


def _triplets(path: Path, corpus: Path, n: int = 24) -> Path:
    lines = corpus.read_text().splitlines()
    rows = [f"{lines[i]},{lines[i + 1]},{lines[-1 - i]}" for i in range(n)]
    path.write_text("sent0,sent1,hard_neg\n" + "\n".join(rows) + "\n")
    return path


def test_angle_nli_recipe_trains_on_triplets(
    tiny_model_dir: Path, tiny_corpus: Path, fake_data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    triplets = _triplets(tmp_path / "triplets.csv", tiny_corpus)
    run_dir = tmp_path / "run"
    sets = _sets(tiny_model_dir, run_dir, f"data.train_files=[{triplets}]", "train.eval_every=0",
                 "train.final_eval=false")  # fmt: skip
    assert main(_argv("angle-nli.yaml", fake_data_dir, sets)) == 0, capsys.readouterr().err
    steps = [r for r in _records(run_dir) if "train/loss" in r]
    assert [r["step"] for r in steps] == [1, 2, 3]
    assert all({"loss/cosine", "loss/ibn", "loss/angle"} <= set(r) for r in steps)
    assert not any(k.startswith("paradigm/") for r in steps for k in r)  # AnglE declares paradigm_applies = False
    assert (run_dir / "best" / "modules.json").is_file()


def test_bad_scored_pair_file_fails_with_file_and_line(
    tiny_model_dir: Path, fake_data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "sts-train.csv"
    bad.write_text("g\tf\t2012\t1\t4.0\ta cat sat\ta cat is sitting\ng\tf\t2012\t2\tn/a\ta dog ran\ta dog runs\n")
    run_dir = tmp_path / "run"
    code = main(_argv("cosent-stsb.yaml", fake_data_dir, _sets(tiny_model_dir, run_dir, f"data.train_files=[{bad}]")))
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err and f"{bad}:2: the gold score (field 5) 'n/a' is not a finite" in err
    argv = ["train", str(CONFIGS / "quickstart-cpu.yaml"), "--data-dir", str(fake_data_dir), "--no-before"]
    for s in _sets(tiny_model_dir, run_dir, "data.format=stsb", "data.train_files=[sts/stsb/sts-train.csv]"):
        argv += ["--set", s]
    assert main(argv) == 2 and "loss 'infonce' does not train on scored pairs" in capsys.readouterr().err


# ----------------------------------------------------------------------------- what reaches the loss
def test_paradigm_applies_only_to_losses_and_data_in_its_form(tiny_model_dir: Path, fake_data_dir: Path) -> None:
    sts = fake_data_dir / "sts/stsb/sts-train.csv"
    scored = open_training_data(load_config(None, [f"data.train_files=[{sts}]", "data.format=stsb",
                                                   "loss.name=cosent", "train.batch_size=4"]),
                                fake_data_dir, rank=0, world_size=1)  # fmt: skip
    plain = open_training_data(load_config(None, ["train.batch_size=4"]), fake_data_dir, rank=0, world_size=1)
    assert not paradigm_form(build_loss("cosent"), scored) and paradigm_form(build_loss("cosent"), plain)
    assert not paradigm_form(build_loss("angle"), plain) and paradigm_form(build_loss("infonce"), plain)
    assert not paradigm_form(build_loss("matryoshka", inner="angle", dims=[16, 32]), plain)


def _tiny_encoder(model: Path) -> tuple[Encoder, dict[str, torch.Tensor]]:
    cfg = load_config(None, [f"model.model={model}", "model.pooler=mean"])
    enc = Encoder.from_pretrained(cfg.model).eval()  # dropout off: both steps see the same embeddings
    texts = [f"sentence number {i} about {w}" for i, w in enumerate("cats dogs birds trees cars rivers".split())]
    return enc, enc.tokenize(texts + texts[1:] + texts[:1], max_length=16, views=2)  # pair i: (t_i, t_i+1)


def _grads(enc: Encoder) -> list[torch.Tensor]:
    return [p.grad.clone() for p in enc.parameters() if p.grad is not None]


@pytest.mark.parametrize("name", ["cosent", "angle"])
def test_gradcache_step_passes_the_scores_like_the_plain_step(name: str, tiny_model_dir: Path) -> None:
    enc, features = _tiny_encoder(tiny_model_dir)
    loss_fn = build_loss(name, **({"positive_score": 2.0} if name == "angle" else {}))
    gold = {"scores": torch.tensor([0.5, 4.0, 2.5, 2.5, 5.0, 1.0])}
    out, views = embed_and_backward(
        enc, features, 2, loss_fn, autocast=contextlib.nullcontext, extra_views=lambda: gold
    )
    plain = _grads(enc)
    enc.zero_grad(set_to_none=True)
    cached, cviews = cached_embed_and_backward(
        enc, features, 2, loss_fn, 4, autocast=contextlib.nullcontext, extra_views=lambda: gold
    )
    torch.testing.assert_close(cached.total, out.total.detach(), rtol=1e-5, atol=1e-6)
    for a, b in zip(_grads(enc), plain, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=2e-5)  # float32: chunked and full forwards round apart
    assert views.scores is gold["scores"] and cviews.scores is gold["scores"]
    # the scores matter: other scores, another loss
    other = compute_loss(loss_fn, Views(views.z1.detach(), views.z2.detach(), scores=gold["scores"].flip(0)))
    assert not torch.allclose(other.total, out.total.detach())


@pytest.mark.parametrize("name", ["cosent", "angle"])
def test_gathered_scores_stay_with_their_pairs(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    g = torch.Generator().manual_seed(0)
    z1 = torch.randn(8, 6, generator=g, dtype=torch.float64, requires_grad=True)
    z2 = (z1.detach() + 0.5 * torch.randn(8, 6, generator=g, dtype=torch.float64)).requires_grad_(True)
    scores = torch.tensor([0.2, 4.8, 1.0, 3.3, 2.0, 5.0, 0.0, 4.1], dtype=torch.float64)
    loss_fn = build_loss(name)
    full = loss_fn(z1, z2, scores=scores).total
    full_grads = torch.autograd.grad(full, [z1, z2])
    rank, world = 1, 2
    monkeypatch.setattr(csrl_dist, "dist", FakeDist(rank, world, [z1, z2, scores]))
    shard = slice(4, 8)
    l1, l2 = z1.detach()[shard].clone().requires_grad_(True), z2.detach()[shard].clone().requires_grad_(True)
    out = compute_loss(loss_fn, Views(l1, l2, scores=scores[shard]))
    torch.testing.assert_close(out.total, world * full)
    for got, want in zip(torch.autograd.grad(out.total, [l1, l2]), full_grads, strict=True):
        torch.testing.assert_close(got, world * want[shard])
    assert name != "cosent" or torch.allclose(full, cosent_scored(z1, z2, scores).total)
