"""The latent model behind the synthetic benchmarks (see :mod:`cmcl.data.synthetic`).

Each segment is generated as follows; every vector lives in a latent space
of ``latent_dim`` coordinates, lengths are in units of ``segment_std``:

1. action code ``a = mu[y] + segment_std * e``, ``mu[y]`` the prototype of
   class ``y``; window ``k`` sees ``a_k = a + window_std * e_k``;
2. scene ``b``: with probability ``background_prob`` the scene that this
   domain associates with class ``y`` (prototype ``S[pi_d(y)]`` through the
   domain's own permutation ``pi_d``), else a fresh scene tied to no class;
   plus ``background_std`` jitter. No two domains give a class the same
   scene, so inside a domain the scene predicts the class and across domains
   it points to a wrong one (fencing filmed in a stadium here, at home there);
3. RGB window feature ``= f_rgb(a_k + b + o_rgb[d])``;
4. flow window feature ``= f_flow(P a_k + flow_noise * e' + o_flow[d])``,
   ``P`` the projection onto a fixed random ``flow_rank``-dimensional
   subspace (flow sees a lower-rank view of the action), ``e'`` noise of the
   segment, and a domain offset much shorter than RGB's; no scene.

``f_rgb`` and ``f_flow`` are fixed random two-layer maps shared by all
domains, ending in the mean of a rectified Gaussian (a smooth ReLU): like I3D
features, which are spatio-temporal averages of post-ReLU activations, the
outputs are non-negative, skewed and mostly small.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from scipy.special import ndtr


@dataclass(frozen=True)
class SyntheticParams:
    """Generator parameters; the defaults are the frozen, calibrated values.

    Lengths and distances are in units of ``segment_std`` along one latent
    direction, so ``class_separation / segment_std`` is the d' of two classes'
    action codes. Calibrated once with source_only and supervised_target only
    (benchmarks/calibrate_synthetic.py; benchmarks/RESULTS.md, "Synthetic
    benchmark calibration"); do not tune them for any adaptation method.

    Attributes:
        feature_dim: 1024. D of a window feature (I3D Mixed_5c after pooling).
        windows: 5. K windows stored per segment, in every split (the SPEC's test windows).
        latent_dim: 64. Coordinates of the latent space of action codes, scenes and offsets.
        hidden_dim: 256. Width of the hidden layer of the two fixed random feature maps.
        class_separation: 4.0. Distance between two class prototypes (action d' = 4).
        segment_std: 1.0. Per-coordinate std of a segment's action code around its
            prototype: the unit of every other length.
        window_std: 0.3. Per-coordinate std of a window's action code around its segment's.
        background_separation: 5.0. Distance between two scene prototypes: a scene is a
            stronger, cleaner cue than the action (scene d' = 5).
        background_std: 1.0. Per-coordinate std of a segment's scene around its prototype.
        background_prob: 0.8. Probability a segment is filmed in the scene its domain gives
            its class (otherwise in a fresh scene tied to no class).
        rgb_domain_shift: 2.0. Length of each domain's offset of the RGB latent.
        flow_domain_shift: 0.5. Length of each domain's offset of the flow latent.
        flow_rank: 24. Action-code directions flow sees (a fixed random subspace of the
            latent), which shortens class distances by sqrt(24 / 64).
        flow_noise: 0.5. Per-coordinate std of the segment-level noise in flow's latent.
        activation_softness: 0.5. Spread of the rectified Gaussian at the maps' output
            (the smoothness of their ReLU).
        activation_bias: -0.5. Mean pre-activation of the output layer (negative: most
            features small, a few large, like pooled I3D activations).
    """

    feature_dim: int = 1024
    windows: int = 5
    latent_dim: int = 64
    hidden_dim: int = 256
    class_separation: float = 4.0
    segment_std: float = 1.0
    window_std: float = 0.3
    background_separation: float = 5.0
    background_std: float = 1.0
    background_prob: float = 0.8
    rgb_domain_shift: float = 2.0
    flow_domain_shift: float = 0.5
    flow_rank: int = 24
    flow_noise: float = 0.5
    activation_softness: float = 0.5
    activation_bias: float = -0.5

    def __post_init__(self) -> None:
        for name in ("feature_dim", "windows", "latent_dim", "hidden_dim", "flow_rank"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.flow_rank > self.latent_dim:
            raise ValueError(
                f"flow_rank must be <= latent_dim={self.latent_dim}, got {self.flow_rank}"
            )
        if not 0.0 <= self.background_prob <= 1.0:
            raise ValueError(f"background_prob must be in [0, 1], got {self.background_prob}")
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if isinstance(value, float) and field.name != "activation_bias" and value < 0:
                raise ValueError(f"{field.name} must be >= 0, got {value}")
        if self.activation_softness <= 0:
            raise ValueError(f"activation_softness must be > 0, got {self.activation_softness}")

    def replace(self, **changes: float | int) -> SyntheticParams:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, float | int]:
        return dataclasses.asdict(self)


class _FeatureMap(NamedTuple):
    """A fixed random map latent -> I3D-like feature: Linear-ReLU-Linear-smooth ReLU."""

    w1: np.ndarray
    b1: np.ndarray
    w2: np.ndarray
    b2: np.ndarray
    softness: float

    def __call__(self, latent: np.ndarray) -> np.ndarray:
        """Shape: (..., latent_dim) -> (..., feature_dim), float32, non-negative."""
        # 2-D products: numpy's stacked (3-D) matmul does not use BLAS and is 10x slower.
        flat = latent.reshape(-1, latent.shape[-1]).astype(np.float32)
        hidden = np.maximum(flat @ self.w1 + self.b1, 0.0)
        # Clipped so that exp() never produces float32 denormals (slow, and 0 to 30 digits).
        z = np.maximum((hidden @ self.w2 + self.b2) / self.softness, -12.0)
        # E[max(z + s*n, 0)] for n ~ N(0, 1): the mean of a rectified Gaussian, the way an
        # average over many post-ReLU positions behaves (I3D features are such averages).
        density = np.exp(-0.5 * z * z) * np.float32(1.0 / np.sqrt(2.0 * np.pi))
        out = np.maximum(self.softness * (density + z * ndtr(z)), 0.0)
        return out.reshape(*latent.shape[:-1], -1)


class World(NamedTuple):
    """Everything shared by the splits of one (params, seed): prototypes, scenes, maps."""

    prototypes: np.ndarray
    scenes: np.ndarray
    scene_of: dict[str, np.ndarray]
    rgb_offset: dict[str, np.ndarray]
    flow_offset: dict[str, np.ndarray]
    flow_basis: np.ndarray
    rgb_map: _FeatureMap
    flow_map: _FeatureMap


def rng_for(seed: int, *stream: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, *stream]))


def _feature_map(
    rng: np.random.Generator, params: SyntheticParams, input_std: float
) -> _FeatureMap:
    latent, hidden, dim = params.latent_dim, params.hidden_dim, params.feature_dim
    # Scaled so that hidden pre-activations have unit variance whatever the latent scales.
    w1 = rng.normal(scale=1.0 / (input_std * np.sqrt(latent)), size=(latent, hidden))
    b1 = rng.normal(scale=0.5, size=hidden)
    w2 = rng.normal(scale=np.sqrt(2.0 / hidden), size=(hidden, dim))
    b2 = params.activation_bias + rng.normal(scale=0.25, size=dim)
    f32 = np.float32
    return _FeatureMap(
        w1.astype(f32), b1.astype(f32), w2.astype(f32), b2.astype(f32), params.activation_softness
    )


def _scene_permutations(
    rng: np.random.Generator, domains: tuple[str, ...], num_classes: int
) -> dict[str, np.ndarray]:
    """One class->scene permutation per domain, no class sharing a scene across any two domains."""
    chosen: list[np.ndarray] = []
    for _ in domains:
        while True:
            perm = rng.permutation(num_classes)
            if all((perm != other).all() for other in chosen):
                chosen.append(perm)
                break
    return dict(zip(domains, chosen, strict=True))


def _directions(rng: np.random.Generator, count: int, dim: int, norm: float) -> np.ndarray:
    """``count`` random vectors of length ``norm`` (nearly orthogonal, so about ``norm * sqrt(2)`` apart)."""
    vectors = rng.normal(size=(count, dim))
    return norm * vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def make_world(
    params: SyntheticParams, seed: int, domains: tuple[str, ...], num_classes: int
) -> World:
    rng = rng_for(seed, 0)
    p, latent = params, params.latent_dim
    root2 = np.sqrt(2.0)
    prototypes = _directions(rng, num_classes, latent, p.class_separation / root2)
    scenes = _directions(rng, num_classes, latent, p.background_separation / root2)
    scene_of = _scene_permutations(rng, domains, num_classes)
    rgb_shift = _directions(rng, len(domains), latent, p.rgb_domain_shift)
    flow_shift = _directions(rng, len(domains), latent, p.flow_domain_shift)
    flow_basis, _ = np.linalg.qr(rng.normal(size=(latent, p.flow_rank)))
    # Per-coordinate variance of each map's input, so that the maps see unit-scale inputs.
    action_var = (p.class_separation**2 / 2) / latent + p.segment_std**2 + p.window_std**2
    rgb_var = (
        action_var
        + (p.background_separation**2 / 2) / latent
        + p.background_std**2
        + p.rgb_domain_shift**2 / latent
    )
    flow_var = action_var * p.flow_rank / latent + p.flow_noise**2 + p.flow_domain_shift**2 / latent
    return World(
        prototypes=prototypes,
        scenes=scenes,
        scene_of=scene_of,
        rgb_offset=dict(zip(domains, rgb_shift, strict=True)),
        flow_offset=dict(zip(domains, flow_shift, strict=True)),
        flow_basis=flow_basis,
        rgb_map=_feature_map(rng, params, float(np.sqrt(rgb_var))),
        flow_map=_feature_map(rng, params, float(np.sqrt(flow_var))),
    )


class Split(NamedTuple):
    """Labels (N,) and per-window RGB and flow arrays (N, K, ...) of one (domain, split)."""

    labels: np.ndarray
    rgb: np.ndarray
    flow: np.ndarray


def sample_split(
    world: World, params: SyntheticParams, rng: np.random.Generator, domain: str, counts
) -> Split:
    """Segments of one (domain, split). Shape: labels (N,), rgb and flow (N, K, D)."""
    latents = sample_latents(world, params, rng, domain, counts)
    return Split(latents.labels, world.rgb_map(latents.rgb), world.flow_map(latents.flow))


def sample_latents(
    world: World, params: SyntheticParams, rng: np.random.Generator, domain: str, counts
) -> Split:
    """The maps' inputs. Shape: labels (N,), rgb and flow (N, K, latent_dim)."""
    p = params
    n, k, latent = sum(counts), p.windows, p.latent_dim
    labels = rng.permutation(np.repeat(np.arange(len(counts)), counts))
    action = world.prototypes[labels] + rng.normal(scale=p.segment_std, size=(n, latent))
    windows = action[:, None, :] + rng.normal(scale=p.window_std, size=(n, k, latent))
    # A segment outside its class's scene is filmed in a fresh scene, drawn like the scene
    # prototypes, so that nothing but the class association tells the two kinds apart.
    in_scene = rng.random(n) < p.background_prob
    fresh = _directions(rng, n, latent, p.background_separation / np.sqrt(2.0))
    scene = np.where(in_scene[:, None], world.scenes[world.scene_of[domain][labels]], fresh)
    scene = scene + rng.normal(scale=p.background_std, size=(n, latent))
    flow_noise = rng.normal(scale=p.flow_noise, size=(n, 1, latent))
    basis = world.flow_basis
    rgb_latent = windows + scene[:, None, :] + world.rgb_offset[domain]
    projected = (windows.reshape(n * k, latent) @ basis) @ basis.T
    flow_latent = projected.reshape(n, k, latent) + flow_noise + world.flow_offset[domain]
    return Split(labels, rgb_latent, flow_latent)
