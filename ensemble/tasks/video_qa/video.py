"""Video input: a video is a sequence of frames; read one and sample ``K`` frames uniformly.

Sources: an encoded video file (mp4, webm, mkv, mov, avi … decoded by PyAV), an animated GIF, a
single image (a one-frame video), a folder of image files (frames in name order), raw bytes of any of
these (Serve uploads), or an array of frames. The result is one float tensor ``[K, 3, H, W]`` in
``[0, 1]``: what the video scorers take.

Sampling is uniform over the whole video: frame ``i`` of ``K`` is the middle frame of the ``i``-th of
``K`` equal segments, so a 2-frame clip gives its first and last frame for ``K >= 2`` and a video
shorter than ``K`` frames gives all its frames. Frames are counted before anything is decoded, and a
video over the caps (:class:`VideoLimits`: frame count, resolution, file size) is refused with an
error naming the cap, before it is decoded.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".ppm", ".tif", ".tiff")
"""Still images: a one-frame video (a folder of them: one frame per file)."""
GIF_SUFFIXES = (".gif",)
VIDEO_SUFFIXES = (".mp4", ".webm", ".mkv", ".mov", ".avi", ".m4v", ".mpg", ".mpeg", ".ogv")
"""Containers decoded with PyAV."""


class VideoError(ValueError):
    """A video that cannot be used: unreadable, empty, or over a cap. The message says which and why."""


@dataclass(frozen=True)
class VideoLimits:
    """Caps checked before decoding (a Serve upload cannot make the server decode a huge video)."""

    max_frames: int = 20_000
    """Most frames a video may have (about 11 min at 30 fps)."""
    max_side: int = 4096
    """Largest width or height in pixels."""
    max_bytes: int = 512 * 2**20
    """Largest encoded size in bytes (file or upload)."""

    def __post_init__(self) -> None:
        if min(self.max_frames, self.max_side, self.max_bytes) < 1:
            raise ValueError(f"VideoLimits must be positive, got {self}")

    def check_size(self, width: int, height: int, what: str) -> None:
        """Refuse frames over :attr:`max_side`."""
        if max(width, height) > self.max_side:
            raise VideoError(f"{what}: resolution {width}x{height} exceeds the cap of {self.max_side} px per side")

    def check_count(self, n: int, what: str) -> None:
        """Refuse an empty video or one over :attr:`max_frames`."""
        if n < 1:
            raise VideoError(f"{what}: the video has no frames")
        if n > self.max_frames:
            raise VideoError(f"{what}: the video's frames exceed the cap of {self.max_frames} frames (counted {n})")


DEFAULT_LIMITS = VideoLimits()


def uniform_indices(n: int, k: int) -> list[int]:
    """Indices of ``min(n, k)`` frames spread uniformly over ``n``: the middle of each of ``k`` segments."""
    if n < 1 or k < 1:
        raise ValueError(f"need n >= 1 frames and k >= 1 samples, got n={n}, k={k}")
    if n <= k:
        return list(range(n))
    return [min(n - 1, (2 * i + 1) * n // (2 * k)) for i in range(k)]


def read_video(source: str | Path | bytes | np.ndarray | Sequence[Any], k: int = 8,
               limits: VideoLimits = DEFAULT_LIMITS, kind: str | None = None) -> Any:
    """``K`` frames of a video, sampled uniformly, as a float tensor ``[K, 3, H, W]`` in ``[0, 1]``.

    Args:
        source: a path (video file, GIF, image, or folder of images), the bytes of one such file, or
            frames: an array ``[T, H, W, 3]`` uint8 / a list of ``[H, W, 3]`` arrays.
        k: frames to sample (fewer if the video is shorter).
        limits: frame-count, resolution and size caps.
        kind: for bytes: ``"video"``, ``"gif"`` or ``"image"`` (``None``: sniffed from the bytes).

    Raises:
        VideoError: unreadable, empty, or over a cap.
    """
    if k < 1:
        raise ValueError(f"k={k} must be at least 1")
    if isinstance(source, bytes | bytearray):
        frames = _read_bytes(bytes(source), k, limits, kind)
    elif isinstance(source, str | Path):
        frames = _read_path(Path(source), k, limits)
    else:
        frames = _from_frames(source, k, limits)
    return to_tensor(frames)


def to_tensor(frames: Sequence[np.ndarray]) -> Any:
    """``[H, W, 3]`` uint8 frames (resized to the first one's size if they differ) → ``[K, 3, H, W]`` in [0, 1]."""
    import torch

    first = frames[0].shape[:2]
    out = []
    for f in frames:
        if f.shape[:2] != first:
            from PIL import Image

            f = np.asarray(Image.fromarray(f).resize((first[1], first[0]), Image.BILINEAR))
        out.append(f)
    arr = np.stack(out).astype(np.float32) / 255.0
    return torch.from_numpy(arr).permute(0, 3, 1, 2).contiguous()


def _rgb(image: Any) -> np.ndarray:
    """A PIL image as ``[H, W, 3]`` uint8."""
    return np.asarray(image.convert("RGB"), dtype=np.uint8)


def _from_frames(frames: Any, k: int, limits: VideoLimits) -> list[np.ndarray]:
    arr = [np.asarray(f) for f in frames]
    limits.check_count(len(arr), "frames")
    for f in arr:
        if f.ndim != 3 or f.shape[-1] != 3:
            raise VideoError(f"frames must be [H, W, 3] arrays, got shape {f.shape}")
        limits.check_size(f.shape[1], f.shape[0], "frames")
    return [arr[i].astype(np.uint8) if arr[i].dtype != np.uint8 else arr[i] for i in uniform_indices(len(arr), k)]


def _read_path(path: Path, k: int, limits: VideoLimits) -> list[np.ndarray]:
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        limits.check_count(len(files), f"folder {path}")
        return [_read_image(files[i], limits) for i in uniform_indices(len(files), k)]
    if not path.is_file():
        raise VideoError(f"{path}: no such file or folder")
    size = path.stat().st_size
    if size > limits.max_bytes:
        raise VideoError(f"{path}: {size} bytes exceed the cap of {limits.max_bytes} bytes")
    if size == 0:
        raise VideoError(f"{path}: the file is empty")
    suffix = path.suffix.lower()
    if suffix in GIF_SUFFIXES:
        return _read_gif(path, k, limits, str(path))
    if suffix in IMAGE_SUFFIXES:
        return [_read_image(path, limits)]
    if suffix in VIDEO_SUFFIXES:
        return _read_av(str(path), k, limits, str(path))
    raise VideoError(f"{path}: unknown video type {suffix!r}; use a video ({', '.join(VIDEO_SUFFIXES)}), "
                     f"a GIF, an image ({', '.join(IMAGE_SUFFIXES)}) or a folder of images")


def _read_bytes(data: bytes, k: int, limits: VideoLimits, kind: str | None) -> list[np.ndarray]:
    if not data:
        raise VideoError("upload: the video is empty (0 bytes)")
    if len(data) > limits.max_bytes:
        raise VideoError(f"upload: {len(data)} bytes exceed the cap of {limits.max_bytes} bytes")
    kind = kind or sniff(data)
    if kind == "gif":
        return _read_gif(io.BytesIO(data), k, limits, "upload")
    if kind == "image":
        return [_read_image(io.BytesIO(data), limits, "upload")]
    if kind == "video":
        return _read_av(io.BytesIO(data), k, limits, "upload")
    raise ValueError(f"kind={kind!r} must be 'video', 'gif', 'image' or None")


def sniff(data: bytes) -> str:
    """``"gif"``, ``"image"`` or ``"video"`` from a file's first bytes (anything unrecognised: video)."""
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    if data[:8] == b"\x89PNG\r\n\x1a\n" or data[:3] == b"\xff\xd8\xff" or data[:2] == b"BM" or (
            data[:4] == b"RIFF" and data[8:12] == b"WEBP"):
        return "image"
    return "video"


def _read_image(source: Any, limits: VideoLimits, what: str | None = None) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    what = what or str(source)
    try:
        with Image.open(source) as image:
            limits.check_size(*image.size, what)
            return _rgb(image)
    except (UnidentifiedImageError, OSError) as err:
        raise VideoError(f"{what}: not a readable image ({err})") from None


def _read_gif(source: Any, k: int, limits: VideoLimits, what: str) -> list[np.ndarray]:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(source) as image:
            limits.check_size(*image.size, what)
            n = int(getattr(image, "n_frames", 1))
            limits.check_count(n, what)
            frames = []
            for i in uniform_indices(n, k):
                image.seek(i)
                frames.append(_rgb(image))
            return frames
    except (UnidentifiedImageError, OSError, EOFError) as err:
        raise VideoError(f"{what}: not a readable GIF ({err})") from None


def _read_av(source: Any, k: int, limits: VideoLimits, what: str) -> list[np.ndarray]:
    """Count the frames by demuxing (no decoding), check the caps, then decode only up to the last wanted."""
    import av

    try:
        with av.open(source) as container:
            if not container.streams.video:
                raise VideoError(f"{what}: the file has no video stream")
            stream = container.streams.video[0]
            limits.check_size(stream.codec_context.width, stream.codec_context.height, what)
            n = 0
            for packet in container.demux(stream):
                n += packet.size > 0
                if n > limits.max_frames:
                    break
            limits.check_count(n, what)
            wanted = uniform_indices(n, k)
            container.seek(0, stream=stream)
            frames, index, want = [], 0, set(wanted)
            for frame in container.decode(stream):
                if index in want:
                    frames.append(frame.to_ndarray(format="rgb24"))
                index += 1
                if index > wanted[-1]:
                    break
    except VideoError:
        raise
    except (av.error.FFmpegError, OSError, ValueError) as err:
        raise VideoError(f"{what}: not a readable video ({err})") from None
    if not frames:
        raise VideoError(f"{what}: the video has no decodable frames")
    return frames


def encode_video(frames: Sequence[np.ndarray], path: str | Path | None = None, fps: int = 4,
                 codec: str = "mpeg4") -> bytes:
    """Encode ``[H, W, 3]`` uint8 frames (even sides) as an mp4 (PyAV); writes ``path`` if given, returns the bytes.

    Used to hand rendered clips to ``ensemble run video_qa --video`` and by the tests.
    """
    import av

    buf = io.BytesIO()
    with av.open(buf, mode="w", format="mp4") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.height, stream.width = frames[0].shape[:2]
        stream.pix_fmt = "yuv420p"
        for f in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(f, dtype=np.uint8), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    data = buf.getvalue()
    if path is not None:
        Path(path).write_bytes(data)
    return data
