import xml.etree.ElementTree as ET

import numpy as np
import pandas as pd
import pytest
from report_fixtures import write_features

from cmcl.report.features import (
    read_features,
    retrieval,
    retrieval_accuracy,
    retrieval_metrics,
    tsne_figure,
)
from cmcl.report.retrieval import accuracy_from_extra

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _frame(source, target, source_labels, target_labels, modality="rgb"):
    rows = []
    for domain, vectors, labels in (
        ("source", source, source_labels),
        ("target", target, target_labels),
    ):
        for i, (vector, label) in enumerate(zip(vectors, labels, strict=True)):
            rows.append(
                {
                    "domain": domain,
                    "split": "train" if domain == "source" else "test",
                    "segment_index": i,
                    "label": label,
                    "modality": modality,
                    "space": "feature",
                    "vector": np.asarray(vector, dtype=np.float32),
                }
            )
    return pd.DataFrame(rows)


def test_retrieval_known_neighbours():
    source = [[1, 0], [0, 1], [-1, 0]]
    target = [[2, 0.1], [0.1, 3], [-1, -0.2], [0.9, 1.0]]
    frame = _frame(source, target, [0, 1, 2], [0, 1, 1, 1])
    table = retrieval(frame, ("rgb",))
    assert table["source_segment"].tolist() == [0, 1, 2, 1]
    assert table["same_class"].tolist() == [True, True, False, True]
    assert table["cosine"].iloc[0] == pytest.approx(2 / np.hypot(2, 0.1))
    assert retrieval_accuracy(frame)["rgb"] == 75.0
    assert np.isnan(retrieval_accuracy(frame)["flow"])


def test_retrieval_against_a_naive_loop(tmp_path):
    path = tmp_path / "features.parquet"
    write_features(path, seed=3, per_domain=20, classes=5, dim=8)
    frame = read_features(path)
    table = retrieval(frame, ("rgb", "flow"))

    def unit(v):
        v = np.asarray(v, dtype=np.float64)
        return v / np.linalg.norm(v)

    vectors = {
        (r.domain, r.segment_index, r.modality): r.vector
        for r in frame[frame["space"] == "feature"].itertuples()
    }

    def vector(domain, index):
        parts = [unit(vectors[(domain, index, m)]) for m in ("rgb", "flow")]
        return unit(np.concatenate(parts))

    for t in range(20):
        scores = [float(vector("target", t) @ vector("source", s)) for s in range(20)]
        row = table[table["target_segment"] == t].iloc[0]
        assert row["source_segment"] == int(np.argmax(scores))
        assert row["cosine"] == pytest.approx(max(scores), abs=1e-5)


def test_tsne_figure_is_written(tmp_path):
    path = tmp_path / "features.parquet"
    write_features(path, seed=0, per_domain=16, classes=12, dim=8)
    names = tuple(f"class{i}" for i in range(12))
    figure = tsne_figure(
        read_features(path), tmp_path / "plots", "tsne", title="t", class_names=names
    )
    assert figure.stem == "plots/tsne"
    png = (tmp_path / "plots" / "tsne.png").read_bytes()
    assert png.startswith(PNG_MAGIC) and len(png) > 10_000
    root = ET.parse(tmp_path / "plots" / "tsne.svg").getroot()
    assert root.tag.endswith("svg")


def test_tsne_needs_both_domains(tmp_path):
    frame = _frame([[1, 0]], [[0, 1]], [0], [0])
    assert (
        tsne_figure(frame[frame["domain"] == "source"], tmp_path, "x", title="t", class_names=())
        is None
    )


def test_read_features_names_missing_columns(tmp_path):
    path = tmp_path / "features.parquet"
    pd.DataFrame({"domain": ["source"], "label": [1]}).to_parquet(path)
    with pytest.raises(
        ValueError, match=r"features.parquet: missing column\(s\) split, segment_index"
    ):
        read_features(path)


def test_retrieval_metrics_for_the_summary_extra_map(tmp_path):
    path = tmp_path / "features.parquet"
    write_features(path, seed=1, per_domain=20, classes=4, dim=8)
    metrics = retrieval_metrics(path)
    assert sorted(metrics) == [
        "retrieval_flow",
        "retrieval_rgb",
        "retrieval_rgb_flow",
        "retrieval_targets",
    ]
    expected = retrieval_accuracy(read_features(path))
    assert metrics["retrieval_rgb"] == expected["rgb"]
    assert metrics["retrieval_flow"] == expected["flow"]
    assert metrics["retrieval_rgb_flow"] == expected["rgb+flow"]
    assert metrics["retrieval_targets"] == 20.0
    assert accuracy_from_extra(metrics) == expected
    assert accuracy_from_extra({"retrieval_rgb": 1.0}) is None


def test_retrieval_reads_only_the_feature_space(tmp_path):
    path = tmp_path / "features.parquet"
    write_features(path, seed=1, per_domain=6, classes=3, dim=4)
    assert set(read_features(path, spaces=("feature",))["space"]) == {"feature"}
    assert set(read_features(path)["space"]) == {"feature", "projection"}


def test_the_worker_side_imports_neither_matplotlib_nor_torch():
    import subprocess
    import sys

    code = (
        "import sys; import cmcl.report.retrieval; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'matplotlib')))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
