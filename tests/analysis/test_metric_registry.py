"""The metric registry: it drives the result fields, the table, the figures and the probe, and a new
metric registered in one place appears in all of them."""

from __future__ import annotations

import ast
import json
import math
from pathlib import Path

import pytest
import torch
from test_suite import VOCAB, synthetic_states

from csrl.analysis import registry
from csrl.analysis.registry import LayerContext, get_metric, metrics, panels, probe_panels, register_metric
from csrl.analysis.suite import AnalysisResult, analyze_token_states, dynamics_probe, encode_pairs
from csrl.analysis.tables import layer_table_markdown, sentence_summary

OLD_HEADER = (
    "| layer | anisotropy | self-sim | adj. self-sim | intra-sim | adj. intra-sim | norm | funct. ss | content ss |"
    " top rogue |"
)


def test_registry_keys_are_the_result_and_json_keys():
    res = analyze_token_states(synthetic_states(), vocab=VOCAB)
    data = json.loads(res.to_json())
    layer_keys = [m.key for m in metrics("layer")]
    assert len(set(layer_keys)) == len(layer_keys)
    for key in layer_keys:
        assert len(getattr(res, key)) == res.n_layers
        assert key in data and "values" not in data
    assert res.sentence is not None
    sentence = res.sentence.to_dict()
    assert all(m.key in sentence for m in metrics("sentence"))
    assert get_metric("anisotropy").probe_key == "geometry/anisotropy"
    with pytest.raises(AttributeError):
        res.no_such_metric  # noqa: B018
    with pytest.raises(KeyError, match="unknown metric"):
        get_metric("no_such_metric")


def test_json_roundtrip_with_sentence_level():
    res = analyze_token_states(synthetic_states(3), vocab=VOCAB)
    back = AnalysisResult.from_dict(json.loads(res.to_json()))
    assert back.to_dict() == res.to_dict()
    assert back.sentence is not None and res.sentence is not None
    assert back.sentence.uniformity == res.sentence.uniformity


def test_layer_table_keeps_the_cli_columns_and_formats():
    res = analyze_token_states(synthetic_states(), vocab=VOCAB)
    lines = layer_table_markdown(res).splitlines()
    assert lines[0] == OLD_HEADER
    assert lines[1] == "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    assert len(lines) == 2 + res.n_layers
    i = 1
    assert lines[2 + i] == (
        f"| {i} | {res.anisotropy[i]:.3f} | {res.self_similarity[i]:.3f} | "
        f"{res.adjusted_self_similarity[i]:.3f} | {res.intra_similarity[i]:.3f} | "
        f"{res.adjusted_intra_similarity[i]:.3f} | {res.norm_mean[i]:.2f} | "
        f"{res.functional_self_similarity[i]:.3f} | {res.content_self_similarity[i]:.3f} | "
        f"{res.rogue_shares[i][0]:.3f} |"
    )
    summary = sentence_summary(res)
    assert list(summary)[:2] == ["average_cosine", "uniformity"]
    assert all(isinstance(v, float) for v in summary.values()) and "singular_values" not in summary


def test_probe_keys_and_panels_come_from_the_registry():
    st = synthetic_states(2)
    probe = dynamics_probe(st, positive_pairs=(st.pooled[:5], st.pooled[5:10]), vocab=VOCAB)
    assert set(probe) == {m.probe_key for m in metrics(probe=True)}
    assert len(probe) == 11  # 8 token-level (rogue share included), 3 sentence-level
    flat = {key for _, keys in probe_panels() for key, _ in keys}
    assert flat == set(probe)
    titles = [p.title for p in panels("layer")]
    assert len(titles) == len(set(titles)) and "self-similarity" in titles


def test_a_new_metric_reaches_result_table_figure_and_probe(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.setattr(registry, "_METRICS", dict(registry._METRICS))

    @register_metric(
        "max_norm", label="largest token L2 norm", symbol=r"$\max \Vert h \Vert_2$", column="max norm", fmt=".1f",
        panel="token norm (distance to the origin)", legend="max", probe=True,
    )  # fmt: skip
    def max_norm(ctx: LayerContext) -> float:
        return float(ctx.shared.norms.max())

    with pytest.raises(ValueError, match="twice"):
        register_metric("max_norm", label="again")(max_norm)
    st = synthetic_states()
    res = analyze_token_states(st, vocab=VOCAB)
    assert res.max_norm == [pytest.approx(float(x.norm(dim=1).max())) for x in st.layers]
    assert json.loads(res.to_json())["max_norm"] == res.max_norm
    assert layer_table_markdown(res).splitlines()[0].endswith("| content ss | top rogue | max norm |")
    assert dynamics_probe(st, vocab=VOCAB)["geometry/max_norm"] == pytest.approx(res.max_norm[-1])
    norm_panel = next(p for p in panels("layer") if p.title.startswith("token norm"))
    assert [m.key for m in norm_panel.metrics] == ["norm_mean", "max_norm"]
    from csrl.analysis.plots import plot_layer_metrics

    assert plot_layer_metrics(res, tmp_path / "layers.png").stat().st_size > 1000


def test_none_means_not_computable():
    st = synthetic_states(1)
    res = analyze_token_states(st, vocab=None)
    assert math.isnan(res.functional_self_similarity[0])  # NaN in the result
    probe = dynamics_probe(st, vocab=None)
    assert "geometry/functional_self_similarity" not in probe and "geometry/alignment" not in probe
    assert set(dynamics_probe(positive_pairs=(st.pooled[:3], st.pooled[3:6]))) == {"geometry/alignment"}


def test_encode_pairs_takes_a_function_and_encodes_each_sentence_once():
    calls: list[list[str]] = []

    def encode(sentences):  # type: ignore[no-untyped-def]
        calls.append(list(sentences))
        return torch.tensor([[float(len(s)), 1.0] for s in sentences]).numpy()

    x, y = encode_pairs(encode, ["a", "bb", "a"], ["ccc", "a", "dddd"])
    assert calls == [["a", "bb", "ccc", "dddd"]]
    assert x[:, 0].tolist() == [1.0, 2.0, 1.0] and y[:, 0].tolist() == [3.0, 1.0, 4.0]


def test_analysis_does_not_import_models_train_or_cli():
    root = Path(__file__).resolve().parents[2] / "src" / "csrl" / "analysis"
    for path in root.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            for name in names:
                assert not name.startswith(("csrl.models", "csrl.train", "csrl.cli")), (path.name, name)
