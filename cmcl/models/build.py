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
            f"{modality}_backbone": FeatureBackbone(
                in_dim=info.input_shapes[modality][0], out_dim=config.feature_dim
            )
            for modality in ("rgb", "flow")
        }
    else:
        from cmcl.models.i3d_backbone import two_stream_i3d_backbones

        if config.feature_dim != 1024:
            raise ValueError(f"I3D features are 1024-d; model.feature_dim is {config.feature_dim}")
        # Weights load on CPU here; the trainer moves the model and, on GPU, makes it channels-last.
        backbones = two_stream_i3d_backbones(
            rgb_checkpoint=config.i3d_rgb, flow_checkpoint=config.i3d_flow
        )
    return TwoStreamModel(
        **backbones,
        num_classes=info.num_classes,
        feature_dim=config.feature_dim,
        dropout=config.dropout,
        fusion=config.fusion,
        proj_hidden=config.proj_hidden,
        proj_dim=config.proj_dim,
    )
