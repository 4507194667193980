"""A study's pace against its slots: wall time against (sum of run times) / slots.

Runs a study file on a private local Ray of ``--cpus`` CPUs (its start
included in the wall time) and reads, from the study's own records:

  own      each run's engine time (``wall_s`` of its summary), summed
  ideal    own / slots: the wall time if slots never waited and runs cost
           nothing beyond their own training
  slot     each run's time on its slot, from its start on a worker to its end
           (the driver's records, ``slot_s``), summed
  ratio    wall / ideal (the sweep-pace issue's target: <= 1.15 for the 3x3
           study, <= 1.10 for the Table 3 twin)

and splits the slot time per run beyond its own training into what happens
inside the run's task (``slot - own``: imports on a fresh worker, data and
model build, the feature dump) and what happens between runs (the slots'
idle time: ``wall x slots - slot``, the tail included).

    PYTHONPATH=. python benchmarks/study_pace.py --study benchmarks/studies/pace_3x3.yaml
    PYTHONPATH=. python benchmarks/study_pace.py --study studies/table3_epic.yaml --synthetic \\
        --set train.warmup_steps=100 --set train.steps=200 --set train.lr_step=100 \\
        --set train.checkpoint_every=100 --set train.eval_every=20 --set train.dump_features=0
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path


def measure(
    study_file: str, *, cpus: int, synthetic: bool, assignments: list[str], keep: str | None = None
) -> dict:
    import dataclasses

    from cmcl.config import parse_assignments
    from cmcl.ray.study import run_new_study
    from cmcl.results import SUMMARIES_DIR, read_dataset
    from cmcl.study.directory import StudyDir, command_line_overrides
    from cmcl.study.spec import load_spec

    spec = load_spec(study_file)
    spec = spec.on_synthetic() if synthetic else spec
    if keep is not None:
        spec = dataclasses.replace(spec, keep=keep)
    overrides = command_line_overrides(spec, assignments=parse_assignments(assignments))
    work = Path(tempfile.mkdtemp(prefix="study-pace-"))
    os.environ.setdefault("RAY_TMPDIR", str(work / "ray"))
    try:
        started, t0 = time.perf_counter(), time.time()
        location = run_new_study(
            spec, storage=work / "studies", overrides=overrides, echo=False, num_cpus=cpus
        )
        wall = time.perf_counter() - started
        study = StudyDir(location)
        summaries = read_dataset(study.store, SUMMARIES_DIR, columns=["run_id", "wall_s"])
        own = float(sum(summaries.column("wall_s").to_pylist()))
        runs = [r for t in study.read_state().trials.values() for r in t.runs]
        slot = sum(r.slot_s for r in runs)
        resolved = study.read_meta().get("resolved", {})
        files = [p for p in study.path.rglob("*") if p.is_file()]
        size = sum(p.stat().st_size for p in files)
        timeline = sorted((r.began_at, r.ended_at, r.pid, r.run_id) for r in runs)
        for began, ended, pid, run in timeline:
            print(f"  {run:<24} pid {pid:>7}  {began - t0:7.1f} -> {ended - t0:7.1f} s")
        slots = int(resolved.get("runs_at_once", cpus))
        return {
            "study": spec.name,
            "runs": len(runs),
            "slots": slots,
            "wall": wall,
            "own": own,
            "ideal": own / slots,
            "ratio": wall / (own / slots),
            "in_task_per_run": (slot - own) / len(runs),
            "between_runs_per_run": (wall * slots - slot) / len(runs),
            "bytes_per_run": size / len(runs),
            "files_per_run": len(files) / len(runs),
            "files": len(files),
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study", required=True, help="a study file")
    parser.add_argument("--synthetic", action="store_true", help="run its synthetic twin")
    parser.add_argument("--set", dest="assignments", action="append", default=[])
    parser.add_argument("--cpus", type=int, default=2, help="CPUs of the private Ray")
    parser.add_argument("--keep", choices=("final", "all"), help="instead of the file's keep")
    args = parser.parse_args()
    result = measure(
        args.study,
        cpus=args.cpus,
        synthetic=args.synthetic,
        assignments=args.assignments,
        keep=args.keep,
    )
    print(
        f"{result['study']}: {result['runs']} runs on {result['slots']} slots; wall "
        f"{result['wall']:.1f} s, own {result['own']:.1f} s, ideal {result['ideal']:.1f} s, "
        f"ratio {result['ratio']:.3f}; per run beyond its own training: "
        f"{result['in_task_per_run']:.2f} s in its task, "
        f"{result['between_runs_per_run']:.2f} s of slot idle between runs (tail included); "
        f"{result['bytes_per_run'] / 2**20:.1f} MiB and {result['files_per_run']:.2f} files per "
        f"run ({result['files']} files in all)"
    )


if __name__ == "__main__":
    main()
