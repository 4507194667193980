"""Every method: registered under its public name, described, tied to the paper's tables, trainable."""

from __future__ import annotations

import json
import math
import re

import pytest
from click.testing import CliRunner
from conftest import SHARED, tiny_overrides

from cmcl.cli import cli
from cmcl.config import RunConfig
from cmcl.engine import fit
from cmcl.methods import METHODS, method_class

PUBLIC = (
    "source_only",
    "supervised_target",
    "cmco",
    "cmco_modality",
    "cmco_domain",
    "adabn",
    "mmd",
    "mcd",
    "mm_sada",
    "mm_sada_modality",
    "mm_sada_domain",
    "pseudo_label",
    "adv_adv",
    "con_adv",
)

ADAPTATION_TERMS = {
    "source_only": set(),
    "supervised_target": set(),
    "adabn": set(),
    "cmco": {"mo_source", "mo_target", "do_rgb", "do_flow"},
    "cmco_modality": {"mo_source", "mo_target"},
    "cmco_domain": {"do_rgb", "do_flow"},
    "mmd": {"mmd_rgb", "mmd_flow"},
    "mcd": {"src_ce2", "mcd_disc"},
    "mm_sada": {"corr", "adv_rgb", "adv_flow"},
    "mm_sada_modality": {"corr"},
    "mm_sada_domain": {"adv_rgb", "adv_flow"},
    "pseudo_label": {"pl"},
    "adv_adv": {"madv_source", "madv_target", "adv_rgb", "adv_flow"},
    "con_adv": {"mo_source", "mo_target", "adv_rgb", "adv_flow"},
}


def test_every_public_method_is_registered():
    assert set(PUBLIC) == set(METHODS)
    for name, cls in METHODS.items():
        assert cls.name == name
        assert cls.description and "\n" not in cls.description and len(cls.description) <= 100
        assert cls.paper_rows


def _paper_tables() -> dict[str, set[str]]:
    """Table number -> methods that have a row in it (shared/paper/tables.json)."""
    data = json.loads((SHARED / "paper" / "tables.json").read_text())
    tables = {}
    for key, table in data.items():
        match = re.fullmatch(r"table(\d)_.*", key)
        if match:
            tables[match.group(1)] = {r["method"] for r in table["rows"] if "method" in r}
    return tables


@pytest.mark.parametrize("name", PUBLIC)
def test_paper_rows_name_exactly_the_tables_the_method_appears_in(name):
    tables = _paper_tables()
    mentioned = {re.match(r"T(\d)\b", row).group(1) for row in METHODS[name].paper_rows}
    assert mentioned == {t for t, methods in tables.items() if name in methods}


def test_cli_lists_every_method_with_description_and_rows():
    result = CliRunner().invoke(cli, ["methods"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    for name, cls in METHODS.items():
        (line,) = [i for i, text in enumerate(lines) if text.split()[:1] == [name]]
        assert cls.description in lines[line]
        assert lines[line + 1].strip() == f"paper rows: {', '.join(cls.paper_rows)}"


def test_unknown_method_lists_the_valid_ones():
    with pytest.raises(ValueError, match=r"unknown method 'mm-sada'; valid: .*mm_sada, .*con_adv"):
        method_class("mm-sada")


@pytest.mark.parametrize("name", PUBLIC)
def test_each_method_trains_with_finite_losses(tiny_store, name):
    config = RunConfig.from_overrides(
        tiny_overrides(
            tiny_store,
            method=name,
            **{"train.warmup_steps": 2, "train.steps": 2, "train.lr_step": 1},
        )
    )
    result = fit(config)
    for row in result.history:
        for key, value in row.items():
            if key.startswith("loss_"):
                assert math.isfinite(value), (row["stage"], row["step"], key)
    terms = {k[len("loss_") :] for k in result.history[-1] if k.startswith("loss_")}
    expected = {"total", "tgt_ce"} if name == "supervised_target" else {"total", "src_ce"}
    assert terms == expected | ADAPTATION_TERMS[name]
    assert math.isfinite(result.summary["target_acc"])
