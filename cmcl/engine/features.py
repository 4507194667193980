"""The end-of-run feature dump: a bounded, seeded sample for t-SNE and retrieval plots.

Rows of ``features.parquet`` (schema in docs/results-format.md): for a sample
of source training segments and target test segments, the feature F^k as at
test time (eval mode, averaged over the test windows) and its projection
h(F^k), per modality, with the label.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import torch

from cmcl.data.base import PairData
from cmcl.models.two_stream import MODALITIES, TwoStreamModel

SAMPLES = (("source", "source_train", "train"), ("target", "target_test", "test"))


@torch.no_grad()
def dump_features(
    model: TwoStreamModel,
    data: PairData,
    path: Path,
    *,
    per_domain: int,
    seed: int,
    device: torch.device,
    autocast: contextlib.AbstractContextManager,
) -> Path:
    """Write up to ``per_domain`` segments per domain, chosen by a generator seeded with ``seed``."""
    was_training = model.training
    model.eval()
    columns: dict[str, list] = {
        k: [] for k in ("domain", "split", "segment_index", "label", "modality", "space", "vector")
    }
    for domain, split, split_name in SAMPLES:
        size = data.info.sizes[split]
        generator = torch.Generator().manual_seed(seed)
        chosen = torch.randperm(size, generator=generator)[: min(per_domain, size)].sort().values
        for batch in data.eval_batches(split, batch_size=64, windows="test", indices=chosen):
            rgb, flow = batch["rgb"].to(device), batch["flow"].to(device)
            n, w = rgb.shape[:2]
            with autocast:
                out = model(rgb.flatten(0, 1), flow.flatten(0, 1))
            labels = batch["label"].tolist()
            for modality in MODALITIES:
                features = out.features[modality].float().view(n, w, -1).mean(dim=1)
                spaces = {"feature": features, "projection": model.project(features).float()}
                for space, vectors in spaces.items():
                    rows = zip(batch["index"].tolist(), labels, vectors.cpu().numpy(), strict=True)
                    for index, label, vector in rows:
                        columns["domain"].append(domain)
                        columns["split"].append(split_name)
                        columns["segment_index"].append(index)
                        columns["label"].append(label)
                        columns["modality"].append(modality)
                        columns["space"].append(space)
                        columns["vector"].append(vector)
    model.train(was_training)
    table = pa.table(
        {
            **{k: columns[k] for k in ("domain", "split", "modality", "space")},
            "segment_index": pa.array(columns["segment_index"], pa.int64()),
            "label": pa.array(columns["label"], pa.int32()),
            "vector": pa.array(columns["vector"], pa.list_(pa.float32())),
        }
    )
    tmp = path.with_name(path.name + ".tmp")
    pq.write_table(table, tmp)
    tmp.replace(path)
    return path
