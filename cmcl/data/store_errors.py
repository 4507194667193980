"""Errors about a feature store's files that say what to do, by how the store was made."""

from __future__ import annotations

import json
from pathlib import Path


def repair_hint(root: str | Path) -> str:
    """What to do about a damaged or unusable file of the store at ``root``, by how it was made."""
    root = Path(root)
    try:
        meta = json.loads((root / "meta.json").read_text())
    except (OSError, ValueError):
        meta = {}
    if isinstance(meta, dict) and "generator" in meta:
        return (
            f"{root} is a cached synthetic store: delete that directory and it is generated "
            "again on next use"
        )
    if isinstance(meta, dict) and "extraction" in meta:
        return (
            "Delete the file and run `cmcl features extract` again with the same settings and "
            f"output {root}: only the missing splits are computed again"
        )
    return "Write the split file again (cmcl.data.feature_store.write_split)"


def _meta_hint(root: Path) -> str:
    # meta.json itself is what tells how the store was made, so both remedies are given.
    return (
        f"If `cmcl features extract` made the store, delete meta.json and run it again with "
        f"the same settings and output {root}: it writes meta.json anew and recomputes no "
        f"split; if {root} is a cached synthetic store, delete that directory"
    )


class DamagedFileError(ValueError):
    """A store file that does not parse (truncated, overwritten); names it and what to do."""

    def __init__(self, path: Path, reason: str) -> None:
        self.path, self.reason = path, reason
        hint = _meta_hint(path.parent) if path.name == "meta.json" else repair_hint(path.parent)
        super().__init__(
            f"{path}: cannot be read ({reason}); the file is damaged or truncated. {hint}"
        )
