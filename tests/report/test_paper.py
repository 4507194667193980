import json
from pathlib import Path

import pytest

from cmcl.report.paper import (
    PAPER_DEFAULTS,
    benchmark_family,
    family_pairs,
    normalise_pair,
    paper_data,
    paper_sensitivity,
    paper_tables,
)

SHARED_TABLES = Path(__file__).resolve().parents[2] / ".." / "shared" / "paper" / "tables.json"


def test_packaged_numbers_equal_the_shared_copy():
    assert paper_data() == json.loads(SHARED_TABLES.read_text())


def test_every_table_is_mapped_to_its_family():
    tables = paper_tables()
    assert sorted(tables) == [
        "table2_ucf_hmdb",
        "table3_epic",
        "table4_ablation_epic",
        "table5_sampling_epic",
        "table6_hyperparameters_epic",
        "table7_projection_head_epic",
        "table8_alignment_epic",
    ]
    assert tables["table2_ucf_hmdb"].family == "ucf-hmdb"
    assert {t.family for k, t in tables.items() if k != "table2_ucf_hmdb"} == {"epic"}
    assert tables["table3_epic"].pair_columns == family_pairs("epic")
    assert family_pairs("ucf-hmdb") == ("U-H", "H-U")
    assert tables["table6_hyperparameters_epic"].is_ablation
    assert not tables["table2_ucf_hmdb"].is_ablation


def test_row_settings_become_required_config_values():
    tables = paper_tables()
    t5 = tables["table5_sampling_epic"].rows
    assert [dict(r.required) for r in t5] == [
        {"cfg.data.sampling": "synchronised"},
        {"cfg.data.sampling": "independent"},
        {"cfg.data.sampling": "synchronised"},
        {"cfg.data.sampling": "independent"},
    ]
    t6 = tables["table6_hyperparameters_epic"].rows
    assert dict(t6[2].required) == {"cfg.method.lam": 1.0, "cfg.method.threshold": 0.8}
    assert t6[0].required == ()
    t7 = tables["table7_projection_head_epic"].rows
    assert dict(t7[1].required) == {"cfg.method.head_in_modality": False}
    assert dict(t7[2].required) == {"cfg.method.head_in_domain": True}
    # Tables 4 and 8 describe the method; they never filter.
    t4 = tables["table4_ablation_epic"].rows
    assert all(r.required == () for r in t4)
    assert dict(t4[1].descriptive) == {"modality": True, "domain": False}
    assert [r.method for r in tables["table8_alignment_epic"].rows] == [
        "cmco",
        "adv_adv",
        "con_adv",
    ]


def test_other_papers_rows_have_no_method_and_labels_disambiguate():
    t2 = paper_tables()["table2_ucf_hmdb"]
    assert [r.setting for r in t2.rows if r.method is None][:2] == ["Source-only [TA3N]", "TA3N"]
    t4 = paper_tables()["table4_ablation_epic"]
    assert t4.rows[0].label() == "Source-only"
    assert t4.rows[1].label() == "MM-SADA [modality=yes, domain=no]"
    assert paper_tables()["table6_hyperparameters_epic"].rows[2].label() == "Ours (lambda=1.0)"


def test_paper_values_by_column():
    t3 = paper_tables()["table3_epic"]
    final = t3.rows[7]
    assert final.method == "cmco"
    assert t3.paper_value(final, "D2-D1") == 49.5
    assert t3.paper_value(final, "D2->D3") == 52.0
    assert t3.paper_value(final, "Mean") == 51.0
    assert t3.paper_value(final, "Gain") == 5.5
    assert t3.paper_value(t3.rows[0], "Gain") is None
    assert t3.paper_value(final, "U-H") is None


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("synthetic-epic", ("epic", True)),
        ("synthetic-ucf-hmdb", ("ucf-hmdb", True)),
        ("epic", ("epic", False)),
        ("ucf-hmdb", ("ucf-hmdb", False)),
    ],
)
def test_benchmark_family(name, expected):
    assert benchmark_family(name) == expected


def test_pair_normalisation_and_defaults():
    assert normalise_pair("D2->D1") == "D2-D1"
    assert normalise_pair("u-h") == "U-H"
    assert PAPER_DEFAULTS["cfg.method.lam"] == paper_data()["defaults"]["lambda"]
    assert PAPER_DEFAULTS["cfg.method.threshold"] == paper_data()["defaults"]["threshold"]
    assert PAPER_DEFAULTS["cfg.method.delta"] == paper_data()["defaults"]["momentum"]


def test_table6_curves_come_from_the_paper_numbers():
    # Formerly hard-coded in plots.py; now read from Table 6's rows.
    assert paper_sensitivity() == {
        "cfg.method.lam": {1.0: 50.1, 1.25: 51.0, 1.5: 49.5},
        "cfg.method.threshold": {0.6: 49.8, 0.8: 51.0, 0.9: 49.6},
    }
    assert paper_sensitivity("mmd") == {}


def test_shared_facts_have_one_source():
    import cmcl.common as common
    from cmcl.report import aggregate, paper, store

    assert paper.normalise_pair is common.normalise_pair
    assert paper.pair_label is common.pair_label
    assert paper_data is common.paper_numbers
    assert aggregate.METRICS is common.METRICS and aggregate.METRIC_TEXT is common.METRIC_TEXT
    assert store.IDENTITY is common.IDENTITY
