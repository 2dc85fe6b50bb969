"""``csrl eval`` on data that differs from the manifest says so (output and JSON); ``strict`` refuses it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from csrl.cli.main import main
from csrl.errors import CsrlError
from csrl.pipelines.evaluate import check_evaluation_data, evaluate_model

STS_FILES_READ = 50  # STS12-16: 24 sub-datasets x (input, gold); STS-B and SICK-R: the test split
TRANSFER_FILES_READ = 15  # MR, CR, SUBJ, MPQA: 2 each; SST-2: 3; TREC: 2; MRPC: 2


@pytest.fixture
def sts_copy(data_dir: Path, tmp_path: Path) -> Path:
    """The standard STS files (no raw releases, no variants) in a folder of their own."""
    root = tmp_path / "data"
    shutil.copytree(data_dir / "sts", root / "sts", ignore=shutil.ignore_patterns("raw", "variants"))
    return root


def test_the_standard_data_is_ok_and_fast_to_check(data_dir: Path) -> None:
    sts = check_evaluation_data(data_dir, {"sts"})
    assert (sts.ok, sts.checked, sts.mismatched) == (True, STS_FILES_READ, ())
    assert sts.seconds < 5  # about 0.03 s for 4.5 MB; hashed again at every evaluation (nothing cached)
    both = check_evaluation_data(data_dir, {"sts", "transfer"})
    assert both.ok and both.checked == STS_FILES_READ + TRANSFER_FILES_READ
    assert both.to_dict()["mismatched"] == [] and both.to_dict()["ok"] is True


def test_one_modified_file_is_named(sts_copy: Path) -> None:
    f = sts_copy / "sts" / "sts13" / "STS.input.headlines.txt"
    data = bytearray(f.read_bytes())
    data[10] ^= 0x20  # same size: only the hash can tell
    f.write_bytes(bytes(data))
    check = check_evaluation_data(sts_copy, {"sts"})
    assert not check.ok and check.checked == STS_FILES_READ
    (m,) = check.mismatched
    assert (m["path"], m["status"]) == ("sts/sts13/STS.input.headlines.txt", "modified")
    assert "sha256" in m["detail"]
    assert "1 of the 50 files" in check.summary() and "modified: sts/sts13/STS.input.headlines.txt" in check.summary()
    assert json.loads(json.dumps(check.to_dict()))["mismatched"][0]["path"] == m["path"]


def test_missing_unknown_and_variant_files(sts_copy: Path, data_dir: Path) -> None:
    (sts_copy / "sts" / "sts12" / "STS.input.MSRpar.txt").unlink()  # the loader would silently drop MSRpar
    (sts_copy / "sts" / "sts14" / "STS.input.extra.txt").write_text("a\tb\n")  # the loader would read it
    (sts_copy / "sts" / "sts14" / "STS.gs.extra.txt").write_text("3\n")
    variant = data_dir / "sts" / "variants" / "yan-soares_tokenization" / "sts15" / "STS.input.images.txt"
    shutil.copy(variant, sts_copy / "sts" / "sts15" / "STS.input.images.txt")
    check = check_evaluation_data(sts_copy, {"sts"})
    found = {m["path"]: (m["status"], m["detail"]) for m in check.mismatched}
    assert found == {
        "sts/sts12/STS.input.MSRpar.txt": ("missing", "not found"),
        "sts/sts14/STS.input.extra.txt": ("unknown", "not a standard file"),
        "sts/sts15/STS.input.images.txt": ("variant", "the yan-soares tokenization variant"),
    }
    assert check.checked == STS_FILES_READ + 1
    assert check_evaluation_data(sts_copy, {"transfer"}).checked == TRANSFER_FILES_READ  # only what is read


def test_strict_refuses_before_the_model_is_loaded(sts_copy: Path, tmp_path: Path) -> None:
    (sts_copy / "sts" / "stsb" / "sts-test.csv").write_text("changed\n")
    with pytest.raises(CsrlError, match=r"(?s)strict data check: .*modified: sts/stsb/sts-test.csv") as err:
        evaluate_model(str(tmp_path / "no-such-model"), data_dir=sts_copy, strict=True)
    assert "csrl data fetch" in (err.value.hint or "")


def test_strict_on_the_cli_exits_2(sts_copy: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (sts_copy / "sts" / "sickr" / "SICK_test_annotated.txt").write_text("changed\n")
    code = main(["eval", str(tmp_path), "--data-dir", str(sts_copy), "--strict"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert "csrl: error: strict data check" in err and "sts/sickr/SICK_test_annotated.txt" in err


def test_eval_output_and_json_carry_the_check(
    fake_data_dir: Path, tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The miniature data folder holds no standard file: every file read is reported, scores still come."""
    out = tmp_path / "r.json"
    code = main(["eval", str(tiny_model_dir), "--data-dir", str(fake_data_dir), "-o", str(out), "--threads", "1"])
    printed = capsys.readouterr().out
    assert code == 0
    assert printed.startswith("WARNING: MODIFIED DATA: the data under")
    assert "not comparable with published ones" in printed.splitlines()[-2]
    res = json.loads(out.read_text())
    assert res["data_check"]["ok"] is False and res["precision"] == "fp32"
    statuses = {m["path"]: m["status"] for m in res["data_check"]["mismatched"]}
    assert statuses["sts/sts12/STS.input.set.txt"] == "unknown"
    assert statuses["sts/stsb/sts-test.csv"] == "modified"
    assert statuses["sts/sts12/STS.input.MSRpar.txt"] == "missing"
    assert set(res["sts"]["reported"]) >= {"STS12", "STS-B", "SICK-R"}
