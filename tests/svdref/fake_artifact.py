"""A fake SVD artifact for runtime tests: the exact graph contract (names, shapes, float32)
with toy functions (pooling, 1×1 channel mixes, softsign, nearest upsampling, mixing over frames
inside a decode chunk). Each function exists three times: NumPy (the reference), a MindSpore
cell exported to MINDIR, and an ONNX graph built with onnx.helper."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Dict, Optional

import numpy as np

from svdeploy.manifest import Manifest, sha256_file, write_manifest
from svdeploy.runtime import VideoPipeline
from svdref.torch_backend import contract_graph_entries

H = W = 16
F, C, LH, LW = 5, 4, 8, 8
D = 8  # context dim
K = 2  # decode chunk: chunks of 2, 2 and a tail of 1
B = 2  # CFG
STEPS = 3
DEFAULTS = {
    "fps": 7,
    "motion_bucket_id": 127,
    "noise_aug_strength": 0.02,
    "min_guidance_scale": 1.0,
    "max_guidance_scale": 3.0,
    "num_inference_steps": STEPS,
}
TIME_ID_SCALE = np.array([0.1, 0.01, 1.0], np.float32)


def fake_weights() -> Dict[str, np.ndarray]:
    rng = np.random.default_rng(1234)

    def draw(*shape: int, scale: float = 0.5) -> np.ndarray:
        return (scale * rng.standard_normal(shape)).astype(np.float32)

    return {
        "img": draw(147, D),
        "enc": draw(3, C),
        "unet": draw(2 * C, C),
        "noise": draw(C),
        "ctx": draw(D, C),
        "tid": draw(3, C),
        "dec": draw(C, 3),
    }


WEIGHTS = fake_weights()


# ---------------------------------------------------------------------------------------------
# NumPy reference of the fake graphs
# ---------------------------------------------------------------------------------------------
def softsign(x: np.ndarray) -> np.ndarray:
    # x / (1 + |x|): bounded like tanh but built from exact IEEE operations in every backend
    # (MindSpore's CPU tanh is an approximation, off by ~1e-4)
    return x / (1.0 + np.abs(x))


def np_image_encoder(pixel_values: np.ndarray) -> np.ndarray:
    pooled = pixel_values.reshape(1, 3, 7, 32, 7, 32).mean(axis=(3, 5)).reshape(1, 147)
    return softsign(pooled @ WEIGHTS["img"]).reshape(1, 1, D).astype(np.float32)


def _channel_mix(x: np.ndarray, weight: np.ndarray) -> np.ndarray:
    return np.einsum("nchw,cd->ndhw", x, weight)


def np_vae_encoder(image: np.ndarray) -> np.ndarray:
    pooled = image.reshape(1, 3, LH, 2, LW, 2).mean(axis=(3, 5))
    return _channel_mix(pooled, WEIGHTS["enc"]).astype(np.float32)


def np_unet(
    sample: np.ndarray, c_noise: np.ndarray, context: np.ndarray, time_ids: np.ndarray
) -> np.ndarray:
    batch = context.shape[0]  # 2 with CFG, 1 without
    y = _channel_mix(sample, WEIGHTS["unet"]).reshape(batch, F, C, LH, LW)
    cond = context.reshape(batch, D) @ WEIGHTS["ctx"] + (time_ids * TIME_ID_SCALE) @ WEIGHTS["tid"]
    y = y + cond[:, None, :, None, None] + c_noise[0] * WEIGHTS["noise"][None, None, :, None, None]
    return softsign(y).reshape(batch * F, C, LH, LW).astype(np.float32)


def np_vae_decoder(z: np.ndarray) -> np.ndarray:
    y = _channel_mix(z, WEIGHTS["dec"]) * 0.5
    y = y + 0.3 * y.mean(axis=0, keepdims=True)  # frames mix inside one chunk
    y = 1.6 * softsign(y)  # unclipped, partly outside [-1, 1]
    return np.repeat(np.repeat(y, 2, axis=2), 2, axis=3).astype(np.float32)


NUMPY_GRAPHS = {
    "image_encoder": lambda x: {"image_embeds": np_image_encoder(x["pixel_values"])},
    "vae_encoder": lambda x: {"latent": np_vae_encoder(x["image"])},
    "unet": lambda x: {"v": np_unet(x["sample"], x["c_noise"], x["context"], x["time_ids"])},
    "vae_decoder": lambda x: {"frames": np_vae_decoder(x["z"])},
    "vae_decoder_tail": lambda x: {"frames": np_vae_decoder(x["z"])},
}


# ---------------------------------------------------------------------------------------------
# MindSpore cells → MINDIR
# ---------------------------------------------------------------------------------------------
def export_mindir(directory: Path) -> None:
    import mindspore as ms
    from mindspore import nn, ops

    def const(name: str) -> ms.Tensor:
        return ms.Tensor(WEIGHTS[name])

    def softsign(x):
        return x / (1.0 + ops.abs(x))

    def channel_mix(x, weight):
        return ops.transpose(ops.matmul(ops.transpose(x, (0, 2, 3, 1)), weight), (0, 3, 1, 2))

    class ImageEncoder(nn.Cell):
        def construct(self, pixel_values):
            pooled = ops.mean(ops.reshape(pixel_values, (1, 3, 7, 32, 7, 32)), (3, 5))
            return ops.reshape(
                softsign(ops.matmul(ops.reshape(pooled, (1, 147)), const("img"))), (1, 1, D)
            )

    class VaeEncoder(nn.Cell):
        def construct(self, image):
            pooled = ops.mean(ops.reshape(image, (1, 3, LH, 2, LW, 2)), (3, 5))
            return channel_mix(pooled, const("enc"))

    class Unet(nn.Cell):
        def construct(self, sample, c_noise, context, time_ids):
            y = ops.reshape(channel_mix(sample, const("unet")), (B, F, C, LH, LW))
            cond = ops.matmul(ops.reshape(context, (B, D)), const("ctx")) + ops.matmul(
                time_ids * ms.Tensor(TIME_ID_SCALE), const("tid")
            )
            y = (
                y
                + ops.reshape(cond, (B, 1, C, 1, 1))
                + c_noise * ops.reshape(const("noise"), (1, 1, C, 1, 1))
            )
            return ops.reshape(softsign(y), (B * F, C, LH, LW))

    class VaeDecoder(nn.Cell):
        def construct(self, z):
            k = z.shape[0]
            y = channel_mix(z, const("dec")) * 0.5
            y = y + 0.3 * ops.mean(y, 0, True)
            y = 1.6 * softsign(y)
            y = ops.broadcast_to(ops.reshape(y, (k, 3, LH, 1, LW, 1)), (k, 3, LH, 2, LW, 2))
            return ops.reshape(y, (k, 3, H, W))

    def example(*shape: int) -> ms.Tensor:
        return ms.Tensor(np.zeros(shape, np.float32))

    cells = {
        "image_encoder": (ImageEncoder(), [example(1, 3, 224, 224)]),
        "vae_encoder": (VaeEncoder(), [example(1, 3, H, W)]),
        "unet": (
            Unet(),
            [example(B * F, 2 * C, LH, LW), example(1), example(B, 1, D), example(B, 3)],
        ),
        "vae_decoder": (VaeDecoder(), [example(K, C, LH, LW)]),
        "vae_decoder_tail": (VaeDecoder(), [example(F % K, C, LH, LW)]),
    }
    for name, (cell, inputs) in cells.items():
        ms.export(cell, *inputs, file_name=str(directory / name), file_format="MINDIR")


# ---------------------------------------------------------------------------------------------
# ONNX graphs with onnx.helper
# ---------------------------------------------------------------------------------------------
def export_onnx(directory: Path) -> None:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    def build(name: str, inputs, outputs, nodes, constants: Dict[str, np.ndarray]) -> None:
        initializers = [numpy_helper.from_array(np.asarray(v), k) for k, v in constants.items()]
        graph = helper.make_graph(
            nodes,
            name,
            [helper.make_tensor_value_info(n, TensorProto.FLOAT, list(s)) for n, s in inputs],
            [helper.make_tensor_value_info(n, TensorProto.FLOAT, list(s)) for n, s in outputs],
            initializer=initializers,
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        onnx.checker.check_model(model)
        onnx.save(model, str(directory / f"{name}.onnx"))

    def shape(*dims: int) -> np.ndarray:
        return np.array(dims, np.int64)

    def node(op: str, inputs, output: str, **attrs) -> "onnx.NodeProto":
        return helper.make_node(op, list(inputs), [output], **attrs)

    def softsign(x: str, out: str):
        return [
            node("Abs", [x], f"{out}_abs"),
            node("Add", [f"{out}_abs", "one"], f"{out}_den"),
            node("Div", [x, f"{out}_den"], out),
        ]

    def channel_mix(x: str, weight: str, out: str, tag: str):
        return [
            node("Transpose", [x], f"{tag}_nhwc", perm=[0, 2, 3, 1]),
            node("MatMul", [f"{tag}_nhwc", weight], f"{tag}_mixed"),
            node("Transpose", [f"{tag}_mixed"], out, perm=[0, 3, 1, 2]),
        ]

    build(
        "image_encoder",
        [("pixel_values", (1, 3, 224, 224))],
        [("image_embeds", (1, 1, D))],
        [
            node("Reshape", ["pixel_values", "s_blocks"], "blocks"),
            node("ReduceMean", ["blocks"], "pooled", axes=[3, 5], keepdims=0),
            node("Reshape", ["pooled", "s_flat"], "flat"),
            node("MatMul", ["flat", "w_img"], "proj"),
            *softsign("proj", "act"),
            node("Reshape", ["act", "s_out"], "image_embeds"),
        ],
        {
            "s_blocks": shape(1, 3, 7, 32, 7, 32),
            "s_flat": shape(1, 147),
            "s_out": shape(1, 1, D),
            "w_img": WEIGHTS["img"],
            "one": np.float32(1.0),
        },
    )

    build(
        "vae_encoder",
        [("image", (1, 3, H, W))],
        [("latent", (1, C, LH, LW))],
        [
            node("Reshape", ["image", "s_blocks"], "blocks"),
            node("ReduceMean", ["blocks"], "pooled", axes=[3, 5], keepdims=0),
            *channel_mix("pooled", "w_enc", "latent", "enc"),
        ],
        {"s_blocks": shape(1, 3, LH, 2, LW, 2), "w_enc": WEIGHTS["enc"]},
    )

    build(
        "unet",
        [
            ("sample", (B * F, 2 * C, LH, LW)),
            ("c_noise", (1,)),
            ("context", (B, 1, D)),
            ("time_ids", (B, 3)),
        ],
        [("v", (B * F, C, LH, LW))],
        [
            *channel_mix("sample", "w_unet", "mixed", "unet"),
            node("Reshape", ["mixed", "s_video"], "video"),
            node("Reshape", ["context", "s_ctx"], "ctx_flat"),
            node("MatMul", ["ctx_flat", "w_ctx"], "ctx_term"),
            node("Mul", ["time_ids", "tid_scale"], "tid_scaled"),
            node("MatMul", ["tid_scaled", "w_tid"], "tid_term"),
            node("Add", ["ctx_term", "tid_term"], "cond"),
            node("Reshape", ["cond", "s_cond"], "cond_b"),
            node("Mul", ["c_noise", "w_noise"], "noise_term"),
            node("Add", ["video", "cond_b"], "with_cond"),
            node("Add", ["with_cond", "noise_term"], "pre"),
            *softsign("pre", "act"),
            node("Reshape", ["act", "s_out"], "v"),
        ],
        {
            "w_unet": WEIGHTS["unet"],
            "s_video": shape(B, F, C, LH, LW),
            "s_ctx": shape(B, D),
            "w_ctx": WEIGHTS["ctx"],
            "tid_scale": TIME_ID_SCALE,
            "w_tid": WEIGHTS["tid"],
            "s_cond": shape(B, 1, C, 1, 1),
            "w_noise": WEIGHTS["noise"].reshape(1, 1, C, 1, 1),
            "s_out": shape(B * F, C, LH, LW),
            "one": np.float32(1.0),
        },
    )

    for name, k in (("vae_decoder", K), ("vae_decoder_tail", F % K)):
        build(
            name,
            [("z", (k, C, LH, LW))],
            [("frames", (k, 3, H, W))],
            [
                *channel_mix("z", "w_dec", "mixed", "dec"),
                node("Mul", ["mixed", "c_02"], "y"),
                node("ReduceMean", ["y"], "y_mean", axes=[0], keepdims=1),
                node("Mul", ["y_mean", "c_03"], "y_mix"),
                node("Add", ["y", "y_mix"], "y2"),
                *softsign("y2", "y3"),
                node("Mul", ["y3", "c_12"], "y4"),
                node("Reshape", ["y4", "s_cells"], "cells"),
                node("Expand", ["cells", "s_up"], "up"),
                node("Reshape", ["up", "s_out"], "frames"),
            ],
            {
                "w_dec": WEIGHTS["dec"],
                "c_02": np.float32(0.5),
                "c_03": np.float32(0.3),
                "c_12": np.float32(1.6),
                "one": np.float32(1.0),
                "s_cells": shape(k, 3, LH, 1, LW, 1),
                "s_up": shape(k, 3, LH, 2, LW, 2),
                "s_out": shape(k, 3, H, W),
            },
        )


# ---------------------------------------------------------------------------------------------
# The artifact
# ---------------------------------------------------------------------------------------------
def fake_manifest(directory: Path, formats=("mindir", "onnx")) -> Manifest:
    graphs = []
    for fmt in formats:
        for entry in contract_graph_entries(H, W, F, C, LH, LW, D, B, K, fmt=fmt):
            entry.sha256 = sha256_file(directory / entry.file)
            entry.parity_max_rel_error = 0.0
            graphs.append(entry)
    return Manifest(
        variant="fake",
        height=H,
        width=W,
        num_frames=F,
        latent_shape=(F, C, LH, LW),
        cfg=True,
        guidance_batch=B,
        decode_chunk_size=K,
        scheduler={"sigma_min": 0.002, "sigma_max": 700.0, "rho": 7.0, "scaling_factor": 0.18215},
        defaults=dict(DEFAULTS),
        graphs=graphs,
        toolkit_version="test",
    )


def build_fake_artifact(directory: Path) -> Path:
    """Write the fake artifact (MINDIR + ONNX graphs, manifest with hashes) into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    export_mindir(directory)
    export_onnx(directory)
    write_manifest(fake_manifest(directory), directory)
    return directory


def copy_artifact(source: Path, target: Path, formats=("mindir", "onnx")) -> Path:
    shutil.copytree(source, target)
    if tuple(formats) != ("mindir", "onnx"):
        write_manifest(fake_manifest(target, formats), target)
    return target


def numpy_manifest(cfg: bool = True, defaults: Optional[dict] = None) -> Manifest:
    """The fake artifact's manifest without files, for pipelines over NUMPY_GRAPHS."""
    batch = 2 if cfg else 1
    graphs = contract_graph_entries(H, W, F, C, LH, LW, D, batch, K, fmt="onnx")
    return Manifest(
        variant="fake",
        height=H,
        width=W,
        num_frames=F,
        latent_shape=(F, C, LH, LW),
        cfg=cfg,
        guidance_batch=batch,
        decode_chunk_size=K,
        scheduler={"sigma_min": 0.002, "sigma_max": 700.0, "rho": 7.0, "scaling_factor": 0.18215},
        defaults=dict(DEFAULTS if defaults is None else defaults),
        graphs=graphs,
    )


def numpy_pipeline(
    cfg: bool = True, defaults: Optional[dict] = None, **graph_overrides
) -> VideoPipeline:
    """A VideoPipeline over the NumPy versions of the fake graphs (dependency injection)."""
    return VideoPipeline(
        numpy_manifest(cfg, defaults), dict(NUMPY_GRAPHS, **graph_overrides), backend="numpy"
    )
