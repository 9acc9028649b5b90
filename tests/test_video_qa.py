"""Video question answering (unit tier): the frame reader on real encoded files, the video CLIP scorer,
the answer normaliser, the tabletop clips and the task's CLI on tiny models."""

from __future__ import annotations

import numpy as np
import pytest
import torch


def _clip(n: int = 12, size: int = 32) -> list[np.ndarray]:
    """``n`` frames whose red channel encodes the frame index (a bright bar moving right)."""
    frames = []
    for i in range(n):
        f = np.zeros((size, size, 3), dtype=np.uint8)
        f[..., 0] = int(255 * i / max(n - 1, 1))
        f[8:24, 2 * i: 2 * i + 6, 1] = 255
        frames.append(f)
    return frames


def test_mp4_written_and_read_back_samples_frames_uniformly(tmp_path):
    from ensemble.tasks.video_qa.video import encode_video, read_video

    path = tmp_path / "clip.mp4"
    encode_video(_clip(12), path, fps=6)
    x = read_video(path, k=4)
    assert x.shape == (4, 3, 32, 32) and x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1
    # Middles of 4 segments of 12 frames: frames 1, 4, 7, 10 → red level rises in that order.
    red = x[:, 0].mean((1, 2))
    assert torch.all(red[1:] > red[:-1])
    assert torch.allclose(red, torch.tensor([1, 4, 7, 10]) / 11, atol=0.05)
    same = read_video(path.read_bytes(), k=4)  # an upload: the same frames
    assert torch.allclose(same, x)
    assert read_video(path, k=50).shape[0] == 12  # shorter than K: every frame once


def test_gif_image_and_folder_are_videos(tmp_path):
    from PIL import Image

    from ensemble.media import gif_bytes
    from ensemble.tasks.video_qa.video import read_video

    frames = _clip(5)
    (tmp_path / "a.gif").write_bytes(gif_bytes(frames))
    x = read_video(tmp_path / "a.gif", k=2)
    assert x.shape == (2, 3, 32, 32)
    assert x[:, 0].mean((1, 2)).tolist() == pytest.approx([0.25, 0.75], abs=0.02)  # frames 1 and 3 of 5
    Image.fromarray(frames[4]).save(tmp_path / "one.png")
    one = read_video(tmp_path / "one.png", k=8)
    assert one.shape == (1, 3, 32, 32)  # a single image is a one-frame video
    folder = tmp_path / "frames"
    folder.mkdir()
    for i, f in enumerate(frames):
        Image.fromarray(f).save(folder / f"{i:03d}.png")
    assert torch.allclose(read_video(folder, k=5), read_video(np.stack(frames), k=5))


def test_unreadable_empty_and_oversized_videos_fail_clearly(tmp_path):
    from ensemble.tasks.video_qa.video import VideoError, VideoLimits, encode_video, read_video

    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"this is not a video at all" * 10)
    with pytest.raises(VideoError, match="not a readable video"):
        read_video(bad)
    (tmp_path / "empty.mp4").write_bytes(b"")
    with pytest.raises(VideoError, match="empty"):
        read_video(tmp_path / "empty.mp4")
    (tmp_path / "none").mkdir()
    with pytest.raises(VideoError, match="no frames"):
        read_video(tmp_path / "none")
    with pytest.raises(VideoError, match="no such file"):
        read_video(tmp_path / "missing.mp4")
    good = tmp_path / "good.mp4"
    encode_video(_clip(12), good)
    with pytest.raises(VideoError, match="frames exceed the cap of 10 frames"):
        read_video(good, limits=VideoLimits(max_frames=10))
    with pytest.raises(VideoError, match="32x32 exceeds the cap of 16 px"):
        read_video(good, limits=VideoLimits(max_side=16))
    with pytest.raises(VideoError, match="bytes exceed the cap"):
        read_video(good.read_bytes(), limits=VideoLimits(max_bytes=100))
