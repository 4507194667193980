"""The plain-PyTorch trainer (no Ray import anywhere under cmcl.engine)."""

from cmcl.engine.reporting import ConsoleReporter, Reporter
from cmcl.engine.trainer import FitResult, NonFiniteLossError, NonFiniteMetricError, fit

__all__ = [
    "ConsoleReporter",
    "FitResult",
    "NonFiniteLossError",
    "NonFiniteMetricError",
    "Reporter",
    "fit",
]
