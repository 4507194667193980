"""Reports from result files alone: the paper's tables, sensitivity, HPO and feature plots.

Never imports torch or ray (tests/report/test_build.py runs a report with both
blocked). Entry point: :func:`cmcl.report.build.build_report` (``cmcl report``).

    store      read study and run directories into one row per run (flat memory)
    source     what the readers share; legacy (format 1, run directories) and
               chunked (format 2, local or object store) are the readers
    aggregate  per-run accuracy under a rule, seed statistics, bootstrap
    choose     which configuration stands for a table row
    paper      the paper's numbers (cmcl.common) and row -> settings
    tables     fill a paper table; layout renders it
    protocol   what produced a table: mode (feature/video) and schedule, from the runs
    selection  what each selection metric would pick
    retrieval  cross-domain retrieval (torch- and matplotlib-free: the run worker uses it)
    plots, hpo, features, feature_section   figures
    sections, document, build, progress     the report
"""
