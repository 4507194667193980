"""Reports from result files alone: the paper's tables, sensitivity, HPO and feature plots.

Never imports torch or ray (tests/report/test_build.py runs a report with both
blocked). Entry point: :func:`cmcl.report.build.build_report` (``cmcl report``).

    store      read study and run directories into pandas
    aggregate  per-run accuracy under a rule, seed statistics, bootstrap
    choose     which configuration stands for a table row
    paper      the paper's numbers (paper_tables.json) and row -> settings
    tables     fill a paper table; layout renders it
    protocol   what produced a table: mode (feature/video) and schedule, from the runs
    selection  what each selection metric would pick
    plots, hpo, features   figures; sections, document, build   the report
"""
