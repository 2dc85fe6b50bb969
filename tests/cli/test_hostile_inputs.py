"""Malformed inputs: each gets a clear message (what, where, what to do), exit code 2, no traceback,
and leaves no output file that a later command would trust."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from csrl.cli.main import main

Case = tuple[str, Callable[[Path, Path, Path], list[str]], tuple[str, ...]]


def _corpus(tmp: Path, name: str, data: bytes) -> Path:
    p = tmp / name
    p.write_bytes(data)
    return p


def _train(model: Path, tmp: Path, *sets: str) -> list[str]:
    data = tmp / "_data"
    (data / "train" / "wiki").mkdir(parents=True, exist_ok=True)
    (data / "train" / "wiki" / "wiki1m_for_simcse.head.txt").write_bytes(GOOD * 4)
    argv = ["train", "configs/quickstart-cpu.yaml", "--no-before", "--output-dir", str(tmp / "run"), "--data-dir", str(data),
            "--set", f"model.model={model}", "--set", "train.final_eval=false", "--set", "train.eval_every=0",
            "--set", "train.batch_size=4", "--set", "data.max_sentences=null"]  # fmt: skip
    for s in sets:
        argv += ["--set", s]
    return argv


def _train_file(model: Path, tmp: Path, path: Path, *sets: str) -> list[str]:
    return _train(model, tmp, f"data.train_files=[{path}]", *sets)


def _sts_broken(data: Path, tmp: Path, rel: str, edit: Callable[[str], str]) -> Path:
    d = tmp / "data"
    shutil.copytree(data, d)
    f = d / rel
    f.write_text(edit(f.read_text()))
    return d


GOOD = b"a first sentence here\nanother one there\nthe third sentence\nand a fourth one\nfive is here\n"

CASES: list[Case] = [
    ("corpus not UTF-8", lambda m, d, t: _train_file(m, t, _corpus(t, "c.txt", b"fine line\nbad \xff byte\n" + GOOD)),
     ("c.txt", "line 2", "UTF-8", "iconv")),
    ("corpus only blank lines", lambda m, d, t: _train_file(m, t, _corpus(t, "c.txt", b"\n   \n\t\n")), ("empty",)),
    ("corpus missing", lambda m, d, t: _train_file(m, t, t / "nope.txt"), ("nope.txt", "not found")),
    ("corpus smaller than a batch", lambda m, d, t: _train_file(m, t, _corpus(t, "c.txt", b"one sentence\ntwo\n")),
     ("2 records", "batch")),
    ("CSV wrong column names", lambda m, d, t: _train_file(m, t, _corpus(t, "c.csv", b"a,b,c\n1,2,3\n"), "data.columns=[sent0,sent1,hard_neg]"),
     ("c.csv", "sent0")),
    ("CSV row with wrong field count", lambda m, d, t: _train_file(m, t, _corpus(t, "c.csv", b"sent0,sent1,hard_neg\nx,y,z\nx,y\n"), "data.columns=[sent0,sent1,hard_neg]"),
     ("c.csv", "line 3")),
    ("CSV empty field", lambda m, d, t: _train_file(m, t, _corpus(t, "c.csv", b"sent0,sent1,hard_neg\nx,,z\n"), "data.columns=[sent0,sent1,hard_neg]"),
     ("c.csv", "line 2", "empty")),
    ("JSONL bad JSON", lambda m, d, t: _train_file(m, t, _corpus(t, "c.jsonl", b'{"text": "ok"}\n{"text": oops}\n'), "data.columns=[text]"),
     ("c.jsonl", "line 2")),
    ("JSONL missing key", lambda m, d, t: _train_file(m, t, _corpus(t, "c.jsonl", b'{"text": "ok"}\n{"txt": "no"}\n'), "data.columns=[text]"),
     ("c.jsonl", "line 2", "text")),
    ("unknown loss", lambda m, d, t: _train(m, t, "loss.name=simclr"), ("unknown loss 'simclr'", "infonce")),
    ("unknown pooler", lambda m, d, t: _train(m, t, "model.pooler=maxx"), ("unknown pooler 'maxx'", "cls_before_pooler")),
    ("unknown config key", lambda m, d, t: _train(m, t, "train.learning_rate=1"), ("unknown config key", "lr,")),
    ("wrong value type", lambda m, d, t: _train(m, t, "train.batch_size=many"), ("train.batch_size", "integer")),
    ("temperature out of range", lambda m, d, t: _train(m, t, "loss.temperature=-0.1"), ("temperature",)),
    ("margin out of range", lambda m, d, t: _train(m, t, "loss.name=mpt", "loss.params={margin: 5}"), ("margin",)),
    ("batch size 1 with in-batch negatives", lambda m, d, t: _train(m, t, "train.batch_size=1"), ("batch_size=1", "in-batch")),
    ("gradient accumulation with in-batch negatives", lambda m, d, t: _train(m, t, "train.grad_accum_steps=4"),
     ("shrinks the in-batch negatives", "cache_chunk_size")),
    ("fp16 on CPU", lambda m, d, t: _train(m, t, "train.precision=fp16", "train.device=cpu"), ("fp16", "bf16")),
    ("model path does not exist", lambda m, d, t: _train(m, t, f"model.model={t / 'no-model'}"), ("does not exist",)),
    ("STS line without a tab", lambda m, d, t: ["eval", str(m), "--data-dir", str(_sts_broken(d, t, "sts/sts12/STS.input.set.txt", lambda s: s.replace("\t", " ", 1)))],
     ("STS.input.set.txt:1", "tab-separated")),
    ("STS gold not a number", lambda m, d, t: ["eval", str(m), "--data-dir", str(_sts_broken(d, t, "sts/sts13/STS.gs.set.txt", lambda s: "x" + s))],
     ("STS.gs.set.txt:1", "not a number")),
    ("STS gold misaligned", lambda m, d, t: ["eval", str(m), "--data-dir", str(_sts_broken(d, t, "sts/sts15/STS.gs.set.txt", lambda s: s + "1\n"))],
     ("gold lines", "line-aligned")),
    ("STS-B too few columns", lambda m, d, t: ["eval", str(m), "--data-dir", str(_sts_broken(d, t, "sts/stsb/sts-test.csv", lambda s: "only\ttwo\n" + s))],
     ("sts-test.csv:1", "fields")),
    ("SICK too few columns", lambda m, d, t: ["eval", str(m), "--data-dir", str(_sts_broken(d, t, "sts/sickr/SICK_test_annotated.txt", lambda s: s + "9\tonly\n"))],
     ("SICK_test_annotated.txt", "fields")),
    ("data folder missing", lambda m, d, t: ["eval", str(m), "--data-dir", str(t / "nowhere")], ("not found", "CSRL_DATA_DIR")),
    ("config YAML syntax error", lambda m, d, t: ["train", str(_corpus(t, "bad.yaml", b"train: [unclosed\n"))], ("bad.yaml", "YAML")),
    ("config not a mapping", lambda m, d, t: ["train", str(_corpus(t, "list.yaml", b"- a\n- b\n"))], ("list.yaml", "mapping")),
    ("resume a folder with no run", lambda m, d, t: ["train", "--resume", str(t)], ("cannot resume",)),
    ("encode input with an empty line", lambda m, d, t: ["encode", str(m), "-i", str(_corpus(t, "in.txt", b"a\n\nb\n")), "-o", str(t / "o.npy")],
     ("in.txt:2", "empty line")),
]  # fmt: skip


@pytest.mark.parametrize("name,make,needles", CASES, ids=[c[0] for c in CASES])
def test_hostile_input(
    name: str,
    make: Callable[[Path, Path, Path], list[str]],
    needles: tuple[str, ...],
    tiny_model_dir: Path,
    fake_data_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = make(tiny_model_dir, fake_data_dir, tmp_path)
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("csrl: error:") and "Traceback" not in err, err
    for n in needles:
        assert n in err, (n, err)
    run = tmp_path / "run"
    assert not (run / "best").exists() and not (run / "checkpoints").exists()
    for f in run.rglob("*.json") if run.exists() else []:
        json.loads(f.read_text())  # whatever exists is whole
    assert not (tmp_path / "o.npy").exists()


def test_overlong_line_is_truncated_with_a_warning(tiny_model_dir: Path, tmp_path: Path) -> None:
    from csrl.data.corpora import CorpusWarning, open_corpus

    p = _corpus(tmp_path, "long.txt", b"short one\n" + b"word " * 2000 + b"\n")
    with pytest.warns(CorpusWarning, match="long"):
        c = open_corpus(p)
    assert len(c.get(1)[0]) <= 2000


def test_duplicates_in_a_batch_are_reported(tiny_model_dir: Path, tmp_path: Path) -> None:
    from csrl.train.config import load_config
    from csrl.train.loop import train

    p = _corpus(tmp_path, "dups.txt", b"same sentence\n" * 8)
    cfg = load_config(None, [f"model.model={tiny_model_dir}", f"data.train_files=[{p}]", f"output_dir={tmp_path / 'r'}",
                             "train.batch_size=4", "train.max_steps=1", "train.eval_every=0", "train.final_eval=false",
                             "train.progress=false"])  # fmt: skip
    with pytest.warns(UserWarning, match="no_duplicates"):
        train(cfg)
