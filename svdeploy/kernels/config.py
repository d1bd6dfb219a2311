"""Which implementation each op uses: an explicit argument handed to every network.

The defaults are MindSpore's own kernels. Graph export for ONNX needs other variants because
MindSpore's ONNX exporter has no GroupNorm, Erf or PadV3 and writes wrong pads for convolutions
with non-uniform padding (measured with MindSpore 2.10.0); ``KernelConfig.onnx()`` picks
variants that export. Every variant has a NumPy reference and a parity test (tests/test_kernels.py).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

GroupNormKind = Literal["native", "decomposed", "layernorm"]
GeluKind = Literal["erf", "poly", "onnx_erf"]
AttentionKind = Literal["bmm", "ascend_fa"]
TemporalConvKind = Literal["conv3d", "conv2d", "matmul", "unfold"]
PadKind = Literal["pad", "concat"]
ConvKind = Literal["native", "im2col"]
ComputeDtype = Literal["fp32", "fp16", "bf16"]

GROUP_NORM_KINDS = ("native", "decomposed", "layernorm")
GELU_KINDS = ("erf", "poly", "onnx_erf")
ATTENTION_KINDS = ("bmm", "ascend_fa")
TEMPORAL_CONV_KINDS = ("conv3d", "conv2d", "matmul", "unfold")
PAD_KINDS = ("pad", "concat")
CONV_KINDS = ("native", "im2col")
COMPUTE_DTYPES = ("fp32", "fp16", "bf16")


@dataclass(frozen=True)
class KernelConfig:
    """Op variants and the compute precision of matmul / conv work.

    group_norm:  native      mindspore.ops.group_norm
                 decomposed  reshape + mean / variance (exports to ONNX as primitive ops)
                 layernorm   reshape to (N, G, ·) + LayerNorm without affine, then the
                             per-channel affine (exports; one fused op per norm)
    gelu:        erf         exact GELU with MindSpore's erf (SVD's GEGLU and ViT-H use exact GELU)
                 poly        erf by Abramowitz–Stegun 7.1.26 (|error| ≤ 1.5e-6 in float32), exports anywhere
                 onnx_erf    export-only: traces erf as ONNX ``Acos`` (which MindSpore exports);
                             the ONNX post-pass renames every Acos node to Erf. The in-memory
                             cell is NOT numerically GELU; use only for tracing an ONNX graph.
    attention:   bmm         batched matmul → softmax (float32) → batched matmul
                 ascend_fa   MindSpore's FlashAttentionScore (Ascend only; cannot run on CPU)
    single_token_cross_attention:
                 SVD's cross-attention context is one token; softmax over one key is exactly
                 1, so attention(q, k, v) = v and to_q / to_k are skipped. Exact, not approximate.
    temporal_conv: conv3d    Conv3d with a (k,1,1) kernel
                 conv2d      the same as Conv2d (k,1) over (C, T, H·W) with zero frames
                             concatenated in time (exports to ONNX)
                 matmul      the k taps as one (k·O, C) GEMM over all frames' pixels, each
                             tap's output shifted in time and summed. MindSpore 2.10's CPU
                             kernels run a (k,1,1) Conv3D (or (k,1) Conv2D) at ~0.4 GFLOP/s;
                             this is 7–40× faster there, so MindIR CPU graphs use it.
                 unfold      MindSpore's Im2Col with a (k,1) window over (C, T, H·W) + one GEMM
                             with the (O, C·k) weight: no per-tap time slices, which MindSpore's
                             CPU StridedSlice runs slowly (training: (4,64,8,256) forward+backward
                             11 ms against 37 ms for matmul). svd-train uses it.
    pad:         pad         ops.pad for the VAE encoder's asymmetric downsampling pad
                 concat      zeros concatenated (exports to ONNX)
    conv:        native      MindSpore's Conv2D / Conv3D
                 im2col      k×k convolutions as MindSpore's Im2Col (ops.unfold) + one 1×1
                             convolution (a GEMM); k×1 temporal ones as shifted frames
                             concatenated on channels + a 1×1 convolution. Which is faster depends
                             on the CPU: on AVX-512 EPYCs (family 25 and 26) MindSpore 2.10's 3×3
                             kernel ran at 0.6–1.2 GFLOP/s and this variant 8–25× faster; on an
                             AVX2-only EPYC the native kernel ran at 30–55 GFLOP/s and this
                             variant was 3–18× slower, compiled 2–3× longer and held k² copies of
                             each activation. ``svd-export --conv auto`` measures it
                             (``svdeploy.kernels.probe``).
    compute_dtype: precision of matmul and convolution inputs; norms, softmax and residual
                 sums stay float32.
    """

    group_norm: GroupNormKind = "native"
    gelu: GeluKind = "erf"
    attention: AttentionKind = "bmm"
    single_token_cross_attention: bool = False
    temporal_conv: TemporalConvKind = "conv3d"
    pad: PadKind = "pad"
    conv: ConvKind = "native"
    compute_dtype: ComputeDtype = "fp32"

    def __post_init__(self) -> None:
        for name, allowed in (("group_norm", GROUP_NORM_KINDS), ("gelu", GELU_KINDS),
                              ("attention", ATTENTION_KINDS),
                              ("temporal_conv", TEMPORAL_CONV_KINDS), ("pad", PAD_KINDS),
                              ("conv", CONV_KINDS),
                              ("compute_dtype", COMPUTE_DTYPES)):
            value = getattr(self, name)
            if value not in allowed:
                raise ValueError(f"KernelConfig.{name} = {value!r}: expected one of "
                                 f"{', '.join(allowed)}")

    @classmethod
    def reference(cls) -> "KernelConfig":
        """MindSpore's own kernels, the exact sgm computation."""
        return cls()

    @classmethod
    def mindir(cls, compute_dtype: ComputeDtype = "fp32") -> "KernelConfig":
        """Fast MindIR graphs: the exact single-token shortcut, temporal convolutions as GEMMs,
        native kernels elsewhere."""
        return cls(single_token_cross_attention=True, temporal_conv="matmul",
                   compute_dtype=compute_dtype)

    @classmethod
    def onnx(cls, compute_dtype: ComputeDtype = "fp32") -> "KernelConfig":
        """Variants that MindSpore's ONNX exporter can write."""
        return cls(group_norm="layernorm", gelu="onnx_erf", single_token_cross_attention=True,
                   temporal_conv="conv2d", pad="concat", compute_dtype=compute_dtype)

    def with_(self, **changes: object) -> "KernelConfig":
        return replace(self, **changes)
