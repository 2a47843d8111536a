"""Shards streamed batch by batch (issue 12, core/store/shard_stream.py): byte-identical to a
shard written whole, read back by plain zarr, and safe under ``kill -9`` mid-block."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import zarr

import tensortap as tt
from tensortap.core.store.direct_io import DirectLocalStore
from tensortap.core.store.whole_chunks import WholeChunks

sys.path.insert(0, str(Path(__file__).parent))
from fake_backend import FakeBackend, FakeModel, images  # noqa: E402

WORKER = Path(__file__).parent / "crash_worker.py"
#: 64² images with 32 channels: the conv layer takes 512 KiB a sample, so a block of 32
#: samples (16 MiB) is a shard of 2-sample inner chunks, streamed batch (8) by batch.
SIZE, CHANNELS, BLOCK, N = 64, 32, 32, 96


def _sharded(group: zarr.Group, name: str, shape: tuple[int, ...], inner: int) -> zarr.Array:
    return group.create_array(
        name,
        shape=shape,
        dtype="float32",
        chunks=(inner, *shape[1:]),
        shards=shape,
        compressors=[{"name": "crc32c"}],
        fill_value=np.nan,
        config={"write_empty_chunks": True},
    )


def _ours_and_zarrs(
    tmp_path: Path, direct: bool, shape: tuple[int, ...]
) -> tuple[zarr.Group, zarr.Array, zarr.Array]:
    """Our group (``a.zarr``, O_DIRECT or not) and the same sharded array in it and in a
    group zarr writes itself (``b.zarr``), inner chunks of 4 rows."""
    ours = zarr.open_group(
        DirectLocalStore(tmp_path / "a.zarr") if direct else tmp_path / "a.zarr", mode="w"
    )
    theirs = zarr.open_group(tmp_path / "b.zarr", mode="w")
    return ours, _sharded(ours, "x", shape, 4), _sharded(theirs, "x", shape, 4)


@pytest.mark.parametrize("direct", [True, False])
def test_streamed_shard_equals_zarrs_own_bytes(tmp_path: Path, direct: bool) -> None:
    """Appended in batches, the shard file is byte for byte what zarr writes in one go."""
    values = np.random.default_rng(0).normal(size=(32, 40, 30, 7)).astype(np.float32)
    ours, a, b = _ours_and_zarrs(tmp_path, direct, values.shape)
    stream = WholeChunks(ours.store).open_stream(a, 0)
    assert stream is not None
    for start in range(0, 32, 8):
        stream.append(values[start : start + 8])
    assert not (tmp_path / "a.zarr" / "x" / "c" / "0" / "0" / "0" / "0").exists()  # not yet
    stream.finish()
    b[:] = values
    ours_bytes = (tmp_path / "a.zarr" / "x" / "c" / "0" / "0" / "0" / "0").read_bytes()
    assert ours_bytes == (tmp_path / "b.zarr" / "x" / "c" / "0" / "0" / "0" / "0").read_bytes()
    assert not list((tmp_path / "a.zarr").rglob("*.partial"))
    np.testing.assert_array_equal(zarr.open_array(tmp_path / "a.zarr" / "x")[:], values)


def test_short_last_batch_is_padded_and_readable(tmp_path: Path) -> None:
    """Data ending inside a block: the short inner chunk is padded, later ones are empty;
    zarr reads the rows written and the fill value after them."""
    values = np.random.default_rng(1).normal(size=(13, 5, 6)).astype(np.float32)
    group = zarr.open_group(tmp_path / "a.zarr", mode="w")
    array = _sharded(group, "x", (32, 5, 6), 4)
    stream = WholeChunks(group.store).open_stream(array, 0)
    assert stream is not None
    stream.append(values[:8])
    stream.append(values[8:])
    stream.finish()
    read = zarr.open_array(tmp_path / "a.zarr" / "x")[:]
    np.testing.assert_array_equal(read[:13], values)
    assert np.isnan(read[13:]).all()


@pytest.mark.parametrize("direct", [True, False])
def test_pieces_of_any_length_give_zarrs_own_bytes(tmp_path: Path, direct: bool) -> None:
    """Pieces that end inside an inner chunk (a grouped call's batches, issue 12): the rest
    waits for the next piece, and the shard is still byte for byte zarr's."""
    values = np.random.default_rng(2).normal(size=(32, 5, 6)).astype(np.float32)
    ours, a, b = _ours_and_zarrs(tmp_path, direct, values.shape)
    stream = WholeChunks(ours.store).open_stream(a, 0)
    assert stream is not None
    for start, stop in ((0, 3), (3, 5), (5, 6), (6, 19), (19, 32)):
        stream.append(values[start:stop])
    stream.finish()
    b[:] = values
    chunk = Path("x") / "c" / "0" / "0" / "0"
    assert (tmp_path / "a.zarr" / chunk).read_bytes() == (tmp_path / "b.zarr" / chunk).read_bytes()
    with pytest.raises(ValueError, match="more rows than the shard holds"):
        again = WholeChunks(ours.store).open_stream(a, 0)
        assert again is not None
        try:
            again.append(np.concatenate([values, values[:4]]))
        finally:
            again.abort()


@pytest.fixture(scope="module")
def reference() -> tt.Run:
    model = FakeModel(size=SIZE, channels=CHANNELS)
    x, y = images(N, size=SIZE), np.arange(N) % 3
    return tt.capture(
        model,
        (x, y),
        store=None,
        backend=FakeBackend(),
        batch_size=8,
        block_size=BLOCK,
        gradients=True,
        progress=False,
    )


def _start(path: Path, delay: float, *extra: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            sys.executable,
            str(WORKER),
            str(path),
            str(N),
            str(delay),
            f"--block-size={BLOCK}",
            f"--size={SIZE}",
            f"--channels={CHANNELS}",
            *extra,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def _check_committed(run: tt.Run, reference: tt.Run) -> None:
    indices = run.sample_indices
    assert len(indices) % BLOCK == 0 or indices[-1] == N - 1
    for key in ("block.conv", "dense"):
        got = run.activation(key).values
        assert not np.isnan(got).any(), "a partial block is visible"
        np.testing.assert_array_equal(got, reference.activation(key).values[indices])
        np.testing.assert_array_equal(
            run.gradient(key).values, reference.gradient(key).values[indices]
        )


def test_kill_inside_a_streamed_block_then_resume(tmp_path: Path, reference: tt.Run) -> None:
    """``kill -9`` while a block's shards are half streamed: readers saw committed blocks
    only, the temporary shard is all that is left of the block, and a resume gives each
    sample once, equal to an uninterrupted run (statistics included)."""
    path = tmp_path / "run.zarr"
    proc = _start(path, 0.5)
    conv = path / "layers" / "block.conv" / "activation"
    deadline = time.monotonic() + 120
    killed_mid_stream, last_read = False, 0.0
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            # Block 1's first batches are streamed: its shard exists only as a temporary.
            if list(conv.glob("c.1.*.partial")):
                proc.send_signal(signal.SIGKILL)
                killed_mid_stream = True
                break
            if time.monotonic() - last_read > 0.3:  # a live reader: committed blocks only
                try:
                    run = tt.open_run(path)
                    if run.samples:
                        _check_committed(run, reference)
                except tt.RunNotFoundError:  # not created yet
                    pass
                last_read = time.monotonic()
            time.sleep(0.005)
    finally:
        proc.kill()
        proc.wait()
    assert killed_mid_stream, proc.stderr.read().decode() if proc.stderr else ""
    run = tt.open_run(path)
    assert run.samples == BLOCK and run.status == "capturing"
    _check_committed(run, reference)
    assert not (conv / "c.1.0.0.0").exists()  # the block's shard was never published

    resumed = _start(path, 0.0, "--resume")
    assert resumed.wait(timeout=120) == 0, resumed.stderr.read().decode() if resumed.stderr else ""
    run = tt.open_run(path)
    assert run.status == "complete" and run.samples == N
    assert not list(path.rglob("*.partial")), "the resume left the killed block's temporaries"
    np.testing.assert_array_equal(run.tree["sample"].values, np.arange(N))
    _check_committed(run, reference)
    for key in ("block.conv", "dense"):
        ours, theirs = run.stats(key), reference.stats(key)
        for name in ("count", "mean", "std", "min", "max", "histogram", "bin_edges"):
            np.testing.assert_array_equal(ours[name].values, theirs[name].values)
    assert not tt.verify(path).problems
