"""Optuna's own analysis of an HPO study: history, parameter importances, parallel coordinates.

The study lives in ``<study dir>/optuna.journal`` (journal file storage). Each
plot that Optuna cannot draw (too few completed trials, no parameter that
varies) becomes a line in the report instead of an error.
"""

from __future__ import annotations

import contextlib
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.collections import LineCollection

from cmcl.filestore import FileStore, is_uri
from cmcl.report.document import Block, Bullets, Figure, Heading, Table, Text
from cmcl.report.plots import save
from cmcl.report.source import StudyInfo


def _load(journal: Path) -> list:
    """Every Optuna study in a local journal file."""
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = JournalStorage(JournalFileBackend(str(journal)))
    return [
        optuna.load_study(study_name=n, storage=storage)
        for n in optuna.get_all_study_names(storage)
    ]


@contextlib.contextmanager
def local_journal(journal: Path | str) -> Iterator[Path]:
    """The journal as a local file: itself, or a temporary copy of one in an object store
    (Optuna's journal storage reads local files only)."""
    if not is_uri(str(journal)):
        yield Path(journal)
        return
    parent, _, name = str(journal).rpartition("/")
    with tempfile.TemporaryDirectory(prefix="cmcl-report-journal-") as folder:
        local = Path(folder) / name
        if not FileStore(parent).download(name, local):
            raise FileNotFoundError(f"{journal}: no such file")
        yield local


def hpo_blocks(study: StudyInfo, folder: Path, kind: str) -> list[Block]:
    """Blocks for every Optuna study in ``study.journal`` (``kind``: synthetic or real data)."""
    try:
        with local_journal(study.journal) as journal:
            return _blocks(study, journal, folder, kind)
    except FileNotFoundError as error:
        return [Text(f"{study.journal}: could not be read ({error}).")]


def _blocks(study: StudyInfo, journal: Path, folder: Path, kind: str) -> list[Block]:
    import optuna
    from optuna.visualization import matplotlib as optuna_plots

    try:
        studies = _load(journal)
    except Exception as error:  # a journal being written or from another Optuna version
        return [
            Text(f"{study.journal}: could not be read by Optuna ({type(error).__name__}: {error}).")
        ]
    blocks: list[Block] = []
    for optuna_study in studies:
        trials = optuna_study.get_trials(deepcopy=False)
        done = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
        states: dict[str, int] = {}
        for trial in trials:
            states[trial.state.name.lower()] = states.get(trial.state.name.lower(), 0) + 1
        name = optuna_study.study_name
        blocks.append(Heading(2, f"HPO study {name} ({kind}; study directory {study.name})"))
        direction = optuna_study.direction.name.lower()
        blocks.append(
            Text(
                f"Objective: {study.selection_metric or 'target_acc'} ({direction}); trials: "
                + ", ".join(f"{v} {k}" for k, v in sorted(states.items()))
                + ". Optuna's own plots; the study opens in optuna-dashboard "
                f"(`optuna-dashboard {study.journal}`)."
            )
        )
        if done:
            best = optuna_study.best_trial
            params = ", ".join(f"{k}={_short(v)}" for k, v in best.params.items())
            blocks.append(Text(f"Best trial #{best.number}: value {best.value:.2f} with {params}."))
        problems = []
        target = f"{study.selection_metric or 'objective'}"
        plots = (
            ("history", "optimisation history", optuna_plots.plot_optimization_history, {}),
            (
                "importances",
                "parameter importances (fANOVA, seed 0)",
                optuna_plots.plot_param_importances,
                {"evaluator": optuna.importance.FanovaImportanceEvaluator(seed=0)},
            ),
            ("parallel", "parallel coordinates", optuna_plots.plot_parallel_coordinate, {}),
        )
        for stem, title, draw, kwargs in plots:
            if len(done) < 2:
                problems.append(f"{title}: needs at least 2 completed trials, has {len(done)}")
                continue
            # Optuna switches the global style to ggplot; rc_context puts it back afterwards.
            with matplotlib.rc_context(), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                try:
                    ax = draw(optuna_study, target_name=target, **kwargs)
                except Exception as error:
                    problems.append(f"{title}: Optuna could not draw it ({error})")
                    continue
                figure = ax.figure
                if stem == "parallel":
                    # Optuna's Blues map draws the worst trial near-white; viridis stays visible.
                    for lines in figure.findobj(LineCollection):
                        lines.set_cmap("viridis_r" if direction == "minimize" else "viridis")
                figure.set_size_inches(8, 4.5)
                ax.set_title(f"HPO study {name} ({kind}): {title}", fontsize=11)
                figure.tight_layout()
                path = save(figure, folder, f"hpo_{study.name}_{name}_{stem}")
            blocks.append(Figure(path, f"HPO study {name}: {title} ({kind})"))
        if done:
            blocks.append(_top_trials(done, optuna_study.direction.name == "MINIMIZE"))
        if problems:
            blocks.append(Bullets(problems))
        plt.close("all")
    return blocks


def _short(value: object) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _top_trials(done: list, minimise: bool, count: int = 10) -> Table:
    ranked = sorted(done, key=lambda t: t.value if minimise else -t.value)[:count]
    names = sorted({k for t in ranked for k in t.params})
    rows = [
        [str(t.number), f"{t.value:.2f}", *(_short(t.params.get(k, "—")) for k in names)]
        for t in ranked
    ]
    return Table(["Trial", "Value", *names], rows)
