"""Goals given as photos: read a photo (file or upload), check it against the cameras, fit it to the renders.

A photo goal is ``{camera: RGB image of the desired arrangement}``. It may come from a file
(``ensemble run robot --goal-image``) or a Serve upload (``goal_image_base64``) at any resolution; the
layout scorers and the locator compare it with the world model's renders pixel for pixel, so it is
resized to the camera's render size before planning starts.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np

from ensemble.contracts import ContextError

MAX_PHOTO_BYTES = 4 * 2**20
"""Largest photo file (encoded bytes)."""
MAX_PHOTO_SIDE = 2048
"""Largest width or height of a photo."""


def read_photo(data: bytes, max_bytes: int = MAX_PHOTO_BYTES, max_side: int = MAX_PHOTO_SIDE) -> np.ndarray:
    """An encoded image (PNG, JPEG, GIF, WebP, BMP, …) as an ``(H, W, 3)`` uint8 array.

    Raises:
        ValueError: empty, too large, not an image, or larger than ``max_side`` pixels on a side (the
            size is read from the header, before the pixels are decoded).
    """
    from PIL import Image, UnidentifiedImageError

    if not data:
        raise ValueError("the goal photo is empty")
    if len(data) > max_bytes:
        raise ValueError(f"the goal photo has {len(data)} bytes; at most {max_bytes} are accepted")
    try:
        with Image.open(io.BytesIO(data)) as img:
            if max(img.size) > max_side:
                raise ValueError(f"the goal photo is {img.size[0]}x{img.size[1]} px; at most {max_side} px a side")
            return np.asarray(img.convert("RGB"), dtype=np.uint8)
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as err:
        raise ValueError(f"the goal photo is not a readable image ({type(err).__name__})") from None


def fit_goal_photos(photos: dict[str, Any], world_model: Any) -> dict[str, np.ndarray]:
    """The photos, each checked against the world model's cameras and resized to that camera's renders.

    Args:
        photos: camera name -> RGB image (any size).
        world_model: has ``cameras`` and, for resizing, ``calibration()`` with each camera's width/height.

    Raises:
        ContextError: a camera the world model does not render, or an image that is not ``(H, W, 3)``.
    """
    from PIL import Image

    cameras = tuple(getattr(world_model, "cameras", ()) or ())
    try:
        calibration = world_model.calibration()
    except NotImplementedError:
        calibration = {}
    fitted = {}
    for camera, photo in photos.items():
        if cameras and camera not in cameras:
            raise ContextError(f"goal photo camera {camera!r} is not one of this system's cameras: {', '.join(cameras)}")
        image = np.asarray(photo)
        if image.ndim != 3 or image.shape[2] != 3 or image.size == 0:
            raise ContextError(f"the goal photo of {camera!r} has shape {image.shape}; an (H, W, 3) RGB image is needed")
        image = np.clip(image, 0, 255).astype(np.uint8)
        size = calibration.get(camera)
        if size and (image.shape[1], image.shape[0]) != (int(size["width"]), int(size["height"])):
            resized = Image.fromarray(image).resize((int(size["width"]), int(size["height"])), Image.BILINEAR)
            image = np.asarray(resized, dtype=np.uint8)
        fitted[camera] = image
    return fitted
