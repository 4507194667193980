"""cmcl: cross-modal contrastive video domain adaptation on Ray.

The method of Kim et al. (ICCV 2021) with the paper's baselines, a
plain-PyTorch trainer (:mod:`cmcl.engine`), Ray Train / Ray Tune adapters
(:mod:`cmcl.ray`, the only place that imports ray), study definitions
(:mod:`cmcl.study`) and reports (:mod:`cmcl.report`).
"""

__version__ = "0.1.0"
