"""The synthetic benchmark generator: counts, determinism, store format, premise, cache."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
from sklearn.preprocessing import StandardScaler

from cmcl.data import synthetic
from cmcl.data.benchmarks import get_benchmark
from cmcl.data.feature_store import FeaturePairData, read_meta, read_split
from cmcl.data.synthetic import (
    EPIC_CLASS_COUNTS,
    UCF_HMDB_SIZES,
    SyntheticParams,
    class_counts,
    generate_store,
    store_key,
    synthetic_store,
)
from cmcl.data.synthetic_world import Split, make_world, rng_for, sample_split

EPIC_SPLITS = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "epic_mmsada"
# Small windows keep the tests fast; the latent model and the class counts are the real ones.
SMALL = SyntheticParams().replace(feature_dim=24)


@pytest.fixture(scope="module")
def epic_store(tmp_path_factory) -> Path:
    return generate_store("synthetic-epic", tmp_path_factory.mktemp("epic"), params=SMALL)


@pytest.mark.parametrize("domain", ["D1", "D2", "D3"])
@pytest.mark.parametrize("split", ["train", "test"])
def test_epic_counts_are_those_of_the_real_split_pickles(domain, split):
    frame = pd.read_pickle(EPIC_SPLITS / f"{domain}_{split}.pkl")
    real = np.bincount(frame["verb_class"].to_numpy(), minlength=8)
    assert tuple(int(c) for c in real) == EPIC_CLASS_COUNTS[domain][split]


def test_ucf_hmdb_counts_have_ta3n_sizes_and_balanced_classes():
    counts = class_counts("synthetic-ucf-hmdb")
    assert sum(sum(c) for splits in counts.values() for c in splits.values()) == 3209
    for domain, splits in counts.items():
        for split, per_class in splits.items():
            assert len(per_class) == 12
            assert sum(per_class) == UCF_HMDB_SIZES[domain][split]
            assert max(per_class) - min(per_class) <= 1
    assert counts["H"] == {"train": (70,) * 12, "test": (30,) * 12}


def test_non_synthetic_benchmark_is_refused():
    with pytest.raises(ValueError, match="not synthetic"):
        class_counts("epic")


def test_store_has_the_real_counts_shapes_and_meta(epic_store):
    meta = read_meta(epic_store)
    assert meta["benchmark"] == "synthetic-epic"
    assert meta["domains"] == ["D1", "D2", "D3"]
    assert meta["class_names"] == list(get_benchmark("synthetic-epic").class_names)
    assert (meta["feature_dim"], meta["windows"]) == (24, 5)
    assert meta["generator"]["params"] == SMALL.to_dict()
    assert meta["generator"]["seed"] == 0
    for domain, splits in EPIC_CLASS_COUNTS.items():
        for split, counts in splits.items():
            data = read_split(epic_store, domain, split)
            assert tuple(np.bincount(data.labels.numpy(), minlength=8)) == counts
            assert data.rgb.shape == data.flow.shape == (sum(counts), 5, 24)
            assert data.rgb.dtype == data.flow.dtype == torch.float32
            for x in (data.rgb, data.flow):
                assert x.isfinite().all() and (x >= 0).all()
            assert len(set(data.segment_ids)) == len(data)


def test_features_look_like_pooled_relu_activations(epic_store):
    rgb = read_split(epic_store, "D1", "train").rgb.numpy()
    # Non-negative, right-skewed and mostly small, with variation across windows.
    assert np.median(rgb) < rgb.mean() < 1.0
    assert rgb.max() > 4 * rgb.mean()
    assert (rgb.std(axis=1) > 0).mean() > 0.99


def _arrays(root: Path, domain: str, split: str) -> tuple[np.ndarray, ...]:
    data = read_split(root, domain, split)
    return data.labels.numpy(), data.rgb.numpy(), data.flow.numpy()


def test_same_seed_gives_identical_features_and_another_seed_does_not(tmp_path):
    params = SMALL.replace(feature_dim=8)
    a = generate_store("synthetic-ucf-hmdb", tmp_path / "a", seed=3, params=params)
    b = generate_store("synthetic-ucf-hmdb", tmp_path / "b", seed=3, params=params)
    c = generate_store("synthetic-ucf-hmdb", tmp_path / "c", seed=4, params=params)
    for domain in ("U", "H"):
        for split in ("train", "test"):
            first, same, other = (_arrays(r, domain, split) for r in (a, b, c))
            for x, y in zip(first, same, strict=True):
                assert x.tobytes() == y.tobytes()
            assert not np.array_equal(first[1], other[1])
            assert not np.array_equal(first[2], other[2])


def test_store_round_trips_through_feature_pair_data(epic_store):
    data = FeaturePairData(
        epic_store, benchmark="synthetic-epic", source="D2", target="D1", synchronised=False
    )
    assert data.info.sizes == {
        "source_train": 2495,
        "target_train": 1543,
        "target_test": 435,
        "source_val": 750,
    }
    assert data.info.input_shapes == {"rgb": (24,), "flow": (24,)}
    stored = read_split(epic_store, "D2", "train")
    batch = next(data.train_batches("source_train", batch_size=16, seed=0, stage=0, start_step=0))
    assert batch["rgb"].shape == batch["flow"].shape == (16, 24)
    for row, index in enumerate(batch["index"].tolist()):
        assert batch["label"][row] == stored.labels[index]
        assert any(bool((stored.rgb[index, k] == batch["rgb"][row]).all()) for k in range(5))
    test = read_split(epic_store, "D1", "test")
    evaluated = next(data.eval_batches("target_test", batch_size=435))
    assert evaluated["rgb"].shape == (435, 5, 24)
    assert bool((evaluated["flow"] == test.flow).all())


def test_no_class_shares_a_scene_across_domains():
    world = make_world(SyntheticParams(), 0, ("D1", "D2", "D3"), 8)
    perms = world.scene_of
    for d in perms:
        assert sorted(perms[d].tolist()) == list(range(8))
        for e in perms:
            if d < e:
                assert (perms[d] != perms[e]).all(), (d, e)


def _probe_accuracy(train: Split, test: Split, modality: str) -> float:
    """Shrinkage LDA on standardised window-averaged features (closed form: deterministic)."""
    x_train, x_test = getattr(train, modality).mean(axis=1), getattr(test, modality).mean(axis=1)
    scaler = StandardScaler().fit(x_train)
    model = LinearDiscriminantAnalysis(solver="lsqr", shrinkage="auto")
    model.fit(scaler.transform(x_train), train.labels)
    return float((model.predict(scaler.transform(x_test)) == test.labels).mean())


def test_scene_predicts_the_class_inside_a_domain_but_misleads_across():
    """The premise: RGB beats flow inside a domain but transfers worse across domains.

    Linear probes on D1 test, trained on D1 train (within) or D2 train (across).
    With one class->scene permutation shared by the domains, RGB would transfer
    as well as flow and this test would fail.
    """
    params = SyntheticParams().replace(feature_dim=64)
    world = make_world(params, 0, ("D1", "D2", "D3"), 8)

    def split(domain: int, index: int) -> Split:
        name, split = f"D{domain}", ("train", "test")[index]
        rng = rng_for(0, domain, index)
        return sample_split(world, params, rng, name, EPIC_CLASS_COUNTS[name][split])

    d1_train, d1_test, d2_train = split(1, 0), split(1, 1), split(2, 0)
    within = {m: _probe_accuracy(d1_train, d1_test, m) for m in ("rgb", "flow")}
    across = {m: _probe_accuracy(d2_train, d1_test, m) for m in ("rgb", "flow")}
    assert within["rgb"] > within["flow"] + 0.05, within
    assert across["rgb"] < within["rgb"] - 0.12, (within, across)
    assert across["flow"] > within["flow"] - 0.05, (within, across)
    assert across["rgb"] < across["flow"], across


def test_generate_store_writes_what_the_world_samples(tmp_path):
    """generate_store's D1 test split is sample_split of stream (seed, 1, 1): no hidden state."""
    params = SMALL.replace(feature_dim=8)
    root = generate_store("synthetic-epic", tmp_path, seed=5, params=params)
    world = make_world(params, 5, ("D1", "D2", "D3"), 8)
    expected = sample_split(world, params, rng_for(5, 1, 1), "D1", EPIC_CLASS_COUNTS["D1"]["test"])
    labels, rgb, flow = _arrays(root, "D1", "test")
    assert np.array_equal(labels, expected.labels)
    assert rgb.tobytes() == expected.rgb.tobytes() and flow.tobytes() == expected.flow.tobytes()


def test_cache_returns_the_same_directory_without_regenerating(tmp_path, monkeypatch):
    first = synthetic_store("synthetic-ucf-hmdb", cache_dir=tmp_path, params=SMALL)
    assert (
        first
        == tmp_path
        / "synthetic"
        / f"synthetic-ucf-hmdb-{store_key('synthetic-ucf-hmdb', params=SMALL)}"
    )
    stamp = (first / "meta.json").stat().st_mtime_ns

    def forbidden(*args, **kwargs):
        raise AssertionError("the cached store was generated again")

    monkeypatch.setattr(synthetic, "generate_store", forbidden)
    assert synthetic_store("synthetic-ucf-hmdb", cache_dir=tmp_path, params=SMALL) == first
    assert (first / "meta.json").stat().st_mtime_ns == stamp
    assert [p.name for p in first.parent.iterdir()] == [first.name]


def test_cache_key_depends_on_seed_and_parameters():
    base = store_key("synthetic-epic", seed=0, params=SMALL)
    assert store_key("synthetic-epic", seed=0, params=SMALL) == base
    assert store_key("synthetic-epic", seed=1, params=SMALL) != base
    assert store_key("synthetic-epic", seed=0, params=SMALL.replace(flow_noise=0.7)) != base
    assert store_key("synthetic-ucf-hmdb", seed=0, params=SMALL) != base


def test_concurrent_generation_loser_keeps_the_winners_store(tmp_path, monkeypatch):
    """Another process finishes first: this one discards its copy and returns the winner's."""
    real = synthetic.generate_store
    final = (
        tmp_path
        / "synthetic"
        / f"synthetic-ucf-hmdb-{store_key('synthetic-ucf-hmdb', params=SMALL)}"
    )

    def race(benchmark, out, **kwargs):
        real(benchmark, final, **kwargs)  # the winner, renamed into place meanwhile
        (final / "winner").write_text("1")
        return real(benchmark, out, **kwargs)

    monkeypatch.setattr(synthetic, "generate_store", race)
    assert synthetic_store("synthetic-ucf-hmdb", cache_dir=tmp_path, params=SMALL) == final
    assert (final / "winner").is_file()
    assert [p.name for p in final.parent.iterdir()] == [final.name]


def test_incomplete_cached_directory_is_reported(tmp_path):
    key = store_key("synthetic-ucf-hmdb", params=SMALL)
    (tmp_path / "synthetic" / f"synthetic-ucf-hmdb-{key}").mkdir(parents=True)
    with pytest.raises(FileExistsError, match=r"no meta\.json"):
        synthetic_store("synthetic-ucf-hmdb", cache_dir=tmp_path, params=SMALL)


def test_default_cache_dir_follows_cmcl_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CMCL_CACHE", str(tmp_path))
    assert synthetic.default_cache_dir() == tmp_path
    monkeypatch.delenv("CMCL_CACHE")
    assert synthetic.default_cache_dir() == Path.home() / ".cache" / "cmcl"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"flow_rank": 65}, "flow_rank must be <= latent_dim=64, got 65"),
        ({"background_prob": 1.5}, r"background_prob must be in \[0, 1\], got 1.5"),
        ({"segment_std": -1.0}, "segment_std must be >= 0, got -1.0"),
        ({"windows": 0}, "windows must be >= 1, got 0"),
    ],
)
def test_invalid_parameters_are_named(change, message):
    with pytest.raises(ValueError, match=message):
        SyntheticParams().replace(**change)


def test_meta_records_the_generator(epic_store):
    body = json.loads((epic_store / "meta.json").read_text())
    assert body["generator"]["version"] == synthetic.GENERATOR_VERSION
    assert body["class_counts"]["D3"]["test"] == list(EPIC_CLASS_COUNTS["D3"]["test"])
