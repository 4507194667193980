"""UCF <-> HMDB annotations: TA3N's list files and class maps (UCF-HMDB_full, split 1).

Class maps (shared/data/ucf_hmdb_ta3n) have one ``index name`` pair a line:

    classInd_hmdb_ucf.txt                    the 12 benchmark classes
    ucf101_splits__class_list_hmdb_ucf.txt   UCF-101 class folder -> benchmark index
                                             (several folders share one index)
    hmdb51_splits__class_list_hmdb_ucf.txt   HMDB-51 class folder -> benchmark index
    *_class_list_full.txt                    the full 101 / 51 class lists

The files mix tabs, runs of spaces, trailing blanks and CRLF line ends, so a
line is split on any whitespace after stripping it.

A list file has one video a line, ``path num_frames label``: the frame folder
(absolute, or relative to the frames root), its number of RGB frames (numbered
from 1) and the benchmark class index. Domains: U = UCF-101, H = HMDB-51; the
``test`` split is TA3N's ``val`` list.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

DOMAIN_DATASETS = {"U": "ucf101", "H": "hmdb51"}
SPLIT_NAMES = {"train": ("train",), "test": ("val", "test")}
CLASS_INDEX_FILE = "classInd_hmdb_ucf.txt"
FOLDER_MAP_FILES = {
    "U": "ucf101_splits__class_list_hmdb_ucf.txt",
    "H": "hmdb51_splits__class_list_hmdb_ucf.txt",
}


def read_index_file(path: str | Path) -> list[tuple[int, str]]:
    """(index, name) pairs of a class-map file, in file order; blank lines are skipped."""
    path = Path(path)
    pairs: list[tuple[int, str]] = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 2 or not fields[0].lstrip("-").isdigit():
            raise ValueError(f"{path}:{number}: expected 'index name', got {line.strip()!r}")
        pairs.append((int(fields[0]), fields[1]))
    return pairs


def read_class_names(path: str | Path) -> tuple[str, ...]:
    """Class names ordered by index; the indices must be exactly 0..C-1."""
    pairs = read_index_file(path)
    indices = sorted(i for i, _ in pairs)
    if indices != list(range(len(pairs))):
        raise ValueError(f"{path}: class indices must be 0..{len(pairs) - 1}, got {indices}")
    return tuple(name for _, name in sorted(pairs))


def read_folder_map(path: str | Path, num_classes: int) -> dict[str, int]:
    """Dataset class folder (e.g. ``RopeClimbing``) -> benchmark class index."""
    mapping: dict[str, int] = {}
    for index, folder in read_index_file(path):
        if not 0 <= index < num_classes:
            raise ValueError(
                f"{path}: folder {folder!r} maps to class {index}, valid: 0..{num_classes - 1}"
            )
        if folder in mapping and mapping[folder] != index:
            raise ValueError(
                f"{path}: folder {folder!r} maps to both {mapping[folder]} and {index}"
            )
        mapping[folder] = index
    return mapping


@dataclass(frozen=True)
class ClassMaps:
    """The 12 benchmark classes and each dataset's folder -> class map."""

    class_names: tuple[str, ...]
    folders: dict[str, dict[str, int]]
    """Per domain (U, H): class folder -> benchmark class index."""

    def class_of_folder(self, domain: str, folder: str) -> int:
        try:
            return self.folders[domain][folder]
        except KeyError:
            valid = ", ".join(sorted(self.folders.get(domain, {})))
            raise KeyError(
                f"{folder!r} is not a {domain} class folder of the benchmark; valid: {valid}"
            ) from None

    def class_of_ucf_video(self, name: str) -> int:
        """UCF-101 video names are ``v_{Folder}_gXX_cYY``: their benchmark class."""
        parts = Path(name).name.split("_")
        if len(parts) < 4 or parts[0] != "v":
            raise ValueError(f"{name!r} is not a UCF-101 video name (v_Folder_gXX_cYY)")
        return self.class_of_folder("U", "_".join(parts[1:-2]))


def read_class_maps(directory: str | Path) -> ClassMaps:
    """The class maps of a TA3N directory (shared/data/ucf_hmdb_ta3n)."""
    directory = Path(directory)
    names = read_class_names(directory / CLASS_INDEX_FILE)
    folders = {
        domain: read_folder_map(directory / file, len(names))
        for domain, file in FOLDER_MAP_FILES.items()
    }
    return ClassMaps(class_names=names, folders=folders)


@dataclass(frozen=True)
class VideoEntry:
    """One line of a TA3N list file."""

    path: str
    num_frames: int
    label: int


def read_list_file(path: str | Path, num_classes: int | None = None) -> list[VideoEntry]:
    """Parse ``path num_frames label`` lines (paths without spaces; blank lines skipped)."""
    path = Path(path)
    entries = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        where = f"{path}:{number}"
        if len(fields) != 3:
            raise ValueError(f"{where}: expected 'path num_frames label', got {line.strip()!r}")
        try:
            frames, label = int(fields[1]), int(fields[2])
        except ValueError:
            raise ValueError(
                f"{where}: num_frames and label must be integers, got {line.strip()!r}"
            ) from None
        if frames < 1:
            raise ValueError(f"{where}: num_frames must be >= 1, got {frames}")
        if label < 0 or (num_classes is not None and label >= num_classes):
            top = "" if num_classes is None else f"..{num_classes - 1}"
            raise ValueError(f"{where}: label must be in 0{top}, got {label}")
        entries.append(VideoEntry(path=fields[0], num_frames=frames, label=label))
    if not entries:
        raise ValueError(f"{path}: list file is empty")
    return entries


def list_file_path(directory: str | Path, domain: str, split: str) -> Path:
    """The list file of (domain, split): ``list_{ucf101|hmdb51}_{train|val}*.txt`` in ``directory``."""
    if domain not in DOMAIN_DATASETS:
        raise ValueError(f"unknown UCF/HMDB domain {domain!r}; valid: {', '.join(DOMAIN_DATASETS)}")
    if split not in SPLIT_NAMES:
        raise ValueError(f"unknown split {split!r}; valid: {', '.join(SPLIT_NAMES)}")
    directory = Path(directory)
    dataset = DOMAIN_DATASETS[domain]
    for name in SPLIT_NAMES[split]:
        found = sorted(directory.glob(f"list_{dataset}_{name}*.txt"))
        if len(found) == 1:
            return found[0]
        if len(found) > 1:
            raise ValueError(
                f"{directory}: several list files for {domain} {split}: {[f.name for f in found]}"
            )
    patterns = " or ".join(f"list_{dataset}_{n}*.txt" for n in SPLIT_NAMES[split])
    raise FileNotFoundError(f"{directory}: no list file for {domain} {split} ({patterns})")
