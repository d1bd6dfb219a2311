"""svdeploy.runtime: run an exported SVD artifact with NumPy and one graph backend.

Imports only numpy, Pillow, tqdm and svdeploy's config/manifest/errors; the backend library
(onnxruntime, mindspore or mindspore_lite) is imported when a backend is chosen, PyAV when an
mp4 is written. No model, export, training or kernel code is loaded.
"""

from .backends import (
    BACKEND_FORMATS,
    BACKEND_PREFERENCE,
    BACKENDS,
    PRECISIONS,
    CheckedGraph,
    LoadedArtifact,
    choose_backend,
    load_artifact,
    resolve_precision,
    runnable_format,
)
from .guidance import apply_guidance, guidance_scales, split_guidance_batch
from .lite import lite_importable, resolve_lite_python
from .pipeline import GenerationResult, SamplingParams, VideoPipeline, resolve_sampling_params
from .preprocess import (
    CLIP_MEAN,
    CLIP_STD,
    center_crop_box,
    clip_pixel_values,
    fit_to_size,
    load_image,
    prepare_image,
    resize_antialiased,
    to_rgb_float,
    vae_encoder_input,
)
from .run import run_to_file
from .schedule import (
    Preconditioning,
    denoised_from_v,
    edm_preconditioning,
    euler_step,
    initial_noise_scale,
    karras_sigmas,
)
from .video import frames_to_uint8, output_kind, save_frames, sidecar_path

__all__ = [
    "BACKEND_FORMATS",
    "BACKEND_PREFERENCE",
    "BACKENDS",
    "CheckedGraph",
    "LoadedArtifact",
    "choose_backend",
    "load_artifact",
    "PRECISIONS",
    "resolve_precision",
    "runnable_format",
    "lite_importable",
    "resolve_lite_python",
    "apply_guidance",
    "guidance_scales",
    "split_guidance_batch",
    "GenerationResult",
    "SamplingParams",
    "VideoPipeline",
    "resolve_sampling_params",
    "CLIP_MEAN",
    "CLIP_STD",
    "center_crop_box",
    "clip_pixel_values",
    "fit_to_size",
    "load_image",
    "prepare_image",
    "resize_antialiased",
    "to_rgb_float",
    "vae_encoder_input",
    "Preconditioning",
    "denoised_from_v",
    "edm_preconditioning",
    "euler_step",
    "initial_noise_scale",
    "karras_sigmas",
    "frames_to_uint8",
    "output_kind",
    "save_frames",
    "sidecar_path",
    "run_to_file",
]
