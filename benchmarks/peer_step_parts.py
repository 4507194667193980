"""Where the project's cmco step spends more than the plain-PyTorch peer's, piece by piece.

``benchmarks/peer_step.py`` times whole steps and their phases; its forward
phase (model, embeddings and the loss terms) is where the project's step is
slower. This script times the pieces of that phase one by one, each side's own
code on the same inputs: the features and fused logits of one forward pass,
as leaves that require grad (so the loss pieces record their graphs as in a
step). Interleaved, median process CPU time over the repeats, one thread.

Pieces (project code / peer code):

* model forward: ``TwoStreamModel`` on both domains / ``PeerCMCo.forward``
* embeddings: ``CrossModalContrastive._embeddings`` (z of the four groups and f of
  the four) / ``PeerCMCo.embed`` and f of the four
* modality terms: ``_modality_term`` for both domains / ``PeerCMCo.modality_terms``
* domain terms: ``_domain_terms`` (both modalities) / ``PeerCMCo.domain_terms``
  (the peer normalises the target features there too, so that piece also
  carries two normalisations the project does in its embeddings)
* bank updates: ``after_step`` / ``PeerCMCo.update_banks``
* loss log: ``LossAccumulator.add`` / the peer's stack and sum

    python benchmarks/peer_step_parts.py [--repeats 400]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from peer_step import (
    MODALITIES,
    Sizes,
    build_project,
    peer_from_project,
    random_batches,
)

from cmcl.methods.base import ADAPT, StepContext, StepResult
from cmcl.models.two_stream import StreamOutput


def pieces(sizes: Sizes) -> dict[str, tuple]:
    """name -> (project callable, peer callable), over one shared set of inputs."""
    trainer = build_project(sizes)
    peer = peer_from_project(trainer)
    method, model = trainer.method, trainer.method.model
    src, tgt = random_batches(sizes, 1)[0]
    with torch.no_grad():
        outputs = {
            "source": model(src["rgb"], src["flow"]),
            "target": model(tgt["rgb"], tgt["flow"]),
        }

    def leaf(x: torch.Tensor) -> torch.Tensor:
        return x.detach().clone().requires_grad_(True)

    outputs = {
        d: StreamOutput(
            features={k: leaf(v) for k, v in out.features.items()},
            logits={k: leaf(v) for k, v in out.logits.items()},
            fused=leaf(out.fused),
        )
        for d, out in outputs.items()
    }
    feats = {(d, k): outputs[d].features[k] for d in outputs for k in MODALITIES}
    fused_t = outputs["target"].fused
    vectors = method._embeddings(outputs)
    z = {(d, k): vectors[d][f"{k}_z"] for d, k in feats}
    new = {f"{d}_{k}_z": z[d, k].detach() for d, k in feats}
    new.update({f"source_{k}_f": vectors["source"][f"{k}_f"].detach() for k in MODALITIES})
    state = {"source_index": src["index"], "target_index": tgt["index"]}
    state.update({f"{d}_{key}": v.detach() for d in vectors for key, v in vectors[d].items()})
    result = StepResult(losses={}, weights={}, state=state)
    ctx = StepContext(stage=ADAPT, step=0, stage_steps=trainer.config.train.steps)
    names = ("total", "src_ce", "mo_source", "mo_target", "do_rgb", "do_flow")
    losses = {name: (feats["source", "rgb"].sum() * 0 + i) for i, name in enumerate(names)}
    peer_sum = [None]

    def peer_log() -> None:
        values = torch.stack(list(losses.values())).detach()
        peer_sum[0] = values if peer_sum[0] is None else peer_sum[0] + values

    def project_log() -> None:
        trainer.pending.add(losses, stage=ADAPT, step=1)
        if trainer.pending.steps >= 50:
            trainer.pending.read()

    def peer_embeddings() -> None:
        peer.embed(feats)
        for key in feats:
            F.normalize(feats[key], dim=1)

    table = {
        "model forward": (
            lambda: (model(src["rgb"], src["flow"]), model(tgt["rgb"], tgt["flow"])),
            lambda: peer.forward(src, tgt),
        ),
        "embeddings": (lambda: method._embeddings(outputs), peer_embeddings),
        "modality terms": (
            lambda: [
                method._modality_term(vectors[d], d, b["index"])
                for d, b in (("source", src), ("target", tgt))
            ],
            lambda: peer.modality_terms(z, src["index"], tgt["index"]),
        ),
        "domain terms": (
            lambda: method._domain_terms(vectors["target"], fused_t),
            lambda: peer.domain_terms(feats, fused_t),
        ),
        "bank updates": (
            lambda: method.after_step(result, ctx),
            lambda: peer.update_banks(src["index"], tgt["index"], new),
        ),
        "loss log": (project_log, peer_log),
    }
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=400)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), {args.repeats} repeats")
    print(f"{'piece':<16} {'project':>9} {'peer':>9} {'diff':>9}   (median CPU ms per step)")
    total = 0.0
    for name, (ours, theirs) in pieces(Sizes()).items():
        times: dict[str, list[float]] = {"project": [], "peer": []}
        sides = [("project", ours), ("peer", theirs)]
        for i in range(args.repeats + 10):
            for side, call in sides if i % 2 == 0 else sides[::-1]:
                start = time.process_time()
                call()
                if i >= 10:
                    times[side].append(1000.0 * (time.process_time() - start))
        a, b = statistics.median(times["project"]), statistics.median(times["peer"])
        total += a - b
        print(f"{name:<16} {a:9.3f} {b:9.3f} {a - b:+9.3f}")
    print(f"{'sum of the differences':<36} {total:+9.3f}")


if __name__ == "__main__":
    main()
