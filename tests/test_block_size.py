"""Storage blocks of several compute batches, sized by bytes (issue 12, docs/store-format.md).

The rule itself (:func:`choose_block_size`) is checked against numbers worked out by hand;
captures with blocks of several batches are checked against the fake model's own forward
pass and against statistics computed here in NumPy; ``kill -9`` and resume, and the Dask
capture, with multi-batch blocks.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr

import tensortap as tt
from tensortap.core.block_size import BlockRule, choose_block_size
from tensortap.core.errors import DataError, RunNotFoundError
from tensortap.core.store.checksums import CHECKSUM_BYTES

sys.path.insert(0, str(Path(__file__).parent))
from fake_backend import FakeBackend, FakeModel, images  # noqa: E402

BACKEND = FakeBackend()
WORKER = Path(__file__).parent / "crash_worker.py"


def _choose(**kw: Any) -> int:
    args: dict[str, Any] = dict(
        batch_size=32,
        chunk_sample_bytes=512,
        block_sample_bytes=1000,
        seconds_per_batch=None,
        total=None,
    )
    args.update(kw)
    rule = args.pop("rule", BlockRule())
    return choose_block_size(rule, **args)


# ----------------------------------------------------------------------------- the rule
def test_rule_fills_the_chunk_of_the_median_array() -> None:
    rule = BlockRule(chunk_bytes=2**20)
    # 512 B a sample in the median array: 2**20 / (512 * 32) = 64 batches.
    assert _choose(rule=rule) == 64 * 32
    # A large typical layer: never fewer than one batch.
    assert _choose(rule=rule, chunk_sample_bytes=3 * 2**20) == 32
    assert _choose(rule=rule, chunk_sample_bytes=2**20 // 32 // 3) == 3 * 32


def test_rule_bounds_memory_time_and_the_run() -> None:
    rule = BlockRule(chunk_bytes=2**30, max_block_bytes=2**24, commit_seconds=2.0)
    # Memory: 2**24 / (1000 * 32) = 524 batches.
    assert _choose(rule=rule) == 524 * 32
    # Time: 2 s / 0.1 s = 20 batches.
    assert _choose(rule=rule, seconds_per_batch=0.1) == 20 * 32
    # The run: 1,000 samples are 32 batches (the last one short).
    assert _choose(rule=rule, total=1000) == 32 * 32
    # Slower than the interval: still one batch.
    assert _choose(rule=rule, seconds_per_batch=10.0) == 32


def test_given_block_size_wins_and_bad_values_name_the_fix() -> None:
    assert _choose(rule=BlockRule.from_options(96, None, 32)) == 96
    with pytest.raises(DataError, match=r"block_size=100 .* batch_size=32; pass .* 96 or 128"):
        BlockRule.from_options(100, None, 32)
    with pytest.raises(DataError, match="block_size=0"):
        BlockRule.from_options(0, None, 32)
    with pytest.raises(DataError, match=r"chunk_bytes=-1 .* positive"):
        BlockRule.from_options(None, -1, 32)


# ----------------------------------------------------------------------------- captures
def _capture(data: Any, store: Any, **kw: Any) -> tt.Run:
    kw.setdefault("progress", False)
    kw.setdefault("batch_size", 8)
    return tt.capture(kw.pop("model", FakeModel()), data, store=store, backend=BACKEND, **kw)


def _objects(path: Path, array: str) -> int:
    return sum(1 for f in (path / array).iterdir() if f.name.startswith("c."))


def test_tiny_and_huge_layers_in_one_model(tmp_path: Path) -> None:
    """The median array decides the block for all: of the conv layer (16×16×8 float32 =
    8 KiB a sample), the input (3 KiB), the dense (20 B) and probs (12 B) layers, their
    gradients and the output, the median takes 20 B a sample; every array is chunked by the
    same block, the huge conv layer's chunk 24 × 8 KiB."""
    model, x = FakeModel(size=16, channels=8), images(100, size=16)
    y = np.arange(100) % 3
    path = tmp_path / "r.zarr"
    # 20 B a sample in the median array: 480 B / (20 B × 8) = 3 batches (24 samples).
    run = _capture((x, y), path, model=model, chunk_bytes=480, gradients=True)
    assert run.block_size == 24 and run.attrs["batch_size"] == 8
    ref = model.forward(x)
    for key in ("block.conv", "dense", "probs"):
        act = run.activation(key)
        assert act.chunks[0][:4] == (24, 24, 24, 24)  # one chunk per block, whole batches
        np.testing.assert_array_equal(act.values, ref[key])
        assert _objects(path, f"layers/{key}/activation") == 5  # ceil(100 / 24)
    # Every layer's statistics share one object per block.
    assert _objects(path, "stats/block_moments") == 5
    committed = zarr.open_array(path / "committed", mode="r")[:]
    assert committed.tolist() == [24, 24, 24, 24, 4]
    # Statistics over blocks of three batches equal NumPy's over all samples.
    values = ref["dense"].astype(np.float64)
    stats = run.stats("dense")
    np.testing.assert_allclose(stats["mean"].values, values.mean(0), rtol=1e-12)
    np.testing.assert_allclose(stats["std"].values, values.std(0), rtol=1e-9)
    np.testing.assert_array_equal(stats["max"].values, values.max(0))
    np.testing.assert_array_equal(run.labels.values, y)
    # Every layer's span of the one statistics group (schema 2): layers of 8, 5 and 3
    # channels side by side, each equal to NumPy's over its own activations.
    for key in ("block.conv", "dense", "probs"):
        flat = ref[key].astype(np.float64).reshape(100, -1, ref[key].shape[-1])
        stats = run.stats(key)
        np.testing.assert_allclose(stats["mean"].values, flat.mean((0, 1)), rtol=1e-9)
        np.testing.assert_array_equal(stats["min"].values, flat.min((0, 1)))
        np.testing.assert_array_equal(stats["sample_max"].values, flat.max(1).astype(np.float32))
        np.testing.assert_allclose(stats["sample_mean"].values, flat.mean(1), rtol=1e-5)
        assert int(stats["histogram"].sum() + stats["underflow"] + stats["overflow"]) == flat.size
    np.testing.assert_array_equal(run.predictions.values, ref["probs"].argmax(1))
    np.testing.assert_array_equal(run.inputs().values, x)


def test_default_rule_puts_a_small_run_in_one_block(tmp_path: Path) -> None:
    """Small layers, default chunk size: the block is the whole run (rounded to batches)."""
    model, x = FakeModel(), images(50)
    run = _capture(x, tmp_path / "r.zarr", model=model)
    assert run.block_size == 56  # 7 batches of 8 hold the 50 samples
    assert zarr.open_array(tmp_path / "r.zarr" / "committed", mode="r")[:].tolist() == [50]
    np.testing.assert_array_equal(run.activation("dense").values, model.forward(x)["dense"])


def test_stream_of_unknown_length(tmp_path: Path) -> None:
    """A stream: blocks by bytes without a total, arrays trimmed to the samples seen; a
    stream shorter than one block gets a block of what it held, not a padded chunk."""
    model, x = FakeModel(size=16, channels=8), images(90, size=16)

    def stream(n: int) -> Iterator[np.ndarray]:
        for i in range(0, n, 5):  # uneven pieces, re-cut into batches of 8
            yield x[i : min(i + 5, n)]

    path = tmp_path / "long.zarr"
    # 20 B a sample in the median array (the dense layer): 480 B → blocks of 3 batches.
    run = _capture(stream(90), path, model=model, chunk_bytes=480)
    assert run.total is None and run.samples == 90 and run.block_size == 24
    np.testing.assert_array_equal(
        run.activation("block.conv").values, model.forward(x)["block.conv"]
    )
    assert zarr.open_array(path / "committed", mode="r")[:].tolist() == [24, 24, 24, 18]

    short = tmp_path / "short.zarr"
    run = _capture(stream(13), short, model=model, chunk_bytes=2**30)
    assert run.samples == 13 and run.block_size == 16  # 2 batches, not 2**30 bytes' worth
    chunk = next((short / "layers/block.conv/activation").glob("c.*"))
    # 16 samples of float32 (no padding to the 2**30 bytes), then the chunk's CRC-32C.
    assert chunk.stat().st_size == 16 * 16 * 16 * 8 * 4 + CHECKSUM_BYTES


class _Failing:
    """Batches of the data that raise after ``fail_at`` samples (a crash mid-run)."""

    def __init__(self, x: np.ndarray, fail_at: int) -> None:
        self.x, self.fail_at = x, fail_at

    def __iter__(self) -> Iterator[np.ndarray]:
        for i in range(0, len(self.x), 8):
            if i >= self.fail_at:
                raise RuntimeError("boom")
            yield self.x[i : i + 8]


def test_resumed_run_keeps_its_block_size(tmp_path: Path) -> None:
    model, x = FakeModel(), images(96)
    path = tmp_path / "r.zarr"
    with pytest.raises(RuntimeError, match="boom"):
        _capture(_Failing(x, 56), path, model=model, block_size=24)
    failed = tt.open_run(path)
    assert failed.status == "failed" and failed.samples == 48  # 2 whole blocks; 8 lost
    # Asked for other sizes now: the run's chunking wins.
    run = _capture(x, path, model=model, resume=True, block_size=8, batch_size=4)
    assert run.status == "complete" and run.samples == 96 and run.block_size == 24
    assert run.attrs["batch_size"] == 8
    np.testing.assert_array_equal(run.tree["sample"].values, np.arange(96))  # each once
    np.testing.assert_array_equal(run.activation("dense").values, model.forward(x)["dense"])
    assert zarr.open_array(path / "committed", mode="r")[:].tolist() == [24] * 4


def test_run_without_block_size_attr_still_opens(tmp_path: Path) -> None:
    """Runs written before blocks held several batches have no ``block_size``: one batch."""
    model, x = FakeModel(), images(32)
    path = tmp_path / "old.zarr"
    _capture(x, path, model=model, block_size=8)
    group = zarr.open_group(path, mode="r+")
    attrs = dict(group.attrs["tensortap"])
    del attrs["block_size"]
    group.attrs["tensortap"] = attrs
    run = tt.open_run(path)
    assert run.block_size == 8 and run.samples == 32
    np.testing.assert_array_equal(run.activation("dense").values, model.forward(x)["dense"])


class _QuietBackend(FakeBackend):
    """A backend whose session reports no info (nothing else writes the root attrs)."""

    def session(self, model, nodes, *, gradients=False, target=None):  # type: ignore[no-untyped-def]
        session = super().session(model, nodes, gradients=gradients, target=target)
        session.info = {}
        return session


def _committed_any(path: Path) -> bool:
    try:
        return tt.open_run(path).samples > 0
    except RunNotFoundError:
        return False


def test_live_reader_sees_the_block_size_before_the_first_commit(tmp_path: Path) -> None:
    """The block size is in the root attrs before any block is committed, so a reader of a
    live (or killed) run never counts committed samples with the batch size.  On a local
    folder the run appears at its path with block 0 (atomic placement); on s3 it is
    written in place."""
    model, x = FakeModel(), images(48)
    path = tmp_path / "r.zarr"
    seen: list[tuple[Any, int, str]] = []

    def batches() -> Iterator[np.ndarray]:
        for i in range(0, 48, 8):
            if i == 32:  # block 0 (samples 0..23) was handed to the writer: wait for it
                deadline = time.monotonic() + 30
                # A new local run is written beside its path and moved there once block 0
                # is committed (atomic placement, issue 20): absent until then.
                while not _committed_any(path) and time.monotonic() < deadline:
                    time.sleep(0.02)
                run = tt.open_run(path)
                seen.append((run.attrs["block_size"], run.samples, run.status))
            yield x[i : i + 8]

    tt.capture(
        model,
        batches(),
        store=path,
        backend=_QuietBackend(),
        batch_size=8,
        chunk_bytes=480,  # 20 B a sample in the median array (dense): blocks of 24
        progress=False,
    )
    assert seen == [(24, 24, "capturing")]


# ----------------------------------------------------------------------------- kill -9
def test_kill_9_mid_block_then_resume(tmp_path: Path) -> None:
    """Blocks of 3 batches: a kill inside a block loses only that block; resume then stores
    each sample once, equal to an uninterrupted capture."""
    n = 120
    path = tmp_path / "run.zarr"
    model = FakeModel(size=16, channels=8)
    x, y = images(n, size=16), np.arange(n) % 3
    reference = model.forward(x)
    proc = subprocess.Popen(
        [sys.executable, str(WORKER), str(path), str(n), "0.25", "--block-size=24"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 90
    samples = 0
    while time.monotonic() < deadline and proc.poll() is None and samples < 24:
        try:
            samples = tt.open_run(path).samples
        except tt.RunNotFoundError:
            pass
        time.sleep(0.02)
    time.sleep(0.3)  # inside the next block (3 batches of 0.25 s)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()[-2000:]  # type: ignore[union-attr]
    survived = tt.open_run(path)
    # Whole blocks only, and not all of them (the kill came mid-run).
    assert survived.status == "capturing" and survived.samples % 24 == 0
    assert 24 <= survived.samples < n
    assert survived.block_size == 24
    kept = survived.sample_indices
    np.testing.assert_array_equal(survived.activation("dense").values, reference["dense"][kept])
    resumed = subprocess.run(
        [sys.executable, str(WORKER), str(path), str(n), "0", "--resume", "--block-size=8"],
        capture_output=True,
        timeout=120,
    )
    assert resumed.returncode == 0, resumed.stderr.decode()[-2000:]
    run = tt.open_run(path)
    assert run.status == "complete" and run.samples == n and run.block_size == 24
    np.testing.assert_array_equal(run.tree["sample"].values, np.arange(n))
    for key in ("block.conv", "dense", "probs"):
        np.testing.assert_array_equal(run.activation(key).values, reference[key])
    np.testing.assert_array_equal(run.labels.values, y)


# ----------------------------------------------------------------------------- Dask
@pytest.mark.slow
def test_dask_capture_with_multi_batch_blocks_is_bit_equal(tmp_path: Path) -> None:
    from distributed import Client, LocalCluster
    from distributed_models import tiny_cnn

    n, batch, block = 64, 4, 16
    x = np.random.default_rng(3).random((n, 8, 8, 3), dtype=np.float32)
    y = np.arange(n) % 3
    common: dict[str, Any] = dict(
        layers="*", gradients=True, batch_size=batch, block_size=block, progress=False
    )
    single = tt.capture(tiny_cnn(), (x, y), store=tmp_path / "single.zarr", **common)
    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True)
    client = Client(cluster)
    try:
        run = tt.capture_distributed(
            tiny_cnn, (x, y), tmp_path / "dask.zarr", client=client, **common
        )
    finally:
        client.close()
        cluster.close()
    assert run.status == "complete" and run.samples == n and run.block_size == block
    committed = zarr.open_array(tmp_path / "dask.zarr" / "committed", mode="r")[:]
    assert committed.tolist() == [block] * (n // block)
    for key in run.layers:
        np.testing.assert_array_equal(run.activation(key).values, single.activation(key).values)
        np.testing.assert_array_equal(run.gradient(key).values, single.gradient(key).values)
        got, want = run.stats(key), single.stats(key)
        for name in got.data_vars:
            np.testing.assert_array_equal(got[name].values, want[name].values)


# ----------------------------------------------------------------------------- the CLI
def test_cli_block_size_and_its_error(tmp_path: Path) -> None:
    keras = pytest.importorskip("keras")
    from click.testing import CliRunner

    from tensortap.cli import main

    inputs = keras.Input((6,), name="x")
    outputs = keras.layers.Dense(3, activation="softmax", name="dense")(inputs)
    model_path = tmp_path / "m.keras"
    keras.Model(inputs, outputs).save(model_path)
    x = np.random.default_rng(0).random((40, 6)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    runner = CliRunner()
    args = [str(model_path), str(tmp_path / "x.npy"), "--batch-size", "4", "--no-progress"]
    ok = runner.invoke(main, ["capture", *args, "-o", str(tmp_path / "r"), "--block-size", "12"])
    assert ok.exit_code == 0, ok.output
    run = tt.open_run(tmp_path / "r")
    assert run.block_size == 12 and run.samples == 40
    bad = runner.invoke(main, ["capture", *args, "-o", str(tmp_path / "b"), "--block-size", "10"])
    assert bad.exit_code == 2
    lines = bad.stderr.strip().splitlines()
    assert len(lines) == 1 and "block_size=10" in lines[0] and "Traceback" not in bad.stderr
    assert "pass a multiple such as 8 or 12" in lines[0]
    assert not (tmp_path / "b").exists()  # refused before anything was written


# ----------------------------------------------------------------------------- sharding
def test_large_blocks_are_shards_of_one_sample_chunks(tmp_path: Path) -> None:
    """A block chunk over 4 MiB becomes a shard of ~1 MiB inner chunks: plain zarr reads one
    sample of it, and a damaged inner chunk is refused by reads and found by verify."""
    import json

    from tensortap.core.errors import CorruptRunError
    from tensortap.core.store.writer import INNER_CHUNK_BYTES, inner_chunk_rows

    model, x = FakeModel(size=32, channels=256), images(24, size=32)  # 1 MiB a sample
    path = tmp_path / "r.zarr"
    run = _capture(x, path, model=model, block_size=8, gradients=False)
    meta = json.loads((path / "layers/block.conv/activation/zarr.json").read_text())
    sharding = meta["codecs"][0]
    assert sharding["name"] == "sharding_indexed"
    assert sharding["configuration"]["chunk_shape"] == [1, 32, 32, 256]
    assert inner_chunk_rows(8, INNER_CHUNK_BYTES) == 1 and inner_chunk_rows(8, 1000) == 8
    ref = model.forward(x)["block.conv"]
    plain = zarr.open_array(path / "layers/block.conv/activation", mode="r")
    np.testing.assert_array_equal(plain[13], ref[13])
    np.testing.assert_array_equal(run.activation("block.conv").isel(sample=21).values, ref[21])
    assert tt.verify(path).ok
    shard = path / "layers/block.conv/activation/c.1.0.0.0"  # block 1: samples 8-15
    data = bytearray(shard.read_bytes())
    data[3 * (INNER_CHUNK_BYTES + CHECKSUM_BYTES) + 7] ^= 0xFF  # inside sample 11
    shard.write_bytes(bytes(data))
    with pytest.raises(CorruptRunError, match=r"activation, block 1 \(samples 8-15\)"):
        tt.open_run(path).activation("block.conv").isel(sample=11).load()
    report = tt.verify(path)
    assert [(p.array, p.block) for p in report.problems] == [("layers/block.conv/activation", 1)]
