"""Method names -> classes. Adding a method: one file + one line here."""

from __future__ import annotations

from cmcl.config import MethodConfig
from cmcl.data.base import DataInfo
from cmcl.methods.base import Method
from cmcl.methods.cmco import CrossDomainOnly, CrossModalContrastive, CrossModalOnly
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
    )
}


def method_class(name: str) -> type[Method]:
    try:
        return METHODS[name]
    except KeyError:
        raise ValueError(f"unknown method {name!r}; valid: {', '.join(METHODS)}") from None


def build_method(*, model: TwoStreamModel, config: MethodConfig, info: DataInfo) -> Method:
    return method_class(config.name)(model=model, config=config, info=info)
