"""StudyOptunaSearch without a cluster: pruned and failed trials, rounds, restore after a crash."""

from __future__ import annotations

import math

import optuna
import pytest

from cmcl.ray.searcher import StudyOptunaSearch, journal_storage


def make(journal, seed=0):
    return StudyOptunaSearch(
        {"x": optuna.distributions.FloatDistribution(0.0, 1.0)},
        metric="objective",
        mode="max",
        sampler=optuna.samplers.TPESampler(seed=seed, n_startup_trials=2),
        study_name="s",
        journal=str(journal),
    )


def states(journal):
    study = optuna.load_study(study_name="s", storage=journal_storage(str(journal)))
    return [(t.state.name, t.value, t.user_attrs.get("tune_trial_id")) for t in study.trials]


def test_stopped_trials_are_pruned_and_nan_values_fail(tmp_path):
    journal = tmp_path / "optuna.journal"
    searcher = make(journal)
    for tid in ("a", "b", "c", "d"):
        assert 0.0 <= searcher.suggest(tid)["x"] <= 1.0
    for tid in ("a", "b", "c"):
        searcher.on_trial_result(tid, {"objective": 40.0, "evaluation": 1, "final": False})
        searcher.on_trial_result(tid, {"objective": 41.0, "evaluation": 2, "final": False})
        searcher.on_trial_result(tid, {"objective": 99.0, "evaluation": 2, "final": False})  # again
    searcher.on_trial_complete("a", {"objective": 50.0, "final": True})
    searcher.on_trial_complete("b", {"objective": 41.0, "evaluation": 2, "final": False})
    searcher.on_trial_complete("c", {"objective": math.nan, "final": True})
    searcher.on_trial_complete("d", None, error=True)
    searcher.on_trial_complete("a", {"objective": 1.0, "final": True})  # told once only
    assert states(journal) == [
        ("COMPLETE", 50.0, "a"),
        ("PRUNED", 41.0, "b"),  # Optuna keeps the last reported value of a pruned trial
        ("FAIL", None, "c"),
        ("FAIL", None, "d"),
    ]
    study = optuna.load_study(study_name="s", storage=journal_storage(str(journal)))
    assert study.trials[0].intermediate_values == {1: 40.0, 2: 41.0}


def test_restore_reopens_the_journal_and_continues_orphaned_trials(tmp_path):
    first_dir, moved = tmp_path / "first", tmp_path / "moved"
    first_dir.mkdir()
    searcher = make(first_dir / "optuna.journal")
    searcher.suggest("a")
    searcher.on_trial_complete("a", {"objective": 10.0, "final": True})
    searcher.suggest("b")
    searcher.on_trial_result("b", {"objective": 5.0, "evaluation": 1, "final": False})
    searcher.save(str(first_dir / "searcher.pkl"))  # Tune's snapshot
    # After the snapshot, before the crash: b reports again, c is asked.
    searcher.on_trial_result("b", {"objective": 6.0, "evaluation": 2, "final": False})
    orphan = searcher.suggest("c")
    first_dir.rename(moved)  # the study directory moved before the resume

    StudyOptunaSearch.journal_on_restore = str(moved / "optuna.journal")
    try:
        restored = make(tmp_path / "unused.journal", seed=1)
        restored.restore(str(moved / "searcher.pkl"))
    finally:
        StudyOptunaSearch.journal_on_restore = None
    # b's rounds 1-2 reach Optuna once; Tune's next trial takes over the orphan c.
    restored.on_trial_result("b", {"objective": 6.5, "evaluation": 2, "final": False})
    restored.on_trial_result("b", {"objective": 7.0, "evaluation": 3, "final": False})
    assert restored.suggest("d") == orphan
    assert restored.suggest("e") != orphan
    for tid, value in (("b", 8.0), ("d", 9.0), ("e", 11.0)):
        restored.on_trial_complete(tid, {"objective": value, "final": True})
    assert states(moved / "optuna.journal") == [
        ("COMPLETE", 10.0, "a"),
        ("COMPLETE", 8.0, "b"),
        ("COMPLETE", 9.0, "d"),
        ("COMPLETE", 11.0, "e"),
    ]
    study = optuna.load_study(
        study_name="s", storage=journal_storage(str(moved / "optuna.journal"))
    )
    assert study.trials[1].intermediate_values == {1: 5.0, 2: 6.0, 3: 7.0}
    assert not (tmp_path / "unused.journal").exists() or states(tmp_path / "unused.journal") == []


@pytest.mark.parametrize("mode", ["max", "min"])
def test_best_trial_follows_the_mode(tmp_path, mode):
    searcher = StudyOptunaSearch(
        {"x": optuna.distributions.CategoricalDistribution([1, 2])},
        metric="objective",
        mode=mode,
        sampler=optuna.samplers.TPESampler(seed=0),
        study_name="s",
        journal=str(tmp_path / "j"),
    )
    for tid, value in (("a", 1.0), ("b", 2.0)):
        searcher.suggest(tid)
        searcher.on_trial_complete(tid, {"objective": value, "final": True})
    study = optuna.load_study(study_name="s", storage=journal_storage(str(tmp_path / "j")))
    assert study.best_value == (2.0 if mode == "max" else 1.0)
