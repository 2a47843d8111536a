"""Run store: layout, round trip, lifecycle and errors, with a NumPy fake backend."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import zarr

import tensortap as tt
from tensortap.core.errors import (
    CorruptRunError,
    DataError,
    EmptyDataError,
    LayerNotFoundError,
    NoGradientsError,
    ResumeMismatchError,
    RunExistsError,
    RunNotFoundError,
    StorageError,
)

sys.path.insert(0, str(Path(__file__).parent))
from fake_backend import FakeBackend, FakeModel, images  # noqa: E402

BACKEND = FakeBackend()


def _capture(model, data, store, **kw):
    kw.setdefault("progress", False)
    kw.setdefault("batch_size", 16)
    # One batch a block, as these layout tests pin it (blocks of several batches:
    # tests/test_block_size.py).
    kw.setdefault("block_size", kw["batch_size"])
    return tt.capture(model, data, store=store, backend=BACKEND, **kw)


def test_round_trip_layout_and_plain_xarray(tmp_path: Path) -> None:
    model, x = FakeModel(), images(40)
    y = np.arange(40) % 3
    path = tmp_path / "run.zarr"
    run = _capture(model, (x, y), path, gradients=True)
    ref = model.forward(x)
    assert run.status == "complete" and run.samples == 40 and run.total == 40
    assert run.layers == ("block.conv", "dense", "probs")
    act = run.activation("block.conv")
    assert act.dims == ("sample", "height", "width", "channel")
    assert act.chunks[0][0] == 16  # one chunk per batch
    np.testing.assert_array_equal(act.values, ref["block.conv"])
    np.testing.assert_array_equal(run.activation("dense").values, ref["dense"])
    scale = (ref["probs"].argmax(1) + 1).astype(np.float32)[:, None]
    np.testing.assert_array_equal(run.gradient("dense").values, ref["dense"] * scale - 1)
    np.testing.assert_array_equal(run.inputs().values, x)
    np.testing.assert_array_equal(run.outputs("probs").values, ref["probs"])
    np.testing.assert_array_equal(run.labels.values, y)
    np.testing.assert_array_equal(run.predictions.values, ref["probs"].argmax(1))
    np.testing.assert_array_equal(act["label"].values, y)
    assert run.node("block.conv")["layer_type"] == "Conv2D"
    assert run.attrs["score"] == "probabilities (fake)"
    # Plain xarray, no tensortap involved.
    tree = xr.open_datatree(path, engine="zarr", consolidated=False)
    assert tree["layers/block.conv/activation"].dims == act.dims
    assert "label" in tree.coords and "prediction" in tree.coords
    # Every array names its dimensions.
    group = zarr.open_group(path, mode="r")
    for name, array in group.arrays():
        assert array.metadata.dimension_names, name
    for _, sub in group.groups():
        for _, child in sub.members(max_depth=None):
            if isinstance(child, zarr.Array):
                assert child.metadata.dimension_names is not None, child.path
    assert group["layers/block.conv"].attrs["long_name"] == "conv (Conv2D)"


def test_stats_from_store_match_numpy(tmp_path: Path) -> None:
    model, x = FakeModel(), images(50)
    run = _capture(model, x, tmp_path / "r.zarr", dtype="float16")
    values = model.forward(x)["block.conv"].astype(np.float64)
    stats = run.stats("block.conv")
    assert stats["count"].dims == ("channel",)
    np.testing.assert_allclose(stats["mean"], values.mean(axis=(0, 1, 2)), rtol=1e-9)
    np.testing.assert_allclose(stats["std"], values.std(axis=(0, 1, 2)), rtol=1e-8)
    np.testing.assert_array_equal(stats["max"], values.max(axis=(0, 1, 2)))
    assert int(stats["histogram"].sum() + stats["underflow"] + stats["overflow"]) == values.size
    assert stats["bin_edges"].size == stats["histogram"].size + 1
    np.testing.assert_allclose(stats["sample_max"], values.max(axis=(1, 2)))
    # dtype narrowing is storage only: stats come from float32 values
    assert run.activation("block.conv").dtype == np.float16
    dense = run.stats("dense")
    assert "channel" in dense.dims and dense.attrs["channel_dim"] == "unit"


def test_in_memory_run_and_iterable_rebatching() -> None:
    model, x = FakeModel(), images(37)
    chunks = [x[:5], x[5:25], x[25:]]  # batches of any size are re-cut into blocks
    run = _capture(model, iter(chunks), None, batch_size=8)
    assert run.path == "<memory>" and run.samples == 37
    # one chunk per block of 8 (in memory the arrays are lazy without Dask)
    assert run.activation("dense").encoding["chunks"][0] == 8
    np.testing.assert_array_equal(run.activation("dense").values, model.forward(x)["dense"])
    assert run.total is None


def test_sharded_run(tmp_path: Path) -> None:
    model, x = FakeModel(), images(20)
    run = _capture(model, x, tmp_path / "s.zarr", sharded=True, codec="zstd:3")
    arr = zarr.open_array(tmp_path / "s.zarr", path="layers/block.conv/activation", mode="r")
    assert arr.shards == (16, 8, 8, 4) and arr.chunks == (1, 8, 8, 4)
    np.testing.assert_array_equal(
        run.activation("block.conv").values, model.forward(x)["block.conv"]
    )


def test_existing_run_is_never_clobbered(tmp_path: Path) -> None:
    model, x = FakeModel(), images(10)
    path = tmp_path / "r.zarr"
    _capture(model, x, path)
    with pytest.raises(RunExistsError, match="overwrite=True"):
        _capture(model, x, path)
    run = _capture(model, x[:4], path, overwrite=True)
    assert run.samples == 4
    other = tmp_path / "photos"
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    with pytest.raises(RunExistsError, match="not a tensortap run"):
        _capture(model, x, other, overwrite=True)
    assert (other / "keep.txt").read_text() == "mine"


def test_failure_keeps_committed_and_resume_finishes_once(tmp_path: Path) -> None:
    model, x = FakeModel(), images(70)
    path = tmp_path / "r.zarr"
    model.fail_at_call = 3
    with pytest.raises(RuntimeError, match="boom"):
        _capture(model, x, path, gradients=True)
    failed = tt.open_run(path)
    assert failed.status == "failed" and failed.samples == 32
    model.fail_at_call = None
    model.calls = 0
    run = _capture(model, x, path, gradients=True, resume=True)
    assert run.status == "complete" and run.samples == 70
    assert model.calls == 3  # blocks 2..4 only
    np.testing.assert_array_equal(run.tree["sample"].values, np.arange(70))
    np.testing.assert_array_equal(run.activation("dense").values, model.forward(x)["dense"])
    again = _capture(model, x, path, gradients=True, resume=True)  # nothing left to do
    assert again.samples == 70 and model.calls == 3


def test_resume_mismatch(tmp_path: Path) -> None:
    model, x = FakeModel(), images(20)
    path = tmp_path / "r.zarr"
    _capture(model, x, path, layers=["dense"])
    with pytest.raises(ResumeMismatchError, match="layers"):
        _capture(model, x, path, layers=["dense", "probs"], resume=True)
    with pytest.raises(ResumeMismatchError, match="dtype"):
        _capture(model, x, path, layers=["dense"], dtype="float16", resume=True)
    with pytest.raises(ResumeMismatchError, match="fingerprint"):
        _capture(FakeModel(seed=5), x, path, layers=["dense"], resume=True)


def test_reader_errors(tmp_path: Path) -> None:
    with pytest.raises(RunNotFoundError):
        tt.open_run(tmp_path / "missing.zarr")
    (tmp_path / "empty").mkdir()
    with pytest.raises(RunNotFoundError):
        tt.open_run(tmp_path / "empty")
    zarr.open_group(tmp_path / "plain.zarr", mode="w")
    with pytest.raises(RunNotFoundError, match="not a tensortap run"):
        tt.open_run(tmp_path / "plain.zarr")
    model, x = FakeModel(), images(20)
    path = tmp_path / "r.zarr"
    run = _capture(model, x, path)
    with pytest.raises(LayerNotFoundError, match="dense"):
        run.activation("dens")
    with pytest.raises(NoGradientsError):
        run.gradient("dense")
    meta = path / "layers" / "dense" / "activation" / "zarr.json"
    meta.write_text(meta.read_text()[:40])
    with pytest.raises(CorruptRunError, match="damaged or truncated"):
        tt.open_run(path)
    root = path / "zarr.json"
    root.write_text(root.read_text()[:-30])
    with pytest.raises(CorruptRunError, match="damaged"):
        tt.open_run(path)


def test_storage_and_data_errors(tmp_path: Path) -> None:
    model, x = FakeModel(), images(10)
    target = Path("/sys/tensortap-readonly/run.zarr") if os.geteuid() == 0 else None
    if target is None:
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o555)
        target = ro / "run.zarr"
    with pytest.raises(StorageError, match="writable"):
        _capture(model, x, target)
    with pytest.raises(EmptyDataError):
        _capture(model, x[:0], tmp_path / "e.zarr")
    assert not (tmp_path / "e.zarr").exists()
    with pytest.raises(DataError, match="9 labels for 10 samples"):
        _capture(model, (x, np.zeros(9)), tmp_path / "l.zarr")


def test_reader_sees_committed_blocks_only(tmp_path: Path) -> None:
    """Arrays of block 1 written but not committed: the reader shows block 0 only."""
    from tensortap.core.pipeline import Block, WritePipeline
    from tensortap.core.stats import choose_edges
    from tensortap.core.store import RunSettings, RunWriter, open_location

    model, x = FakeModel(), images(32)
    graph = BACKEND.graph(model)
    nodes = graph.nodes[:2]
    settings = RunSettings(
        "fake",
        {"name": "m"},
        "f",
        tuple(n.key for n in nodes),
        False,
        None,
        16,
        "predicted",
        total=32,
        inputs=("image",),
        outputs=("probs",),
    )
    location = open_location(tmp_path / "r.zarr", read_only=False)
    writer = RunWriter.open(location, settings)
    session = BACKEND.session(model, nodes)
    results = [session.run({"image": x[i : i + 16]}) for i in (0, 16)]
    writer.create_arrays(
        capacity=32,
        nodes=nodes,
        activations=results[0].activations,
        outputs=results[0].outputs,
        output_specs=graph.outputs,
        inputs={"image": x[:16]},
        input_specs=graph.inputs,
        labels=None,
        predictions=True,
        edges={k: choose_edges(v) for k, v in results[0].activations.items()},
    )
    pipe = WritePipeline(writer, nodes)
    pipe.submit(Block(0, results[0], {"image": x[:16]}, None, None))
    pipe._write(Block(16, results[1], {"image": x[16:]}, None, None))  # written, not committed
    pipe.close()
    run = tt.open_run(tmp_path / "r.zarr")
    assert run.status == "capturing" and run.samples == 16
    assert run.activation("dense").shape[0] == 16
    assert run.stats("dense")["count"].values.tolist() == [16] * 5
    writer.commit(16, 16)
    assert run.refresh().samples == 32


def test_commit_record_is_one_object_per_block(tmp_path: Path) -> None:
    model, x = FakeModel(), images(40)
    _capture(model, x, tmp_path / "r.zarr")
    record = json.loads((tmp_path / "r.zarr" / "committed" / "zarr.json").read_text())
    assert record["chunk_grid"]["configuration"]["chunk_shape"] == [1]
    assert zarr.open_array(tmp_path / "r.zarr", path="committed", mode="r")[:].tolist() == [
        16,
        16,
        8,
    ]
