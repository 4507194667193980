"""Loss modules: settings in the constructor, tensors in ``forward``, an unweighted scalar out."""

from cmcl.losses.adversarial import DomainClassificationLoss
from cmcl.losses.correspondence import CorrespondenceLoss, CorrespondencePairs, correspondence_pairs
from cmcl.losses.cross_domain import CrossDomainContrastiveLoss
from cmcl.losses.cross_modal import CrossModalContrastiveLoss
from cmcl.losses.mcd import ClassifierDiscrepancyLoss
from cmcl.losses.mmd import MMDLoss
from cmcl.losses.pseudo_label import PseudoLabelLoss, PseudoLabels, confident_pseudo_labels

__all__ = [
    "ClassifierDiscrepancyLoss",
    "CorrespondenceLoss",
    "CorrespondencePairs",
    "CrossDomainContrastiveLoss",
    "CrossModalContrastiveLoss",
    "DomainClassificationLoss",
    "MMDLoss",
    "PseudoLabelLoss",
    "PseudoLabels",
    "confident_pseudo_labels",
    "correspondence_pairs",
]
