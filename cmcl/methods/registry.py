"""Method names -> classes. Adding a method: one file + one line here."""

from __future__ import annotations

from cmcl.config import MethodConfig
from cmcl.data.base import DataInfo
from cmcl.methods.adabn import AdaBN
from cmcl.methods.adv_adv import AdversarialAlignment
from cmcl.methods.base import Method
from cmcl.methods.cmco import CrossDomainOnly, CrossModalContrastive, CrossModalOnly
from cmcl.methods.con_adv import ContrastiveAdversarial
from cmcl.methods.mcd import MCD
from cmcl.methods.mm_sada import MMSADA, MMSADADomain, MMSADAModality
from cmcl.methods.mmd import MMD
from cmcl.methods.pseudo_label import PseudoLabel
from cmcl.methods.source_only import SourceOnly
from cmcl.methods.supervised_target import SupervisedTarget
from cmcl.models.two_stream import TwoStreamModel

METHODS: dict[str, type[Method]] = {
    cls.name: cls
    for cls in (
        SourceOnly,
        SupervisedTarget,
        CrossModalContrastive,
        CrossModalOnly,
        CrossDomainOnly,
        AdaBN,
        MMD,
        MCD,
        MMSADA,
        MMSADAModality,
        MMSADADomain,
        PseudoLabel,
        AdversarialAlignment,
        ContrastiveAdversarial,
    )
}


def method_class(name: str) -> type[Method]:
    try:
        return METHODS[name]
    except KeyError:
        raise ValueError(f"unknown method {name!r}; valid: {', '.join(METHODS)}") from None


def build_method(*, model: TwoStreamModel, config: MethodConfig, info: DataInfo) -> Method:
    return method_class(config.name)(model=model, config=config, info=info)
