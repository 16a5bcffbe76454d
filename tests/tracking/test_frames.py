"""FrameSource: lazy reading, normalization exactness, channels, resizing, prefetch."""

from __future__ import annotations

import threading

import dask.array as da
import numpy as np
import pytest
import torch
import zarr

from napari_sam2.tracking.frames import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    FrameSource,
    ResolvedAxes,
    resolve_axes,
    stack_view,
)

MEAN = torch.tensor(IMAGENET_MEAN, dtype=torch.float32).view(3, 1, 1)
STD = torch.tensor(IMAGENET_STD, dtype=torch.float32).view(3, 1, 1)


def test_float32_unit_frames_at_model_size_are_normalized_bitwise() -> None:
    rng = np.random.default_rng(0)
    frames = rng.random((3, 32, 32, 3), dtype=np.float32)
    src = FrameSource(frames, 32, contrast_limits=(0, 1))
    for t in range(3):
        expected = (torch.from_numpy(frames[t]).permute(2, 0, 1) - MEAN) / STD
        got = src.model_input(t)
        assert got.dtype == torch.float32 and got.shape == (3, 32, 32)
        assert torch.equal(got, expected)


def test_mini_fixture_frames_match_reference_input(mini_dir) -> None:
    import numpy as np

    frames = np.load(mini_dir / "frames.npy", mmap_mode="r")
    expected = np.load(mini_dir / "image.npz")["input_normalized"][0]
    src = FrameSource(frames, 256, contrast_limits=(0, 1))
    assert np.array_equal(src.model_input(0).numpy(), expected)


def test_grey_uint8_is_repeated_to_rgb_with_dtype_limits() -> None:
    frames = np.arange(2 * 8 * 8, dtype=np.uint8).reshape(2, 8, 8)
    src = FrameSource(frames, 8)
    assert src.contrast_limits == (0.0, 255.0)
    x = src.model_input(1) * STD + MEAN
    expected = torch.from_numpy(frames[1].astype(np.float32) / 255.0)
    for c in range(3):
        torch.testing.assert_close(x[c], expected, atol=1e-6, rtol=0)


@pytest.mark.parametrize(
    "shape, dtype, size",
    [
        ((2, 24, 24), np.uint16, 48),  # grey, enlarged
        ((2, 40, 40, 2), np.float32, 16),  # two colours, shrunk
        ((2, 300, 300), np.uint8, 32),  # huge: shrunk in strips on the CPU, then moved
    ],
)
def test_frames_are_prepared_on_the_device_given(shape, dtype, size) -> None:
    """model_input(device=...) runs every step on that device (on meta, a tensor left on the
    CPU would raise) and, on the CPU, gives the default's values."""
    frames = (np.random.default_rng(0).random(shape) * 200).astype(dtype)
    src = FrameSource(frames, size, channels=(0, 1) if len(shape) == 4 else None, prefetch=0)
    for t in range(2):
        assert torch.equal(src.model_input(t, device="cpu"), src.model_input(t))
        on_meta = src.model_input(t, device=torch.device("meta"))
        assert on_meta.device.type == "meta" and on_meta.shape == (3, size, size)


def test_contrast_limits_scale_and_clip() -> None:
    frames = np.array([[[0, 100], [200, 400]]], dtype=np.uint16)
    src = FrameSource(frames, 2, contrast_limits=(100, 300))
    x = (src.model_input(0) * STD + MEAN)[0]
    torch.testing.assert_close(x, torch.tensor([[0.0, 0.0], [0.5, 1.0]]), atol=1e-6, rtol=0)


def test_channels_must_be_chosen_for_two_or_four_channels() -> None:
    frames = np.zeros((2, 8, 8, 2), dtype=np.uint8)
    with pytest.raises(ValueError, match="choose one channel"):
        FrameSource(frames, 8)
    src = FrameSource(frames, 8, channels=[1])
    assert src.model_input(0).shape == (3, 8, 8)
    with pytest.raises(ValueError, match="one channel .grey., two .red, green. or three"):
        FrameSource(np.zeros((2, 8, 8, 4), np.uint8), 8, channels=[0, 1, 2, 3])


def test_two_channels_become_red_and_green() -> None:
    rng = np.random.default_rng(2)
    frames = rng.integers(0, 255, (1, 6, 6, 4), dtype=np.uint8)
    x = FrameSource(frames, 6, channels=[3, 1]).model_input(0) * STD + MEAN
    torch.testing.assert_close(x[0], torch.from_numpy(frames[0, :, :, 3] / 255.0).float())
    torch.testing.assert_close(x[1], torch.from_numpy(frames[0, :, :, 1] / 255.0).float())
    torch.testing.assert_close(x[2], torch.zeros(6, 6), atol=1e-6, rtol=0)


def test_three_channels_are_rgb_and_channel_axis_one_is_moved() -> None:
    rng = np.random.default_rng(1)
    thwc = rng.integers(0, 255, (2, 6, 6, 3), dtype=np.uint8)
    tchw = np.ascontiguousarray(thwc.transpose(0, 3, 1, 2))
    a = FrameSource(thwc, 6).model_input(1)
    b = FrameSource(tchw, 6, channel_axis=1).model_input(1)
    assert torch.equal(a, b)
    x = a * STD + MEAN
    torch.testing.assert_close(x[2], torch.from_numpy(thwc[1, :, :, 2] / 255.0).float())


def test_wrong_number_of_axes_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="stack_view"):
        FrameSource(np.zeros((2, 3, 8, 8, 1)), 8)
    with pytest.raises(ValueError, match="T, H, W"):
        FrameSource(np.zeros((8, 8)), 8)


def test_resize_shrinks_with_antialias_and_stays_in_range() -> None:
    frames = np.zeros((1, 64, 48), dtype=np.float32)
    frames[0, ::2] = 1.0  # stripes: antialiasing averages them to grey
    src = FrameSource(frames, 16, contrast_limits=(0, 1))
    x = src.model_input(0) * STD + MEAN
    assert x.shape == (3, 16, 16)
    assert float(x.min()) >= -1e-6 and float(x.max()) <= 1 + 1e-6
    assert abs(float(x[0, 4:12, 4:12].mean()) - 0.5) < 0.05


def test_nan_and_inf_are_clipped_like_any_value_and_ignored_by_limits() -> None:
    frames = np.linspace(0, 1, 2 * 10 * 10, dtype=np.float32).reshape(2, 10, 10) * 100
    frames[0, 0, 0] = np.nan
    frames[0, 0, 1] = np.inf
    frames[1, 0, 0] = -np.inf
    src = FrameSource(frames, 10)
    lo, hi = src.contrast_limits
    assert np.isfinite(lo) and np.isfinite(hi) and 0 <= lo < 2 and 99 < hi <= 100
    for t in (0, 1):
        assert torch.isfinite(src.model_input(t)).all()
    first = src.model_input(0) * STD + MEAN
    second = src.model_input(1) * STD + MEAN
    # NaN (no data) is the bottom of the range, +inf the top (a saturated pixel), -inf the bottom
    assert abs(float(first[0, 0, 0])) < 1e-6
    assert abs(float(first[0, 0, 1]) - 1.0) < 1e-6
    assert abs(float(second[0, 0, 0])) < 1e-6
    assert float(second[0, 9, 9]) > 0.99  # finite pixels keep their place in the range


def test_dask_zarr_and_numpy_give_identical_inputs() -> None:
    rng = np.random.default_rng(2)
    frames = rng.integers(0, 4000, (4, 20, 24), dtype=np.uint16)
    z = zarr.create_array(store=zarr.storage.MemoryStore(), shape=frames.shape, dtype="u2")
    z[:] = frames
    d = da.from_array(frames, chunks=(1, 10, 12))
    ref = FrameSource(frames, 16)
    for other in (FrameSource(d, 16), FrameSource(z, 16)):
        assert other.contrast_limits == ref.contrast_limits
        for t in range(4):
            assert torch.equal(other.model_input(t), ref.model_input(t))


def test_prefetch_reads_the_next_frames_ahead_and_prepares_them_on_the_callers_thread(
    monkeypatch,
) -> None:
    reads: list[tuple[int, str]] = []
    prepared_on: set[str] = set()

    class Counting:  # a lazy array: not in memory, so its frames are read ahead
        def __init__(self, data):
            self.data, self.shape, self.dtype = data, data.shape, data.dtype

        def __getitem__(self, key):
            if isinstance(key, int):
                reads.append((key, threading.current_thread().name))
            return self.data[key]

    data = np.random.default_rng(3).random((10, 8, 8), dtype=np.float32)
    expected = [
        FrameSource(data, 8, contrast_limits=(0, 1), prefetch=0).model_input(t) for t in range(10)
    ]
    unit_channels = FrameSource._unit_channels

    def recording(self, raw, dtype, device=None):
        prepared_on.add(threading.current_thread().name)
        return unit_channels(self, raw, dtype, device)

    monkeypatch.setattr(FrameSource, "_unit_channels", recording)
    src = FrameSource(Counting(data), 8, contrast_limits=(0, 1), prefetch=2)
    src.model_input(0)
    src.model_input(1)  # moving forward: 2 and 3 are scheduled
    assert set(src.pending) == {2, 3}
    for t in range(2, 10):
        assert torch.equal(src.model_input(t), expected[t])
        assert len(src.pending) <= 2
    assert sorted(t for t, _ in reads) == list(range(10))  # every frame read exactly once
    # frames 2 on were read by the worker; all torch work stays on the caller's thread (torch
    # ops on the worker would start a second OpenMP team and oversubscribe the cores)
    assert {name for t, name in reads if t >= 2} == {"napari-sam2-frames_0"}
    assert prepared_on == {threading.current_thread().name}
    src.prefetch([5, 4, 3])
    assert src.pending == (4, 5)
    src.close()
    assert src.pending == ()


def test_frames_in_memory_are_not_read_ahead_but_memory_maps_are(tmp_path) -> None:
    data = np.random.default_rng(4).integers(0, 4000, (6, 8, 8), dtype=np.uint16)
    mapped = np.lib.format.open_memmap(tmp_path / "s.npy", "w+", np.uint16, data.shape)
    mapped[:] = data
    reference = FrameSource(data, 8, contrast_limits=(0, 4000), prefetch=0)
    sources = {
        "in memory": FrameSource(data, 8, contrast_limits=(0, 4000)),
        "view of memory": FrameSource(
            stack_view(data[:, None], frame_axis=0, fixed={1: 0}), 8, contrast_limits=(0, 4000)
        ),
        "memory map": FrameSource(mapped, 8, contrast_limits=(0, 4000)),
    }
    for name, src in sources.items():
        for t in range(3):
            assert torch.equal(src.model_input(t), reference.model_input(t)), name
        assert src.pending == ((3, 4) if name == "memory map" else ()), name
        src.close()


def test_resolve_axes_normalizes_and_derives_y_x() -> None:
    # (T, C, Z, Y, X) propagated along Z at time 3 with negative axes and a negative index.
    axes = resolve_axes((4, 2, 6, 32, 40), frame_axis=-3, channel_axis=1, fixed={-5: -1})
    assert axes == ResolvedAxes(frame_axis=2, channel_axis=1, fixed={0: 3}, y_axis=3, x_axis=4)
    zyx = resolve_axes((6, 32, 40), frame_axis=0)
    assert (zyx.channel_axis, dict(zyx.fixed), zyx.y_axis, zyx.x_axis) == (None, {}, 1, 2)
    # Y and X are the last two axes left, wherever the frame axis is.
    yxt = resolve_axes((32, 40, 5), frame_axis=2)
    assert (yxt.y_axis, yxt.x_axis) == (0, 1)


@pytest.mark.parametrize(
    ("shape", "kwargs", "message"),
    [
        ((4, 32, 40), {"frame_axis": 3}, "frame_axis 3 is out of range"),
        ((4, 32, 40), {"frame_axis": 0, "channel_axis": -4}, "channel_axis -4 is out of range"),
        ((4, 2, 32, 40), {"frame_axis": 1, "channel_axis": 1}, "channel axis cannot be"),
        ((4, 6, 32, 40), {"frame_axis": 0, "fixed": {0: 1}}, "it cannot be fixed"),
        ((4, 6, 32, 40), {"frame_axis": 0, "fixed": {7: 1}}, "fixed axis 7 is out of range"),
        ((4, 6, 32, 40), {"frame_axis": 0, "fixed": {1: 6}}, r"index 6 for axis 1 is out of"),
        ((4, 6, 32, 40), {"frame_axis": 0, "fixed": {1: -7}}, r"index -7 for axis 1 is out of"),
        ((4, 32, 40), {"frame_axis": 0, "fixed": {1: 0}}, r"no two image axes \(Y, X\)"),
        ((4, 6, 32, 40), {"frame_axis": 0}, r"fixed index for axes \[1\].*fixed=\{1: 0\}"),
    ],
)
def test_resolve_axes_errors_say_what_to_choose(shape, kwargs, message) -> None:
    with pytest.raises(ValueError, match=message):
        resolve_axes(shape, **kwargs)


def test_stack_view_picks_axes_lazily() -> None:
    tzyx = np.arange(3 * 4 * 5 * 6).reshape(3, 4, 5, 6)
    over_time = stack_view(tzyx, frame_axis=0, fixed={1: 2})
    assert over_time.shape == (3, 5, 6)
    assert np.array_equal(over_time[1], tzyx[1, 2])
    over_z = stack_view(tzyx, frame_axis=1, fixed={0: 1})
    assert over_z.shape == (4, 5, 6)
    assert np.array_equal(over_z[3], tzyx[1, 3])
    tcyx = np.arange(2 * 3 * 4 * 5).reshape(2, 3, 4, 5)
    v = stack_view(tcyx, frame_axis=0, channel_axis=1)
    assert v.shape == (2, 4, 5, 3)
    assert np.array_equal(v[1], tcyx[1].transpose(1, 2, 0))
    assert np.array_equal(v[1, ::2, ::2], tcyx[1].transpose(1, 2, 0)[::2, ::2])
    with pytest.raises(ValueError, match="fixed index for axes"):
        stack_view(tzyx, frame_axis=0)
    src = FrameSource(stack_view(da.from_array(tzyx), frame_axis=1, fixed={0: 0}), 6)
    assert len(src) == 4 and (src.height, src.width) == (5, 6)
