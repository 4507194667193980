"""Loss modules: settings in the constructor, tensors in ``forward``, an unweighted scalar out."""

from cmcl.losses.cross_domain import CrossDomainContrastiveLoss
from cmcl.losses.cross_modal import CrossModalContrastiveLoss

__all__ = ["CrossDomainContrastiveLoss", "CrossModalContrastiveLoss"]
