"""Post-hoc isotropy (csrl.models.posthoc): the fitted maps against independent numpy computations written from
the papers' formulas (np.linalg.eigh of np.cov, where the module takes the SVD of the centred data), and the
saved folder through sentence-transformers and csrl's loader."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from st_folders import build_st_folder, quiet_st_load

from csrl.cli.main import main
from csrl.errors import CsrlError
from csrl.models.encoder import load_encoder
from csrl.models.posthoc import (
    POSTHOC_RECORD,
    check_not_test_file,
    default_components,
    fit_abtt,
    fit_embeddings,
    fit_posthoc,
    fit_transform,
    fit_whitening,
)

_SUBJECTS = ["A man", "The woman", "A small dog", "Two children", "The old teacher", "A cat", "Some birds"]
_VERBS = ["is playing", "watches", "carries", "paints", "reads about", "runs past", "cooks"]
_OBJECTS = ["a guitar.", "the red car.", "a long book on rivers.", "the sea at night.", "fresh bread."]
SENTENCES = [f"{s} {v} {o}" for i, s in enumerate(_SUBJECTS) for j, v in enumerate(_VERBS)
             for o in _OBJECTS[(i + j) % 5 :][:2]]  # fmt: skip


def _eigh_spectrum(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The reference: mean, eigenvalues (descending) and eigenvectors of np.cov (n - 1), by eigh."""
    lam, v = np.linalg.eigh(np.cov(x.T))
    return x.mean(axis=0), lam[::-1], v[:, ::-1]


def _anisotropic(n: int, d: int, seed: int = 0) -> np.ndarray:
    """Rows with a mean far from 0 and distinct variances along a random rotation."""
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    return 3.0 + rng.standard_normal((n, d)) * np.geomspace(5.0, 0.05, d) @ q.T


def _same_up_to_column_signs(a: np.ndarray, b: np.ndarray, atol: float) -> None:
    signs = np.sign(np.sum(a * b, axis=0))
    np.testing.assert_allclose(a, b * signs, atol=atol)


def test_whitening_matches_the_formula() -> None:
    x = _anisotropic(300, 8)
    t = fit_whitening(x)
    y = t.apply(x)
    assert t.dims == 8 and t.method == "whitening"
    np.testing.assert_allclose(y.mean(axis=0), 0, atol=1e-10)
    np.testing.assert_allclose(np.cov(y.T), np.eye(8), atol=1e-6)
    mu, lam, v = _eigh_spectrum(x)
    np.testing.assert_allclose(t.eigenvalues, lam, rtol=1e-9)
    _same_up_to_column_signs(y, (x - mu) @ (v / np.sqrt(lam)), atol=1e-8)


def test_whitening_with_dims_keeps_the_top_directions() -> None:
    x = _anisotropic(300, 8, seed=1)
    t = fit_whitening(x, dims=3)
    y = t.apply(x)
    assert y.shape == (300, 3)
    np.testing.assert_allclose(np.cov(y.T), np.eye(3), atol=1e-6)
    np.testing.assert_allclose(y.mean(axis=0), 0, atol=1e-10)
    mu, lam, v = _eigh_spectrum(x)
    _same_up_to_column_signs(y, (x - mu) @ (v[:, :3] / np.sqrt(lam[:3])), atol=1e-8)


def test_whitening_leaves_out_directions_without_variance() -> None:
    """Rows on a hyperplane (as a LayerNorm-final model's pooled vectors): the degenerate direction is not
    divided by; asking for it is refused, naming how many are usable."""
    x = _anisotropic(200, 6, seed=2)
    x = x - x.mean(axis=1, keepdims=True)  # every row sums to 0
    t = fit_whitening(x)
    assert t.dims == 5
    np.testing.assert_allclose(np.cov(t.apply(x).T), np.eye(5), atol=1e-6)
    with pytest.raises(CsrlError, match="give 5") as err:
        fit_whitening(x, dims=6)
    assert "--dims" in str(err.value.hint)
    assert fit_whitening(_anisotropic(4, 6)).dims == 3  # 4 sentences span 3 directions
    with pytest.raises(CsrlError, match="give 3"):
        fit_whitening(_anisotropic(4, 6), dims=4)
    with pytest.raises(CsrlError, match="out of range"):
        fit_whitening(x, dims=7)


def test_abtt_matches_the_formula() -> None:
    x = _anisotropic(300, 10, seed=3)
    t = fit_abtt(x, components=2)
    y = t.apply(x)
    mu, _, v = _eigh_spectrum(x)
    assert y.shape == (300, 10) and t.components == 2
    np.testing.assert_allclose(y.mean(axis=0), 0, atol=1e-10)
    np.testing.assert_allclose(y @ v[:, :2], 0, atol=1e-9)  # nothing left along the top-2 directions
    x_tilde = x - mu
    reference = x_tilde - (x_tilde @ v[:, :2]) @ v[:, :2].T
    np.testing.assert_allclose(y, reference, atol=1e-9)
    assert np.abs(y @ v[:, 2]).max() > 0.1  # the others are kept


def test_abtt_default_and_argument_checks() -> None:
    assert default_components(768) == 8 and default_components(384) == 4 and default_components(32) == 1
    assert fit_abtt(_anisotropic(50, 10)).components == 1
    with pytest.raises(CsrlError, match="components"):
        fit_transform(_anisotropic(50, 10), "whitening", components=2)
    with pytest.raises(CsrlError, match="dims"):
        fit_transform(_anisotropic(50, 10), "abtt", dims=2)
    with pytest.raises(CsrlError, match="unknown post-hoc method"):
        fit_transform(_anisotropic(50, 10), "pca")
    with pytest.raises(CsrlError, match="NaN"):
        fit_abtt(np.full((5, 3), np.nan))


def _float32_bound(x: np.ndarray, t: object) -> np.ndarray:
    """Rounding bound of the float32 Dense ``x W + b`` (a d-term dot product and the stored weights), per entry."""
    m, mu = t.matrix, t.mean  # type: ignore[attr-defined]
    d = x.shape[1]
    return (d + 2) * np.finfo(np.float32).eps * (np.abs(x) @ np.abs(m) + np.abs(mu @ m)) + 1e-7


@pytest.mark.parametrize(("method", "dims"), [("whitening", None), ("whitening", 12), ("abtt", None)])
def test_saved_folder_round_trips(method: str, dims: int | None, tiny_model_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    res = fit_posthoc(tiny_model_dir, SENTENCES, method=method, dims=dims, out=out, pooler="mean", data_dir=tmp_path)
    t = res.transform
    base = fit_embeddings(load_encoder(str(tiny_model_dir), pooler="mean"), SENTENCES)
    y = t.apply(base)
    np.testing.assert_allclose(y.mean(axis=0), 0, atol=1e-6)
    _, lam, v = _eigh_spectrum(base.astype(np.float64))
    if method == "whitening":
        # a LayerNorm-final model: pooled vectors on a hyperplane of the 32 dims, so at most 31 directions
        assert t.dims == (dims or np.sum(lam > 1e-7 * lam[0])) <= 31
        np.testing.assert_allclose(np.cov(y.T), np.eye(t.dims), atol=1e-6)
    else:
        np.testing.assert_allclose(y @ v[:, :1], 0, atol=1e-6)
    modules = json.loads((out / "modules.json").read_text())
    assert [m["type"].rpartition(".")[2] for m in modules] == ["Transformer", "Pooling", "Dense"]
    st, _ = quiet_st_load(out)
    a = st.encode(SENTENCES, convert_to_numpy=True)
    b = load_encoder(str(out)).encode(SENTENCES)
    assert a.shape == b.shape == (len(SENTENCES), t.dims)
    bound = _float32_bound(base, t)
    assert np.all(np.abs(a - y) <= bound) and np.all(np.abs(b - y) <= bound)
    if dims is not None or method == "abtt":  # well-conditioned: the two loaders agree to 1e-5
        np.testing.assert_allclose(a, b, atol=1e-5)
    assert res.record["float32_error_estimate"] <= bound.max()
    rec = json.loads((out / "2_Dense" / POSTHOC_RECORD).read_text())
    assert rec["method"] == method and rec["corpus_sentences"] == len(SENTENCES) and rec["output_dim"] == t.dims
    assert "## Post-hoc isotropy" in (out / "README.md").read_text()


def test_whitening_goes_before_a_trailing_normalize(tiny_model_dir: Path, tmp_path: Path) -> None:
    """A folder Pooling -> Dense 32->16 -> Normalize: the map acts on the Dense output (what it was fitted on)
    and the Normalize stays last."""
    src = build_st_folder(tmp_path / "st", tiny_model_dir, dense=True, normalize=True)
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(SENTENCES) + "\n\n", encoding="utf-8")  # a blank line: skipped
    res = fit_posthoc(src, corpus, method="whitening", dims=8, out=tmp_path / "out", data_dir=tmp_path)
    out = res.out
    types = [m["type"].rpartition(".")[2] for m in json.loads((out / "modules.json").read_text())]
    assert types == ["Transformer", "Pooling", "Dense", "Dense", "Normalize"]
    assert res.record["module"] == "3_Dense" and res.record["normalized_after"] is True
    assert res.record["corpus"] == str(corpus) and res.record["corpus_sentences"] == len(SENTENCES)
    base = fit_embeddings(load_encoder(str(src)), SENTENCES)  # the Dense output, before Normalize
    y = res.transform.apply(base)
    np.testing.assert_allclose(np.cov(y.T), np.eye(8), atol=1e-6)
    expected = y / np.linalg.norm(y, axis=1, keepdims=True)
    a = quiet_st_load(out)[0].encode(SENTENCES, convert_to_numpy=True)
    b = load_encoder(str(out)).encode(SENTENCES)
    np.testing.assert_allclose(a, b, atol=1e-5)
    np.testing.assert_allclose(a, expected, atol=1e-5)


def test_sts_test_files_are_refused(tmp_path: Path) -> None:
    data = tmp_path / "data"
    (data / "sts" / "sts12").mkdir(parents=True)
    (data / "sts" / "stsb").mkdir(parents=True)
    year = data / "sts" / "sts12" / "STS.input.MSRvid.txt"
    year.write_text("A man plays.\tA man is playing.\n", encoding="utf-8")
    (data / "sts" / "stsb" / "sts-test.csv").write_text("test line\n", encoding="utf-8")
    train = data / "sts" / "stsb" / "sts-train.csv"
    train.write_text("train line\n", encoding="utf-8")
    copy = tmp_path / "elsewhere.txt"
    shutil.copy(data / "sts" / "stsb" / "sts-test.csv", copy)
    for bad in (year, data / "sts" / "stsb" / "sts-test.csv", copy):
        with pytest.raises(CsrlError, match="STS/SICK test file") as err:
            check_not_test_file(bad, data)
        assert "leak" in str(err.value.hint)
    check_not_test_file(train, data)  # a training split is fine
    fine = tmp_path / "fine.txt"
    fine.write_text("something else\n", encoding="utf-8")
    check_not_test_file(fine, data)


def test_cli_fit_and_refusal(tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "data"
    (data / "sts" / "sickr").mkdir(parents=True)
    test_file = data / "sts" / "sickr" / "SICK_test_annotated.txt"
    test_file.write_text("\n".join(SENTENCES[:40]) + "\n", encoding="utf-8")
    argv = ["posthoc", "fit", str(tiny_model_dir), "--pooler", "mean", "--data-dir", str(data)]
    assert main([*argv, "--corpus", str(test_file), "--out", str(tmp_path / "leak")]) == 2
    assert "test file" in capsys.readouterr().err and not (tmp_path / "leak").exists()
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(SENTENCES) + "\n", encoding="utf-8")
    out = tmp_path / "abtt"
    assert main([*argv, "--corpus", str(corpus), "--out", str(out), "--method", "abtt", "--components", "2"]) == 0
    assert "D=2" in capsys.readouterr().out
    rec = json.loads((out / "2_Dense" / POSTHOC_RECORD).read_text())
    assert rec["components"] == 2 and rec["corpus"] == str(corpus)
    # an existing non-empty output folder needs --overwrite
    assert main([*argv, "--corpus", str(corpus), "--out", str(out), "--method", "abtt"]) == 2
    assert "not empty" in capsys.readouterr().err
