"""Build the two-stream model a run's config asks for."""

from __future__ import annotations

from cmcl.config import ModelConfig
from cmcl.data.base import DataInfo
from cmcl.models.feature_backbone import FeatureBackbone
from cmcl.models.two_stream import TwoStreamModel


def build_model(config: ModelConfig, info: DataInfo) -> TwoStreamModel:
    """Feature mode: an MLP per stream over the stored window features; video mode: I3D."""
    if config.backbone == "features":
        backbones = {
            modality: FeatureBackbone(
                in_dim=info.input_shapes[modality][0], out_dim=config.feature_dim
            )
            for modality in ("rgb", "flow")
        }
    else:
        from cmcl.models.i3d import build_i3d_backbones

        backbones = build_i3d_backbones(config)
    return TwoStreamModel(
        rgb_backbone=backbones["rgb"],
        flow_backbone=backbones["flow"],
        num_classes=info.num_classes,
        feature_dim=config.feature_dim,
        dropout=config.dropout,
        fusion=config.fusion,
        proj_hidden=config.proj_hidden,
        proj_dim=config.proj_dim,
    )
