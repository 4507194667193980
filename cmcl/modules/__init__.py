"""Reusable parts: memory bank, gradient reversal, discriminators, heads."""

from cmcl.modules.memory_bank import MemoryBank

__all__ = ["MemoryBank"]
