"""Training dataset (svdeploy.train.data): labels CSV, clip sampling, skips, resumable order."""

from __future__ import annotations

import json
import logging
from typing import List, Sequence

import numpy as np
import pytest

from svdeploy.config import from_dict, to_dict
from svdeploy.errors import ConfigError, InputError
from svdeploy.train import data
from svdeploy.train.data import (
    Sample,
    VideoDataset,
    VideoDatasetConfig,
    cover_size,
    draw_start,
    read_frames,
    read_labels,
    resize_cover_crop,
    to_model_range,
)
from svdeploy.train.motion import VideoTooShortError
from svdref.videos import INDEX_VIDEOS, decode_index, make_dataset, write_labels

HEIGHT, WIDTH = 24, 40


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("train_videos"))


def _config(synthetic, **changes) -> VideoDatasetConfig:
    options = dict(
        data_dir=str(synthetic.root),
        metadata=str(synthetic.csv_path),
        frames=4,
        step=5,
        height=HEIGHT,
        width=WIDTH,
        seed=3,
    )
    options.update(changes)
    return VideoDatasetConfig(**options)


def _epoch(dataset: VideoDataset) -> List[Sample]:
    return list(dataset)


def _indices(sample: Sample) -> List[int]:
    return [decode_index(float(frame.mean())) for frame in sample.frames]


# ---- config ---------------------------------------------------------------------------------
def test_config_uses_the_seed_names_and_defaults():
    cfg = from_dict(
        VideoDatasetConfig,
        {"data_dir": "d", "metadata": "d/videos.csv", "frames": 4, "step": 5, "default_fps": 6},
        "train.dataset",
    )
    assert (cfg.frames, cfg.step, cfg.default_fps) == (4, 5, 6.0)
    assert VideoDatasetConfig().frames == 4 and VideoDatasetConfig().step == 5  # svd_train.yaml
    assert cfg.clip_span == 16
    assert from_dict(VideoDatasetConfig, to_dict(cfg)) == cfg


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"frames": 0}, "dataset.frames = 0"),
        ({"step": -1}, "dataset.step = -1"),
        ({"height": 0}, "dataset.height = 0"),
        ({"default_fps": 0.0}, "dataset.default_fps = 0.0"),
        ({"metadata": ""}, "dataset.metadata is empty"),
    ],
)
def test_config_rejects_bad_values(changes, message):
    cfg = VideoDatasetConfig(**{"data_dir": "d", "metadata": "m.csv", **changes})
    with pytest.raises(ConfigError) as info:
        cfg.validate()
    assert message in str(info.value)


def test_config_rejects_unknown_keys():
    with pytest.raises(ConfigError, match="unknown key"):
        from_dict(VideoDatasetConfig, {"data_dir": "d", "num_frames": 4}, "train.dataset")


# ---- labels CSV -----------------------------------------------------------------------------
def test_read_labels_ignores_extra_columns_and_blank_lines(tmp_path):
    path = tmp_path / "labels.csv"
    path.write_text(
        "caption,motion_bucket_id,path,length\n"
        '"a cat, walking",12,cats/a.mp4,40\n\n'
        "dog,255, b.mp4 ,7\n"
    )
    rows = read_labels(path)
    assert [(r.path, r.length, r.motion_bucket_id, r.line) for r in rows] == [
        ("cats/a.mp4", 40, 12, 2),
        ("b.mp4", 7, 255, 4),
    ]


@pytest.mark.parametrize(
    "text, line, message",
    [
        ("path,length,motion_bucket_id\na.mp4,10,5\nb.mp4,10\n", 3, "2 column(s), expected 3"),
        ("path,length,motion_bucket_id\na.mp4,12.5,5\n", 2, "length = '12.5': expected an integer"),
        ("path,length,motion_bucket_id\na.mp4,ten,5\n", 2, "length = 'ten'"),
        ("path,length,motion_bucket_id\na.mp4,0,5\n", 2, "length = 0"),
        (
            "path,length,motion_bucket_id\na.mp4,10,256\n",
            2,
            "motion_bucket_id = 256: expected 0..255",
        ),
        ("path,length,motion_bucket_id\na.mp4,10,-1\n", 2, "motion_bucket_id = -1"),
        ("path,length,motion_bucket_id\na.mp4,10,fast\n", 2, "motion_bucket_id = 'fast'"),
        ("path,length,motion_bucket_id\n,10,3\n", 2, "empty path"),
        ("a.mp4,10,5\nb.mp4,10,5\n", 1, "lacks column(s) path, length, motion_bucket_id"),
        ("path,length,caption\na.mp4,10,hi\n", 1, "lacks column(s) motion_bucket_id"),
    ],
)
def test_malformed_labels_name_the_file_and_line(tmp_path, text, line, message):
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(InputError) as info:
        read_labels(path)
    assert f"{path}, line {line}: " in str(info.value)
    assert message in str(info.value)


@pytest.mark.parametrize(
    "text, message",
    [("", "is empty"), ("\n\n", "is empty"), ("path,length,motion_bucket_id\n", "no rows")],
)
def test_labels_without_rows_are_an_error(tmp_path, text, message):
    path = tmp_path / "empty.csv"
    path.write_text(text)
    with pytest.raises(InputError, match=message):
        read_labels(path)


def test_missing_labels_file_is_an_error(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        read_labels(tmp_path / "none.csv")


# ---- frames: pure functions -----------------------------------------------------------------
def test_cover_size_keeps_the_aspect_and_covers():
    assert cover_size(1080, 1920, 576, 1024) == (576, 1024)
    assert cover_size(40, 80, 32, 32) == (32, 64)
    assert cover_size(100, 100, 32, 64) == (64, 64)
    assert cover_size(10, 20, 40, 40) == (40, 80)  # upscales when needed


def test_resize_cover_crop_takes_the_center():
    # a horizontal ramp: value 3·column; 40×80 → cover 32×64 (scale 0.8) → columns 16..48
    ramp = np.broadcast_to((3 * np.arange(80))[None, :, None], (40, 80, 3)).astype(np.uint8)
    out = resize_cover_crop(ramp, 32, 32)
    assert out.shape == (32, 32, 3) and out.dtype == np.uint8
    expected = 3 * ((16 + np.arange(32) + 0.5) / 0.8 - 0.5)  # source column of each output pixel
    np.testing.assert_allclose(out[16, 2:-2, 0], expected[2:-2], atol=2.0)
    assert np.all(out[:, :, 0] == out[0:1, :, 0])  # rows stay identical


def test_to_model_range_maps_uint8_to_minus_one_one_channels_first():
    frames = np.zeros((2, 3, 4, 3), dtype=np.uint8)
    frames[..., 0] = 255
    frames[1, ..., 2] = 51
    out = to_model_range(frames)
    assert out.shape == (2, 3, 3, 4) and out.dtype == np.float32
    assert np.all(out[:, 0] == 1.0) and np.all(out[:, 1] == -1.0)
    np.testing.assert_allclose(out[1, 2], 51 / 127.5 - 1)


def test_clip_start_is_uniform_over_the_allowed_range():
    rng = np.random.default_rng(0)
    starts = [draw_start(10, 4, 2, rng) for _ in range(2000)]  # span 7 → starts 0..3
    counts = np.bincount(starts, minlength=4)
    assert len(counts) == 4 and counts.min() > 400
    assert draw_start(7, 4, 2, rng) == 0  # exactly one clip fits
    with pytest.raises(VideoTooShortError, match="needs 7"):
        draw_start(6, 4, 2, rng)


# ---- decoding -------------------------------------------------------------------------------
def test_read_frames_returns_exactly_the_requested_frames(dataset_dir):
    path = dataset_dir.root / "index_a.mp4"
    wanted = [0, 3, 17, 22, 39]
    for seek in (True, False):
        frames, fps = read_frames(path, wanted, default_fps=7.0, seek=seek)
        assert frames.shape == (5, 48, 64, 3) and fps == 12.0
        assert [decode_index(f.mean() / 127.5 - 1) for f in frames] == wanted


def test_seeking_is_used_and_matches_decoding_from_the_start(dataset_dir):
    path = dataset_dir.root / "index_a.mp4"
    wanted = [21, 26, 31, 36]
    seeked = data._read_with_seek(path, wanted, set(wanted), 7.0)
    assert seeked is not None, "the seek path fell back on a constant-rate file"
    sequential, _ = read_frames(path, wanted, default_fps=7.0, seek=False)
    np.testing.assert_array_equal(seeked[0], sequential)


def test_read_frames_past_the_end_is_too_short(dataset_dir):
    for seek in (True, False):
        with pytest.raises(VideoTooShortError, match="frame 40 is needed"):
            read_frames(dataset_dir.root / "index_a.mp4", [30, 40], 7.0, seek=seek)


# ---- dataset --------------------------------------------------------------------------------
def test_samples_have_the_right_shape_range_frames_and_conditioning(dataset_dir):
    dataset = VideoDataset(_config(dataset_dir))
    samples = _epoch(dataset)
    assert len(samples) == 6  # 7 usable rows, one of them corrupt
    for sample in samples:
        assert sample.frames.shape == (4, 3, HEIGHT, WIDTH)
        assert sample.frames.dtype == np.float32
        assert sample.frames.min() >= -1.0 and sample.frames.max() <= 1.0
        assert sample.cond_image.shape == (3, HEIGHT, WIDTH)
        np.testing.assert_array_equal(sample.cond_image, sample.frames[0])
        assert 0 <= sample.start <= dataset_dir.frame_counts[sample.path] - 16
        assert sample.fps == dataset_dir.fps[sample.path]  # read from the file
        assert sample.clip_fps == sample.fps / 5
    by_path = {s.path: s for s in samples}
    assert by_path["fast.mp4"].motion_bucket_id == 200  # from the CSV
    assert by_path["still.mp4"].motion_bucket_id == 0
    for name in INDEX_VIDEOS:
        sample = by_path[name]
        assert _indices(sample) == [sample.start + 5 * i for i in range(4)]
        # a uniform frame stays uniform through resize and crop
        assert np.ptp(sample.frames[0]) < 2 / 127.5


def test_iteration_is_deterministic_given_the_seed(dataset_dir):
    first = _epoch(VideoDataset(_config(dataset_dir, seed=11)))
    again = _epoch(VideoDataset(_config(dataset_dir, seed=11)))
    assert [(s.path, s.start) for s in first] == [(s.path, s.start) for s in again]
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a.frames, b.frames)
    other = _epoch(VideoDataset(_config(dataset_dir, seed=12)))
    assert [(s.path, s.start) for s in other] != [(s.path, s.start) for s in first]


def test_epochs_reshuffle_and_redraw_starts(dataset_dir):
    dataset = VideoDataset(_config(dataset_dir))
    epoch0, epoch1 = _epoch(dataset), _epoch(dataset)
    assert sorted(s.path for s in epoch0) == sorted(s.path for s in epoch1)
    assert [(s.path, s.start) for s in epoch0] != [(s.path, s.start) for s in epoch1]
    assert {s.epoch for s in epoch0} == {0} and {s.epoch for s in epoch1} == {1}
    assert dataset.position == (2, 0)


def test_unshuffled_order_follows_the_csv(dataset_dir):
    dataset = VideoDataset(_config(dataset_dir, shuffle=False))
    assert [s.path for s in _epoch(dataset)] == [
        r.path for r in dataset.rows if r.path != dataset_dir.corrupt
    ]


def test_bad_videos_are_skipped_with_warnings_and_counted(dataset_dir, caplog):
    with caplog.at_level(logging.WARNING, logger="svdeploy.train.data"):
        dataset = VideoDataset(_config(dataset_dir))
        assert len(dataset) == 7
        assert dataset.skip_counts == {"missing": 1, "unreadable": 0, "too_short": 1}
        _epoch(dataset)
        assert dataset.skip_counts == {"missing": 1, "unreadable": 1, "too_short": 1}
        warned = caplog.text
        for name in (dataset_dir.missing, dataset_dir.corrupt, dataset_dir.short):
            assert name in warned
        caplog.clear()
        assert len(_epoch(dataset)) == 6  # the next epoch goes on
    assert dataset.skip_counts == {"missing": 1, "unreadable": 1, "too_short": 1}
    assert caplog.text == ""  # known-bad videos are not retried
    assert set(dataset.skipped["unreadable"]) == {dataset_dir.corrupt}


def test_video_shorter_than_its_csv_length_is_skipped(dataset_dir, tmp_path):
    labels = tmp_path / "labels.csv"
    write_labels(labels, [("short.mp4", 40, 5), ("index_b.mp4", 30, 9)])
    dataset = VideoDataset(_config(dataset_dir, metadata=str(labels)))
    samples = _epoch(dataset)
    assert [s.path for s in samples] == ["index_b.mp4"]
    assert dataset.skip_counts["too_short"] == 1
    assert "the CSV says 40 frames" in dataset.skipped["too_short"]["short.mp4"]


def test_a_dataset_with_nothing_usable_is_an_error(dataset_dir, tmp_path):
    labels = tmp_path / "labels.csv"
    write_labels(labels, [("missing.mp4", 40, 5), ("short.mp4", 3, 5)])
    with pytest.raises(InputError, match="no usable videos.*1 missing.*1 too_short"):
        VideoDataset(_config(dataset_dir, metadata=str(labels)))
    write_labels(labels, [("corrupt.mp4", 40, 5)])
    dataset = VideoDataset(_config(dataset_dir, metadata=str(labels)))
    with pytest.raises(InputError, match="every video was skipped"):
        _epoch(dataset)


def test_missing_data_dir_is_an_error(dataset_dir, tmp_path):
    with pytest.raises(InputError, match="is not a directory"):
        VideoDataset(_config(dataset_dir, data_dir=str(tmp_path / "nope")))


def test_resumed_dataset_continues_from_the_same_position(dataset_dir):
    original = VideoDataset(_config(dataset_dir))
    stream = iter(original)
    head = [next(stream) for _ in range(3)]
    state = json.loads(json.dumps(original.state_dict()))  # as a checkpoint would store it
    assert state["epoch"] == 0 and state["index"] >= 3
    rest = list(stream) + [s for _, s in zip(range(4), iter(original))]

    resumed = VideoDataset(_config(dataset_dir))
    resumed.load_state_dict(state)
    assert resumed.position == (state["epoch"], state["index"])
    replay = list(resumed) + [s for _, s in zip(range(4), iter(resumed))]
    assert [(s.epoch, s.path, s.start) for s in replay] == [
        (s.epoch, s.path, s.start) for s in rest
    ]
    for a, b in zip(rest, replay):
        np.testing.assert_array_equal(a.frames, b.frames)
    assert not {s.path for s in head} & {s.path for s in replay if s.epoch == 0}


def test_resume_carries_the_known_bad_videos(dataset_dir):
    original = VideoDataset(_config(dataset_dir))
    _epoch(original)
    resumed = VideoDataset(_config(dataset_dir))
    resumed.load_state_dict(original.state_dict())
    assert (
        resumed.skip_counts
        == original.skip_counts
        == {"missing": 1, "unreadable": 1, "too_short": 1}
    )


def test_state_from_other_data_is_rejected(dataset_dir, tmp_path):
    state = VideoDataset(_config(dataset_dir)).state_dict()
    with pytest.raises(ConfigError, match="saved for other data"):
        VideoDataset(_config(dataset_dir, seed=4)).load_state_dict(state)
    labels = tmp_path / "labels.csv"
    write_labels(labels, [("index_a.mp4", 40, 1), ("index_b.mp4", 30, 2)])
    with pytest.raises(ConfigError, match="saved for other data"):
        VideoDataset(_config(dataset_dir, metadata=str(labels))).load_state_dict(state)
    with pytest.raises(ConfigError, match="missing or invalid"):
        VideoDataset(_config(dataset_dir)).load_state_dict({"epoch": 0})


def test_default_fps_is_used_when_the_container_has_none(dataset_dir, monkeypatch):
    # no synthetic container lacks a rate, so hide the stream's rates from the reader
    original = data.stream_fps
    monkeypatch.setattr(data, "stream_fps", lambda stream, default: original(None, default))
    frames, fps = read_frames(dataset_dir.root / "index_b.mp4", [0, 1], default_fps=6.5)
    assert fps == 6.5 and frames.shape[0] == 2


class _Array:
    def __init__(self, value):
        self.value = value

    def asnumpy(self):
        return self.value


class _MeanOfFrames:
    """Stands in for the VAE encoder in latent_scale: one "latent" per frame."""

    def set_train(self, mode):
        pass

    def __call__(self, frames):
        return _Array(frames.asnumpy().mean(axis=(1, 2, 3)))


def _frame_means(samples: Sequence[Sample]) -> np.ndarray:
    return np.concatenate([s.frames.mean(axis=(1, 2, 3)) for s in samples])


def test_latent_scale_reads_the_next_clips_and_leaves_the_dataset_where_it_was(dataset_dir):
    """The autoencoder stage measures vae.scale_factor between its joint and decoder-only
    phases; the decoder phase must read on from where the joint phase stopped."""
    from svdeploy.train.autoencoder import latent_scale

    dataset = VideoDataset(_config(dataset_dir, shuffle=False))
    next(iter(dataset))  # the joint phase has read one clip
    before = dataset.state_dict()
    scale = latent_scale(_MeanOfFrames(), dataset, clips=3)
    assert dataset.state_dict() == before
    expected = _frame_means(_epoch(dataset)[:3])
    assert scale == pytest.approx(1.0 / expected.std())  # the 3 clips after the one read


def test_latent_scale_goes_on_into_the_next_epochs_when_the_phase_ended_one(dataset_dir):
    """A joint phase whose steps × clips per step equal the dataset's size stops exactly at
    the epoch's end (the demo recipe at 600 steps of 2 clips over 1,200 clips did, and the
    measure then had no clip at all): it reads the next epochs' clips, and more clips than
    one epoch holds."""
    from svdeploy.train.autoencoder import latent_scale

    good = len(_epoch(VideoDataset(_config(dataset_dir, shuffle=False))))
    dataset = VideoDataset(_config(dataset_dir, shuffle=False))
    reader = iter(dataset)
    for _ in range(good):  # the phase's reader stops after the epoch's last clip
        next(reader)
    before = dataset.state_dict()
    assert before["epoch"] == 0
    clips = good + 2
    scale = latent_scale(_MeanOfFrames(), dataset, clips=clips)
    assert dataset.position == (before["epoch"], before["index"])
    later = VideoDataset(_config(dataset_dir, shuffle=False))
    later.load_state_dict({**before, "epoch": 1, "index": 0})
    expected = _frame_means((_epoch(later) + _epoch(later))[:clips])
    assert scale == pytest.approx(1.0 / expected.std())
