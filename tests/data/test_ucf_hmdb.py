from __future__ import annotations

from pathlib import Path

import pytest

from cmcl.data import ucf_hmdb
from cmcl.data.benchmarks import UCF_HMDB_CLASSES

TA3N = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "ucf_hmdb_ta3n"

# TA3N's UCF-HMDB_full benchmark: which UCF-101 class folders make up each of the 12 classes.
UCF_FOLDERS = {
    "RockClimbingIndoor": "climb",
    "RopeClimbing": "climb",
    "Fencing": "fencing",
    "GolfSwing": "golf",
    "SoccerPenalty": "kick_ball",
    "PullUps": "pullup",
    "Punch": "punch",
    "BoxingPunchingBag": "punch",
    "BoxingSpeedBag": "punch",
    "PushUps": "pushup",
    "Biking": "ride_bike",
    "HorseRiding": "ride_horse",
    "Basketball": "shoot_ball",
    "Archery": "shoot_bow",
    "WalkingWithDog": "walk",
}


def test_real_class_maps_give_the_12_class_benchmark():
    maps = ucf_hmdb.read_class_maps(TA3N)
    assert maps.class_names == UCF_HMDB_CLASSES
    assert len(maps.class_names) == 12
    named = {folder: maps.class_names[i] for folder, i in maps.folders["U"].items()}
    assert named == UCF_FOLDERS
    # HMDB-51 folders carry the benchmark's own names.
    assert {f: maps.class_names[i] for f, i in maps.folders["H"].items()} == {
        name: name for name in UCF_HMDB_CLASSES
    }
    assert maps.class_of_ucf_video("v_RopeClimbing_g01_c02") == UCF_HMDB_CLASSES.index("climb")
    assert maps.class_of_ucf_video("some/dir/v_BoxingSpeedBag_g25_c04") == 5


def test_full_class_lists_parse():
    assert len(ucf_hmdb.read_class_names(TA3N / "ucf101_splits__class_list_full.txt")) == 101
    hmdb = ucf_hmdb.read_class_names(TA3N / "hmdb51_splits__class_list_full.txt")
    assert len(hmdb) == 51
    assert hmdb[41] == "somersault"  # written with trailing spaces


def test_tabs_spaces_and_crlf(tmp_path):
    path = tmp_path / "map.txt"
    path.write_bytes(b"1 Fencing\t\t\r\n\r\n0   RopeClimbing \t\r\n  2\tGolf   \n")
    assert ucf_hmdb.read_index_file(path) == [(1, "Fencing"), (0, "RopeClimbing"), (2, "Golf")]
    assert ucf_hmdb.read_class_names(path) == ("RopeClimbing", "Fencing", "Golf")


def test_bad_class_files(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_text("0 climb\n2 golf\n")
    with pytest.raises(ValueError, match=r"bad\.txt: class indices must be 0\.\.1, got \[0, 2\]"):
        ucf_hmdb.read_class_names(path)
    path.write_text("0 two words\n")
    with pytest.raises(ValueError, match=r"bad\.txt:1: expected 'index name'"):
        ucf_hmdb.read_index_file(path)
    path.write_text("12 Walking\n")
    with pytest.raises(ValueError, match=r"maps to class 12, valid: 0\.\.11"):
        ucf_hmdb.read_folder_map(path, 12)
    maps = ucf_hmdb.read_class_maps(TA3N)
    with pytest.raises(KeyError, match="'YoYo' is not a U class folder"):
        maps.class_of_folder("U", "YoYo")


def test_list_file(tmp_path):
    path = tmp_path / "list_ucf101_train_hmdb_ucf-feature.txt"
    path.write_bytes(b"ucf/v_Archery_g01_c01 165 10\r\n\r\n/abs/v_Fencing_g02_c01\t90\t1 \n")
    entries = ucf_hmdb.read_list_file(path, 12)
    assert entries == [
        ucf_hmdb.VideoEntry("ucf/v_Archery_g01_c01", 165, 10),
        ucf_hmdb.VideoEntry("/abs/v_Fencing_g02_c01", 90, 1),
    ]
    assert ucf_hmdb.list_file_path(tmp_path, "U", "train") == path
    val = tmp_path / "list_hmdb51_val_hmdb_ucf-feature.txt"
    val.write_text("hmdb/x 10 0\n")
    assert ucf_hmdb.list_file_path(tmp_path, "H", "test") == val
    with pytest.raises(FileNotFoundError, match="no list file for U test"):
        ucf_hmdb.list_file_path(tmp_path, "U", "test")


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("a 10", "expected 'path num_frames label'"),
        ("a ten 1", "num_frames and label must be integers"),
        ("a 0 1", "num_frames must be >= 1"),
        ("a 10 12", r"label must be in 0\.\.11, got 12"),
    ],
)
def test_bad_list_lines(tmp_path, line, message):
    path = tmp_path / "list.txt"
    path.write_text(f"ok 5 0\n{line}\n")
    with pytest.raises(ValueError, match=rf"list\.txt:2: {message}"):
        ucf_hmdb.read_list_file(path, 12)
