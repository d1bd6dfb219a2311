"""Which implementation each op uses: an explicit argument handed to every network.

The defaults are MindSpore's own kernels. Graph export for ONNX needs other variants because
MindSpore's ONNX exporter has no GroupNorm, Erf or PadV3 and writes wrong pads for convolutions
with non-uniform padding (measured with MindSpore 2.10.0); ``KernelConfig.onnx()`` picks
variants that export. Every variant has a NumPy reference and a parity test (tests/test_kernels.py).

The policy (which variants each use of a network gets) lives here too, as one named constructor
per use, each saying why: ``reference()`` (the exact sgm computation), ``for_validation()`` (what
svd-export checks written graphs against), ``for_export(fmt, target, conv, compute_dtype)`` (the
variants traced into a graph), ``for_training(conv, compute_dtype)`` (svd-train's graphs) and
``frozen_encoder()`` (svd-train's forward-only VAE encoder).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

GroupNormKind = Literal["native", "decomposed", "layernorm"]
GeluKind = Literal["erf", "poly", "onnx_erf"]
AttentionKind = Literal["bmm", "bmm_grad", "ascend_fa"]
TemporalConvKind = Literal["conv3d", "conv2d", "matmul", "unfold", "im2col"]
PadKind = Literal["pad", "concat"]
ConvKind = Literal["native", "im2col"]
ComputeDtype = Literal["fp32", "fp16", "bf16"]

GROUP_NORM_KINDS = ("native", "decomposed", "layernorm")
GELU_KINDS = ("erf", "poly", "onnx_erf")
ATTENTION_KINDS = ("bmm", "bmm_grad", "ascend_fa")
TEMPORAL_CONV_KINDS = ("conv3d", "conv2d", "matmul", "unfold", "im2col")
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
                 poly        erf by Abramowitz–Stegun 7.1.26 (|error| ≤ 1.5e-6 in float32),
                             exports anywhere
                 onnx_erf    export-only: traces erf as ONNX ``Acos`` (which MindSpore exports);
                             the ONNX post-pass renames every Acos node to Erf. The in-memory
                             cell is NOT numerically GELU; use only for tracing an ONNX graph.
    attention:   bmm         batched matmul → softmax (float32) → batched matmul
                 bmm_grad    the same forward with a hand-written backward (kernels.attention.
                             Attention): no transposes of the score gradient, and the softmax
                             backward reduces over the head dim, not the keys. svd-train uses it.
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
                 im2col      the k frames each output frame reads, shifted and concatenated on
                             channels, + one 1×1 convolution (the temporal counterpart of
                             ``conv = "im2col"``; ``conv`` itself picks the spatial kernels only)
    pad:         pad         ops.pad for the VAE encoder's asymmetric downsampling pad
                 concat      zeros concatenated (exports to ONNX)
    conv:        native      MindSpore's Conv2D for the spatial (k×k) convolutions
                 im2col      k×k convolutions as MindSpore's Im2Col (ops.unfold) + one 1×1
                             convolution (a GEMM). Temporal convolutions follow
                             ``temporal_conv`` alone. Which is faster depends
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
        for name, allowed in (
            ("group_norm", GROUP_NORM_KINDS),
            ("gelu", GELU_KINDS),
            ("attention", ATTENTION_KINDS),
            ("temporal_conv", TEMPORAL_CONV_KINDS),
            ("pad", PAD_KINDS),
            ("conv", CONV_KINDS),
            ("compute_dtype", COMPUTE_DTYPES),
        ):
            value = getattr(self, name)
            if value not in allowed:
                raise ValueError(
                    f"KernelConfig.{name} = {value!r}: expected one of {', '.join(allowed)}"
                )

    # ---- the policy: one named constructor per use -----------------------------------------
    @classmethod
    def reference(cls) -> "KernelConfig":
        """MindSpore's own kernels, the exact sgm computation."""
        return cls()

    @classmethod
    def for_validation(cls) -> "KernelConfig":
        """The float32 network every exported graph is checked against: MindSpore's own kernels,
        the exact sgm computation (tests/test_network_parity.py checks it against diffusers),
        except that the (k,1,1) temporal convolution is computed as a GEMM: MindSpore's CPU
        Conv3D for that shape runs at ~0.4 GFLOP/s, which made validating a mid-size VAE decoder
        take minutes (and a full-size one hours). Both forms agree to 2e-7
        (tests/test_kernels.py)."""
        return cls.reference().with_(temporal_conv="matmul")

    @classmethod
    def onnx(cls, compute_dtype: ComputeDtype = "fp32") -> "KernelConfig":
        """Variants that MindSpore's ONNX exporter can write."""
        return cls(
            group_norm="layernorm",
            gelu="onnx_erf",
            single_token_cross_attention=True,
            temporal_conv="conv2d",
            pad="concat",
            compute_dtype=compute_dtype,
        )

    @classmethod
    def for_export(
        cls, fmt: str, target: str, conv: str = "native", compute_dtype: str = "fp32"
    ) -> "KernelConfig":
        """The op variants traced into a graph of format ``fmt`` (onnx, lite, mindir) for
        ``target`` (cpu, ascend); ``conv`` is the spatial convolution kernel of CPU MindIR graphs
        (resolved: native or im2col)."""
        if fmt in ("onnx", "lite"):
            # lite graphs are converted from plain ONNX, so they trace the ONNX variants
            return cls.onnx(compute_dtype)  # type: ignore[arg-type]
        if target == "ascend":
            # Ascend's converter fuses attention / norms itself; keep MindSpore's own ops.
            return cls(single_token_cross_attention=True, compute_dtype=compute_dtype)  # type: ignore[arg-type]
        # MindSpore on CPU: LayerNorm-based GroupNorm is its fast path, the (k,1,1) temporal
        # convolution runs as one GEMM (its Conv3D kernel is ~0.4 GFLOP/s there); the spatial
        # convolution kernel is the export's choice (``conv`` above says which CPUs favour which)
        return cls(
            group_norm="layernorm",
            single_token_cross_attention=True,
            temporal_conv="matmul",
            conv=conv,  # type: ignore[arg-type]
            compute_dtype=compute_dtype,
        )  # type: ignore[arg-type]

    @classmethod
    def for_training(cls, conv: str = "im2col", compute_dtype: str = "fp32") -> "KernelConfig":
        """The op variants of svd-train's graphs. Softmax over SVD's single context token is
        exactly 1, so q/k of the cross-attention get exactly zero gradient either way; skipping
        them is exact and cheaper. Spatial convolutions: ``conv``, resolved (native or im2col;
        svd-train's ``training_kernels`` times both for ``auto``, as svd-export does; on AVX-512
        EPYCs MindSpore's native 3×3 Conv2D and its gradient ran at 0.5 GFLOP/s, the Im2Col form
        at 18–24). The (k,1,1) temporal convolutions run as one GEMM (MindSpore's CPU Conv3D for
        them is ~0.4 GFLOP/s) in the unfold form, whose gradient avoids the per-tap time slices
        that took 0.18 s of a 1.2 s demo U-Net step (MindSpore 2.10, 2-core EPYC). The VAE
        encoder's asymmetric pad is a concatenation of zeros: MindSpore 2.10's CPU PadV3 kernel
        (ops.pad) spun forever inside its constant-mode loop at the 34th training step of the
        autoencoder stage, every run (batch 1 or 2, any data)."""
        return cls(
            attention="bmm_grad",
            single_token_cross_attention=True,
            temporal_conv="unfold",
            pad="concat",
            conv=conv,
            compute_dtype=compute_dtype,
        )  # type: ignore[arg-type]

    def frozen_encoder(self) -> "KernelConfig":
        """svd-train's frozen VAE encoder (forward only), from the training variants: float32,
        the LayerNorm form of GroupNorm and the concatenated pad ran this encoder 25 % faster
        than the native kernels (MindSpore 2.10 CPU, 64×64 frames)."""
        return self.with_(compute_dtype="fp32", group_norm="layernorm", pad="concat")

    def with_(self, **changes: object) -> "KernelConfig":
        return replace(self, **changes)  # type: ignore[arg-type]
