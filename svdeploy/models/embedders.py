"""Conditioning embedders with no weights (sgm ``ConcatTimestepEmbedderND``)."""

from __future__ import annotations

from mindspore import Tensor

from .layers import timestep_embedding


def embed_time_ids(time_ids: Tensor, dim_per_id: int) -> Tensor:
    """(N, k) scalars [fps_id, motion_bucket_id, cond_aug] → (N, k·dim_per_id): one sinusoidal
    embedding per scalar, concatenated in order (sgm concatenates embedders 1, 2 and 4)."""
    n, k = time_ids.shape
    emb = timestep_embedding(time_ids.reshape(-1), dim_per_id)  # (N·k, dim)
    return emb.reshape(n, k * dim_per_id)
