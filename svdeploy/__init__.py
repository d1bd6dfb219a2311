"""svdeploy: Stable Video Diffusion from checkpoint to static-shape graphs, and a light runtime.

Subpackages (mapped from top-level folders, see pyproject.toml):
``svdeploy.models``, ``svdeploy.kernels``, ``svdeploy.export``, ``svdeploy.runtime``,
``svdeploy.train``, ``svdeploy.benchmarks``. This package itself only holds the shared core
(config, manifest, errors, CLI) and imports neither MindSpore nor any subpackage.
"""

__version__ = "0.1.0"
