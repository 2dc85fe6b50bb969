from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from csrl.data.sts import load_analysis_sentences, load_sts_suite, load_sts_task, load_sts_year
from csrl.errors import CsrlError


def _year(tmp_path: Path) -> Path:
    d = tmp_path / "sts" / "sts12"
    d.mkdir(parents=True)
    (d / "STS.input.a.txt").write_text("x  y\tz\nunscored\tpair\np\tq   r\n")
    (d / "STS.gs.a.txt").write_text("1.5\n\n4\n")
    (d / "STS.input.b.txt").write_text("m\tn\n")
    (d / "STS.gs.b.txt").write_text("2\n")
    (d / "STS.gs.SMT.txt").write_text("3\n")  # a gold file without input: ignored (STS13's SMT)
    return d


def test_year_rules_drop_unscored_enumerate_inputs_and_collapse_spaces(tmp_path: Path) -> None:
    task = load_sts_year(_year(tmp_path), "STS12")
    assert [s.name for s in task.subsets] == ["a", "b"]
    a = task.subsets[0]
    assert a.sentences1 == ("x y", "p") and a.sentences2 == ("z", "q r")
    np.testing.assert_array_equal(a.scores, [1.5, 4.0])


def test_malformed_sts_line_names_file_and_line(tmp_path: Path) -> None:
    d = _year(tmp_path)
    (d / "STS.input.a.txt").write_text("only one field\nunscored\tpair\np\tq\n")
    with pytest.raises(CsrlError) as err:
        load_sts_year(d, "STS12")
    assert "STS.input.a.txt:1" in err.value.message and "2 tab-separated" in err.value.message


def test_misaligned_gold_file(tmp_path: Path) -> None:
    d = _year(tmp_path)
    (d / "STS.gs.a.txt").write_text("1\n")
    with pytest.raises(CsrlError, match="gold lines"):
        load_sts_year(d, "STS12")


def test_bad_gold_score(tmp_path: Path) -> None:
    d = _year(tmp_path)
    (d / "STS.gs.a.txt").write_text("1\n\nfive\n")
    with pytest.raises(CsrlError, match=r"STS.gs.a.txt:3: gold score 'five'"):
        load_sts_year(d, "STS12")


def test_missing_data_folder_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(CsrlError) as err:
        load_sts_task("STS12", tmp_path / "nope")
    assert "CSRL_DATA_DIR" in (err.value.hint or "") and "csrl data fetch" in (err.value.hint or "")


def test_stsb_and_sick_columns(tmp_path: Path) -> None:
    (tmp_path / "sts" / "stsb").mkdir(parents=True)
    (tmp_path / "sts" / "sickr").mkdir(parents=True)
    (tmp_path / "sts" / "stsb" / "sts-test.csv").write_text("g\tf\ty\t1\t3.5\ta  b\tc\textra\n")
    (tmp_path / "sts" / "sickr" / "SICK_test_annotated.txt").write_text("id\tA\tB\tscore\tlabel\n1\ta\tb c\t4.2\tE\n")
    b = load_sts_task("stsb", tmp_path).subsets[0]
    assert (b.sentences1, b.sentences2, list(b.scores)) == (("a b",), ("c",), [3.5])
    s = load_sts_task("sickr", tmp_path).subsets[0]
    assert (s.sentences1, s.sentences2, list(s.scores)) == (("a",), ("b c",), [4.2])


def test_unknown_task_lists_valid() -> None:
    with pytest.raises(CsrlError, match="unknown STS task"):
        load_sts_task("STS99", Path("."))


def test_real_counts(data_dir: Path) -> None:
    suite = load_sts_suite(data_dir)
    counts = {t.short_name: sum(len(s) for s in t.subsets) for t in suite}
    assert counts == {"STS12": 3108, "STS13": 1500, "STS14": 3750, "STS15": 3000, "STS16": 1186, "STS-B": 1379,
                      "SICK-R": 4927}  # fmt: skip
    assert [s.name for s in suite[1].subsets] == ["FNWN", "OnWN", "headlines"]  # no SMT
    assert len(load_sts_task("stsb", data_dir, split="dev").subsets[0]) == 1500
    sents = load_analysis_sentences(data_dir)
    assert len(sents) == 1379 and sents[0][0].isupper()  # cased original release


def test_hub_loader_maps_to_the_same_types(tmp_path: Path) -> None:
    """The Hub path (MTEB's STS copies for online users), exercised on a local datasets folder."""
    from csrl.data.sts import load_sts_from_hub

    folder = tmp_path / "sts12-local"
    folder.mkdir()
    (folder / "test.jsonl").write_text(
        '{"sentence1": "a  b", "sentence2": "c", "score": 2.5}\n{"sentence1": "d", "sentence2": "e f", "score": 4.0}\n'
    )
    task = load_sts_from_hub("sts12", repo_id=str(folder))
    assert task.name == "STS12" and len(task.subsets) == 1
    p = task.subsets[0]
    assert p.sentences1 == ("a b", "d") and p.sentences2 == ("c", "e f")
    np.testing.assert_array_equal(p.scores, [2.5, 4.0])


def test_hub_loader_offline_error_is_clear(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from csrl.data.sts import load_sts_from_hub

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(CsrlError, match="could not load"):
        load_sts_from_hub("sts12", repo_id=str(tmp_path / "no-such-folder"))
