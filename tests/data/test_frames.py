from __future__ import annotations

from pathlib import Path

import pytest

from cmcl.data.frames import LAYOUTS, FrameLayout, frame_layout

EPIC_FIELDS = {"participant": "P08", "video": "P08_01", "domain": "D1", "split": "train"}


def test_mmsada_layout():
    layout = frame_layout("epic")
    assert layout == LAYOUTS["mmsada"]
    assert layout.rgb_path("/r", EPIC_FIELDS, 1) == Path("/r/rgb/P08/P08_01/frame_0000000001.jpg")
    assert layout.flow_path("/r", EPIC_FIELDS, 23, "v") == Path(
        "/r/flow/P08/P08_01/v/frame_0000000023.jpg"
    )


def test_extracted_tar_layout():
    layout = frame_layout("epic", "epic-tar", "epic-tar")
    assert layout.rgb_path("/r", EPIC_FIELDS, 12) == Path(
        "/r/rgb/train/D1/P08_01/frame_0000000012.jpg"
    )
    assert layout.flow_path("/r", EPIC_FIELDS, 6, "u") == Path(
        "/r/flow/train/D1/P08_01/u/frame_0000000006.jpg"
    )


def test_ta3n_layout_and_absolute_paths():
    layout = frame_layout("ucf-hmdb")
    fields = {"path": "ucf101/v_Archery_g01_c01", "video": "v_Archery_g01_c01"}
    assert layout.rgb_path("/r", fields, 7) == Path("/r/ucf101/v_Archery_g01_c01/img_00007.jpg")
    assert layout.flow_path("/r", fields, 7, "v") == Path(
        "/r/ucf101/v_Archery_g01_c01/flow_y_00007.jpg"
    )
    absolute = {"path": "/data/hmdb/x", "video": "x"}
    assert layout.rgb_path("/r", absolute, 1) == Path("/data/hmdb/x/img_00001.jpg")


def test_custom_templates():
    layout = frame_layout("epic", rgb="{video}/{frame:06d}.jpg", flow="{video}/{uv}{frame}.jpg")
    assert layout.rgb_path("/r", EPIC_FIELDS, 3) == Path("/r/P08_01/000003.jpg")
    assert layout.flow_path("/r", EPIC_FIELDS, 3, "u") == Path("/r/P08_01/u3.jpg")


def test_invalid_templates():
    with pytest.raises(ValueError, match=r"must contain \{frame\}"):
        FrameLayout(rgb="rgb/{video}.jpg", flow="flow/{uv}/{frame}.jpg")
    with pytest.raises(ValueError, match=r"must contain \{uv\} or \{xy\}"):
        FrameLayout(rgb="{frame}.jpg", flow="{frame}.jpg")
    with pytest.raises(ValueError, match="neither a layout name"):
        frame_layout("epic", rgb="mmsad")
    with pytest.raises(ValueError, match=r"uses \{path\}, which this benchmark's segments"):
        LAYOUTS["ta3n"].rgb_path("/r", EPIC_FIELDS, 1)
    with pytest.raises(ValueError, match="has no frames"):
        frame_layout("synthetic-epic")
