"""Image loading and the two conditioning branches (docs/NUMERICS.md §2).

Input images of any common kind become float32 RGB in [0, 1] at the exported size:

- EXIF orientation is applied (the picture is used the way a viewer shows it).
- Transparent images (RGBA, LA, palette with transparency) are composited on WHITE: a
  transparent background then reads as a plain white studio backdrop instead of the black
  that dropping the alpha channel would usually reveal.
- Grayscale, palette, CMYK and other modes are converted to RGB; 16-bit images keep their
  full precision (divided by 65535, never truncated to 8 bits first).
- A size other than the export's is center-cropped to the exported aspect ratio (the
  largest centered box, whole pixels: no stretching, no padding), then scaled with a
  Lanczos filter evaluated in float32, so no 8-bit rounding happens in between. An image
  that already has the exported size is not touched, which keeps parity with diffusers
  exact. (diffusers instead stretches the VAE input to H×W and gives CLIP the original.)

Both branches then read this one H×W image (as sgm's sampling script does): the CLIP branch
resizes it to 224×224 with diffusers' antialiased bicubic, the VAE branch adds the noise
augmentation. The CLIP resize is written as two small matrices (one per axis) that fold
the Gaussian blur with its reflect padding and the bicubic interpolation together.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Tuple, Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from svdeploy.errors import InputError

# the CLIP branch is shared with training (svdeploy.train.conditioning): svdeploy.numerics
from svdeploy.numerics import (  # noqa: F401
    BICUBIC_A,
    CLIP_MEAN,
    CLIP_SIZE,
    CLIP_STD,
    antialias_sigma_and_size,
    bicubic_matrix,
    blur_matrix,
    clip_pixel_values,
    gaussian_kernel,
    resize_antialiased,
    resize_axis_matrix,
)

ImageSource = Union[str, os.PathLike, Image.Image, np.ndarray]
_SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")
_ALPHA_MODES = ("RGBA", "RGBa", "LA", "La", "PA")
# Input images are refused above this many pixels, from the file's header before decoding:
# decoding and fitting take ~22 bytes per pixel (a 13000² PNG of 0.5 MB needed 6 GB). The
# default (64 M pixels, 8192²) is far above any camera photo's use here; raise it with the
# environment variable SVDEPLOY_MAX_IMAGE_PIXELS (Pillow's own bomb limit, 179 M, still applies).
MAX_IMAGE_PIXELS = 64 * 1024 * 1024
MAX_IMAGE_PIXELS_ENV = "SVDEPLOY_MAX_IMAGE_PIXELS"


# ---------------------------------------------------------------------------------------------
# Loading and colour conversion
# ---------------------------------------------------------------------------------------------
def max_image_pixels() -> int:
    """The pixel limit: SVDEPLOY_MAX_IMAGE_PIXELS if set, else MAX_IMAGE_PIXELS."""
    text = os.environ.get(MAX_IMAGE_PIXELS_ENV)
    if text is None:
        return MAX_IMAGE_PIXELS
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise InputError(f"{MAX_IMAGE_PIXELS_ENV} = {text!r}: expected a positive integer")
    return value


def check_image_size(width: int, height: int, what: str) -> None:
    """Refuse an empty image or one above the pixel limit (before it is decoded)."""
    if width < 1 or height < 1:
        raise InputError(f"{what} is {width}×{height} pixels: expected a non-empty image")
    limit = max_image_pixels()
    if width * height > limit:
        raise InputError(
            f"{what} is {width}×{height} = {width * height} pixels, above the limit "
            f"of {limit} (set {MAX_IMAGE_PIXELS_ENV} to allow more); expected a "
            "smaller image"
        )


def _check_still(image: Image.Image, what: str) -> None:
    frames = getattr(image, "n_frames", 1)
    if frames > 1:
        raise InputError(
            f"{what} holds {frames} frames (an animation or multi-page file): "
            "expected a still image; save the frame to use as PNG first"
        )


def load_image(path: Union[str, os.PathLike]) -> Image.Image:
    """Open and fully decode an image file, with EXIF orientation applied. Its size and
    frame count are checked from the header first."""
    path = Path(path)
    what = f"image {str(path)!r}"
    if not path.exists():
        raise InputError(f"{what} does not exist")
    if not path.is_file():
        raise InputError(f"{what} is not a file; expected an image file (PNG, JPEG, ...)")
    try:
        with Image.open(path) as opened:
            # Image.open reads only the header: refuse before the pixels are decoded
            check_image_size(opened.width, opened.height, what)
            _check_still(opened, what)
            opened.load()  # decode now, so truncation shows up here and not later
            image = ImageOps.exif_transpose(opened)
            image.load()
    except UnidentifiedImageError:
        raise InputError(
            f"image {str(path)!r} is not an image file Pillow can read; expected PNG, "
            "JPEG, WebP, BMP, TIFF or another Pillow format"
        ) from None
    except Image.DecompressionBombError as exc:
        raise InputError(f"image {str(path)!r} is too large to decode safely ({exc})") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise InputError(
            f"image {str(path)!r} is truncated or damaged ({exc}); expected a complete image file"
        ) from None
    return image


def _composite_on_white(rgba: np.ndarray) -> np.ndarray:
    alpha = rgba[..., 3:4]
    return rgba[..., :3] * alpha + (1.0 - alpha)


def pil_to_rgb_float(image: Image.Image) -> np.ndarray:
    """A decoded PIL image (EXIF already applied) → float32 (H, W, 3) in [0, 1]."""
    mode = image.mode
    if mode == "P":
        mode_to = "RGBA" if "transparency" in image.info else "RGB"
        return pil_to_rgb_float(image.convert(mode_to))
    if mode in _ALPHA_MODES:
        rgba = np.asarray(image.convert("RGBA"), dtype=np.float32) / 255.0
        return _composite_on_white(rgba).astype(np.float32)
    if mode in _SIXTEEN_BIT_MODES:
        # 16-bit grayscale (PNG, TIFF); Pillow hands it out as I;16* or 32-bit "I".
        gray = np.clip(np.asarray(image, dtype=np.float64) / 65535.0, 0.0, 1.0)
        return np.repeat(gray[..., None], 3, axis=-1).astype(np.float32)
    if mode == "F":
        return np.repeat(_float_gray(np.asarray(image, dtype=np.float32))[..., None], 3, axis=-1)
    if mode != "RGB":
        image = image.convert("RGB")  # L, 1, CMYK, YCbCr, LAB, HSV
    return np.asarray(image, dtype=np.float32) / np.float32(255.0)


def _float_gray(gray: np.ndarray) -> np.ndarray:
    """A float image (mode F, e.g. a float TIFF) has no agreed range: values within [0, 1] are
    read as they are, values within [0, 255] as 8-bit levels; anything else is refused."""
    if not np.all(np.isfinite(gray)):
        raise InputError(
            "float image holds NaN or Inf values: expected finite values in [0, 1] (or [0, 255])"
        )
    low, high = float(gray.min()), float(gray.max())
    if low >= 0.0 and high <= 1.0:
        return gray
    if low >= 0.0 and high <= 255.0:
        return (gray / np.float32(255.0)).astype(np.float32)
    raise InputError(
        f"float image has values in [{low:.4g}, {high:.4g}]: expected [0, 1] or [0, 255]"
    )


def array_to_rgb_float(array: np.ndarray) -> np.ndarray:
    """An (H, W), (H, W, 1|3|4) array → float32 (H, W, 3) in [0, 1].

    uint8 is read as 0..255, uint16 as 0..65535, floats must already lie in [0, 1].
    """
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3 or array.shape[-1] not in (1, 3, 4) or min(array.shape[:2]) < 1:
        raise InputError(
            f"image array of shape {array.shape}: expected (H, W), (H, W, 1), "
            "(H, W, 3) or (H, W, 4)"
        )
    check_image_size(array.shape[1], array.shape[0], "image array")
    if array.dtype == np.uint8:
        x = array.astype(np.float32) / np.float32(255.0)
    elif array.dtype == np.uint16:
        x = (array.astype(np.float64) / 65535.0).astype(np.float32)
    elif np.issubdtype(array.dtype, np.floating):
        x = array.astype(np.float32)
        if not np.all(np.isfinite(x)):
            raise InputError(
                "float image array holds NaN or Inf values: expected finite values in [0, 1]"
            )
        if x.min() < 0.0 or x.max() > 1.0:
            raise InputError(
                f"float image array has values in [{np.nanmin(x):.4g}, "
                f"{np.nanmax(x):.4g}]: expected finite values in [0, 1]"
            )
    else:
        raise InputError(
            f"image array dtype {array.dtype}: expected uint8, uint16 or float in [0, 1]"
        )
    if x.shape[-1] == 1:
        x = np.repeat(x, 3, axis=-1)
    elif x.shape[-1] == 4:
        x = _composite_on_white(x)
    return np.ascontiguousarray(x, dtype=np.float32)


def to_rgb_float(source: ImageSource) -> np.ndarray:
    """A path, PIL image or array → float32 (H, W, 3) in [0, 1] (EXIF applied for images)."""
    if isinstance(source, np.ndarray):
        return array_to_rgb_float(source)
    if isinstance(source, Image.Image):
        check_image_size(source.width, source.height, "PIL image")
        _check_still(source, "PIL image")
        try:
            source.load()
            oriented = ImageOps.exif_transpose(source)
        except (OSError, SyntaxError, ValueError) as exc:
            raise InputError(f"image {source!r} cannot be decoded ({exc})") from None
        return pil_to_rgb_float(oriented)
    if isinstance(source, (str, os.PathLike)):
        return pil_to_rgb_float(load_image(source))
    raise InputError(
        f"image of type {type(source).__name__}: expected a file path, a PIL image or a numpy array"
    )


# ---------------------------------------------------------------------------------------------
# Fitting to the exported size
# ---------------------------------------------------------------------------------------------
def center_crop_box(
    src_height: int, src_width: int, height: int, width: int
) -> Tuple[int, int, int, int]:
    """The largest centered (left, top, right, bottom) pixel box of the target aspect ratio.

    Whole pixels: the resize then sees only pixels inside the box (a fractional box would
    let the filter read the cropped-away border), at the cost of < 1 pixel of aspect error.
    """
    target_aspect = width / height
    if src_width / src_height > target_aspect:  # too wide: crop left and right
        crop_w = min(src_width, max(1, int(round(src_height * target_aspect))))
        left = (src_width - crop_w) // 2
        return (left, 0, left + crop_w, src_height)
    crop_h = min(src_height, max(1, int(round(src_width / target_aspect))))  # too tall or equal
    top = (src_height - crop_h) // 2
    return (0, top, src_width, top + crop_h)


def fit_to_size(rgb: np.ndarray, height: int, width: int) -> np.ndarray:
    """Center-crop float RGB (H', W', 3) to the target aspect and scale it to
    (height, width, 3) with Lanczos in float32; identity if the size already matches."""
    src_h, src_w = rgb.shape[:2]
    if (src_h, src_w) == (height, width):
        return rgb
    left, top, right, bottom = center_crop_box(src_h, src_w, height, width)
    cropped = rgb[top:bottom, left:right]
    channels = []
    for c in range(cropped.shape[-1]):
        plane = Image.fromarray(np.ascontiguousarray(cropped[..., c], dtype=np.float32))  # mode "F"
        channels.append(
            np.asarray(plane.resize((width, height), Image.Resampling.LANCZOS), dtype=np.float32)
        )
    # Lanczos rings slightly past the input range at hard edges.
    return np.clip(np.stack(channels, axis=-1), 0.0, 1.0)


@dataclass
class PreparedImage:
    pixels: np.ndarray  # (1, 3, H, W) float32 in [0, 1]
    source_size: Tuple[int, int]  # (height, width) of the input, after EXIF rotation
    crop_box: Optional[Tuple[int, int, int, int]]  # (left, top, right, bottom); None if untouched


def prepare_image(source: ImageSource, height: int, width: int) -> PreparedImage:
    """Load ``source`` and bring it to the exported (height, width), NCHW float32 in [0, 1]."""
    rgb = to_rgb_float(source)
    src_h, src_w = rgb.shape[:2]
    fitted = fit_to_size(rgb, height, width)
    box = (
        None if (src_h, src_w) == (height, width) else center_crop_box(src_h, src_w, height, width)
    )
    pixels = np.ascontiguousarray(fitted.transpose(2, 0, 1)[None], dtype=np.float32)
    return PreparedImage(pixels=pixels, source_size=(src_h, src_w), crop_box=box)


# ---------------------------------------------------------------------------------------------
# VAE branch
# ---------------------------------------------------------------------------------------------
def vae_encoder_input(
    pixels: np.ndarray, image_noise: np.ndarray, noise_aug_strength: float
) -> np.ndarray:
    """``2·x01 − 1 + aug·noise`` in float32, the VAE encoder's input (1, 3, H, W)."""
    if pixels.shape != image_noise.shape:
        raise InputError(
            f"image_noise has shape {tuple(image_noise.shape)}: expected "
            f"{tuple(pixels.shape)}, the shape of the image"
        )
    if not math.isfinite(noise_aug_strength):
        raise InputError(f"noise_aug_strength = {noise_aug_strength}: expected a finite number")
    signed = pixels.astype(np.float32) * np.float32(2.0) - np.float32(1.0)
    return (signed + np.float32(noise_aug_strength) * image_noise.astype(np.float32)).astype(
        np.float32
    )
