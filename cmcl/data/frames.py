"""Where frames live on disk: path templates for RGB and flow frames.

A template is a ``str.format`` pattern relative to the frames root (an absolute
result is used as is). Placeholders:

    {participant}  EPIC participant, P08        {video}  video id / folder name, P08_01
    {domain}       D1 | U | H                   {split}  train | test
    {path}         the path column of a TA3N list file
    {frame}        frame number (an int: use a format spec, {frame:010d})
    {uv}           flow component u | v         {xy}     the same as x | y (TSN naming)

Named layouts (``data.rgb_template`` / ``data.flow_template`` may name one
instead of spelling a template):

    mmsada     rgb/P08/P08_01/frame_0000000001.jpg, flow/P08/P08_01/u/frame_0000000001.jpg
    epic-tar   rgb/train/D1/P08_01/frame_0000000001.jpg, flow/train/D1/P08_01/u/frame_...
               (the splits' download script fetches frames_rgb_flow/{rgb,flow}/{train,test}/D1/P08_01.tar;
               extract each tar into a folder named like it, P08_01/)
    ta3n       {path}/img_00001.jpg, {path}/flow_x_00001.jpg (TSN-style frame folders of UCF/HMDB)

EPIC-Kitchens-55 flow was computed at half the RGB rate; which flow frame an
RGB frame maps to is the window sampler's business (cmcl.data.windows).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

MODALITIES = ("rgb", "flow")
FLOW_COMPONENTS = ("u", "v")
_XY = {"u": "x", "v": "y"}


@dataclass(frozen=True)
class FrameLayout:
    """RGB and flow path templates (see the module docstring for placeholders)."""

    rgb: str
    flow: str

    def __post_init__(self) -> None:
        for name, template in (("rgb", self.rgb), ("flow", self.flow)):
            if "{frame" not in template:
                raise ValueError(f"{name} frame template must contain {{frame}}, got {template!r}")
        if "{uv" not in self.flow and "{xy" not in self.flow:
            raise ValueError(
                f"flow frame template must contain {{uv}} or {{xy}} (u and v are separate "
                f"greyscale frames), got {self.flow!r}"
            )

    def rgb_path(self, root: str | Path, fields: Mapping[str, str], frame: int) -> Path:
        return Path(root) / _format(self.rgb, fields, frame=frame)

    def flow_path(self, root: str | Path, fields: Mapping[str, str], frame: int, uv: str) -> Path:
        return Path(root) / _format(self.flow, fields, frame=frame, uv=uv, xy=_XY[uv])


def _format(template: str, fields: Mapping[str, str], **extra: object) -> str:
    try:
        return template.format(**fields, **extra)
    except KeyError as error:
        known = ", ".join(sorted([*fields, *extra]))
        raise ValueError(
            f"frame template {template!r} uses {{{error.args[0]}}}, which this benchmark's "
            f"segments do not provide; available: {known}"
        ) from None


LAYOUTS: dict[str, FrameLayout] = {
    "mmsada": FrameLayout(
        rgb="rgb/{participant}/{video}/frame_{frame:010d}.jpg",
        flow="flow/{participant}/{video}/{uv}/frame_{frame:010d}.jpg",
    ),
    "epic-tar": FrameLayout(
        rgb="rgb/{split}/{domain}/{video}/frame_{frame:010d}.jpg",
        flow="flow/{split}/{domain}/{video}/{uv}/frame_{frame:010d}.jpg",
    ),
    "ta3n": FrameLayout(
        rgb="{path}/img_{frame:05d}.jpg",
        flow="{path}/flow_{xy}_{frame:05d}.jpg",
    ),
}
DEFAULT_LAYOUTS = {"epic": "mmsada", "ucf-hmdb": "ta3n"}


def _template(value: str, modality: str) -> str:
    if value in LAYOUTS:
        return getattr(LAYOUTS[value], modality)
    if "{" not in value:
        raise ValueError(
            f"{modality} frame template {value!r} is neither a layout name "
            f"({', '.join(LAYOUTS)}) nor a template with {{frame}}"
        )
    return value


def frame_layout(benchmark: str, rgb: str | None = None, flow: str | None = None) -> FrameLayout:
    """The benchmark's default layout with ``rgb`` / ``flow`` (templates or layout names) overriding it."""
    if benchmark not in DEFAULT_LAYOUTS:
        raise ValueError(
            f"benchmark {benchmark!r} has no frames; valid: {', '.join(DEFAULT_LAYOUTS)}"
        )
    default = LAYOUTS[DEFAULT_LAYOUTS[benchmark]]
    return FrameLayout(
        rgb=default.rgb if rgb is None else _template(rgb, "rgb"),
        flow=default.flow if flow is None else _template(flow, "flow"),
    )
