"""Runs that never lie (issue 20): input validation before any run exists, atomic overwrite,
resume data checks, resumable run creation, checksums on every chunk, CorruptRunError on
reads of damaged committed blocks, and ``tt.verify`` with repair.

Real runs on disk, written by the NumPy fake backend; references are independent: a
reference capture of the same data, a CRC-32C written out in the test, file hashes taken
before and after.
"""

from __future__ import annotations

import hashlib
import os
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import zarr

import tensortap as tt
from tensortap.core.errors import (
    CorruptRunError,
    DataError,
    NonFiniteInputWarning,
    OptionError,
    ResumeMismatchError,
)

sys.path.insert(0, str(Path(__file__).parent))
from fake_backend import FakeBackend, FakeModel, images  # noqa: E402

BACKEND = FakeBackend()
N, B = 80, 16  # 5 blocks
PREVIOUS_RELEASE_RUN = Path(__file__).parent / "data" / "run_before_checksums.zarr"


def _capture(model, data, store, **kw):
    kw.setdefault("progress", False)
    kw.setdefault("batch_size", B)
    kw.setdefault("gradients", True)
    # One batch a block: the cases below name blocks of B samples.  Blocks of several
    # batches: tests/test_integrity_blocks.py.
    kw.setdefault("block_size", B)
    return tt.capture(model, data, store=store, backend=BACKEND, **kw)


def _data(n: int = N, seed: int = 1):
    return images(n, seed=seed), np.arange(n) % 3


def _hashes(path: Path) -> dict[str, str]:
    """Every file of a run folder with its SHA-256 (the run's exact state on disk)."""
    return {
        str(f.relative_to(path)): hashlib.sha256(f.read_bytes()).hexdigest()
        for f in sorted(path.rglob("*"))
        if f.is_file()
    }


def _crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), bit by bit: the reference."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


def _assert_runs_equal(run: tt.Run, ref: tt.Run) -> None:
    assert run.samples == ref.samples and run.status == ref.status == "complete"
    np.testing.assert_array_equal(run.sample_indices, ref.sample_indices)
    for key in ref.layers:
        np.testing.assert_array_equal(run.activation(key).values, ref.activation(key).values)
        np.testing.assert_array_equal(run.gradient(key).values, ref.gradient(key).values)
        mine, theirs = run.stats(key), ref.stats(key)
        for name in ("count", "mean", "std", "min", "max", "histogram", "sample_mean"):
            np.testing.assert_allclose(mine[name].values, theirs[name].values, rtol=1e-12)
    np.testing.assert_array_equal(run.inputs().values, ref.inputs().values)
    np.testing.assert_array_equal(run.outputs().values, ref.outputs().values)
    np.testing.assert_array_equal(run.labels.values, ref.labels.values)


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> tt.Run:
    return _capture(FakeModel(), _data(), tmp_path_factory.mktemp("ref") / "ref.zarr")


# ---------------------------------------------------------------- validation before any run
@pytest.mark.parametrize(
    ("options", "pattern"),
    [
        ({"dtype": "int7"}, "dtype 'int7' is not allowed .* use one of float16, float32"),
        ({"dtype": "int8"}, "dtype 'int8' is not allowed"),
        ({"dtype": "bfloat16"}, "no bfloat16 data type; use one of"),
        ({"batch_size": 2.5}, r"batch_size must be an integer >= 1, got 2\.5 \(float\)"),
        ({"batch_size": "16"}, "batch_size must be an integer"),
        ({"batch_size": True}, "batch_size must be an integer"),
        ({"batch_size": 0}, "batch_size must be an integer >= 1, got 0"),
        ({"depth": 0}, "depth must be an integer >= 1"),
        ({"threads": 1.5}, "threads must be an integer"),
    ],
)
def test_bad_options_are_refused_before_any_run_exists(
    tmp_path: Path, options: dict, pattern: str
) -> None:
    path = tmp_path / "r.zarr"
    with pytest.raises(OptionError, match=pattern):
        _capture(FakeModel(), _data(20), path, **options)
    assert not path.exists() and not list(tmp_path.iterdir())


def test_float_storage_dtypes_are_accepted(tmp_path: Path) -> None:
    run = _capture(FakeModel(), _data(20), tmp_path / "r.zarr", dtype=np.float16)
    assert run.attrs["dtype"] == "float16"
    assert run.activation("dense").dtype == np.float16


def test_nonfinite_inputs_warn_with_counts_and_are_recorded(tmp_path: Path) -> None:
    x, y = _data(40)
    x[21, 0, 0, 0] = np.nan
    x[30, 1, 2, :] = np.inf  # 3 values in sample 30
    with pytest.warns(NonFiniteInputWarning, match=r"4 NaN or infinite values in 2 samples"):
        run = _capture(FakeModel(), (x, y), tmp_path / "r.zarr")
    assert run.attrs["nonfinite_inputs"] == {"values": 4, "samples": 2, "first_sample": 21}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # clean data: no warning, no record
        clean = _capture(FakeModel(), _data(20), tmp_path / "clean.zarr")
    assert "nonfinite_inputs" not in clean.attrs


def test_strict_refuses_nonfinite_inputs_and_leaves_no_run(tmp_path: Path) -> None:
    x, y = _data(20)
    x[3, 0, 0, 0] = np.nan
    path = tmp_path / "r.zarr"
    with pytest.raises(
        DataError, match=r"1 NaN or infinite values in samples 0-15 \(first: sample 3\)"
    ):
        _capture(FakeModel(), (x, y), path, strict=True)
    assert not list(tmp_path.iterdir())


def test_a_refused_capture_leaves_no_run_and_the_rerun_needs_no_overwrite(
    tmp_path: Path,
) -> None:
    path = tmp_path / "r.zarr"
    wrong = np.zeros((20, 8, 8, 4), np.float32)  # 4 channels: the model's matmul refuses
    with pytest.raises(ValueError):
        _capture(FakeModel(), wrong, path)
    assert not list(tmp_path.iterdir())
    run = _capture(FakeModel(), _data(20), path)  # no RunExistsError, no failed run in the way
    assert run.status == "complete" and run.samples == 20


# ---------------------------------------------------------------- atomic overwrite
def test_overwrite_with_bad_data_leaves_the_old_run_byte_identical(
    tmp_path: Path, reference: tt.Run
) -> None:
    path = tmp_path / "r.zarr"
    _capture(FakeModel(), _data(), path)
    before = _hashes(path)
    wrong = np.zeros((N, 8, 8, 4), np.float32)
    with pytest.raises(ValueError):
        _capture(FakeModel(), wrong, path, overwrite=True)
    assert _hashes(path) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.zarr"]  # no sibling left
    with pytest.raises(OptionError):
        _capture(FakeModel(), _data(), path, overwrite=True, dtype="int8")
    assert _hashes(path) == before
    _assert_runs_equal(tt.open_run(path), reference)


def test_overwrite_replaces_the_run_after_its_first_commit(tmp_path: Path) -> None:
    path = tmp_path / "r.zarr"
    _capture(FakeModel(), _data(), path)
    run = _capture(FakeModel(), _data(20, seed=7), path, overwrite=True)
    assert run.samples == 20 and run.path == str(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.zarr"]
    np.testing.assert_array_equal(run.inputs().values, _data(20, seed=7)[0])
    # A failure after the first commit keeps the new run's committed blocks (resumable).
    model = FakeModel()
    model.fail_at_call = 3
    with pytest.raises(RuntimeError, match="boom"):
        _capture(model, _data(), path, overwrite=True)
    failed = tt.open_run(path)
    assert failed.status == "failed" and failed.samples == 2 * B and failed.total == N


def test_overwrite_without_renameat2_renames_the_old_run_aside(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("tensortap.core.store.placement._exchange", lambda a, b: False)
    path = tmp_path / "r.zarr"
    _capture(FakeModel(), _data(), path)
    run = _capture(FakeModel(), _data(20, seed=7), path, overwrite=True)
    assert run.samples == 20 and sorted(p.name for p in tmp_path.iterdir()) == ["r.zarr"]


def test_a_failed_publish_is_an_error_and_keeps_the_old_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tensortap.core.errors import StorageError

    path = tmp_path / "r.zarr"
    _capture(FakeModel(), _data(), path)
    before = _hashes(path)

    def refuse(self: object) -> None:
        raise StorageError("cannot move the new run (test)")

    monkeypatch.setattr("tensortap.core.store.placement.Placement.publish", refuse)
    with pytest.raises(StorageError, match="cannot move the new run"):
        _capture(FakeModel(), _data(), path, overwrite=True)
    assert _hashes(path) == before and sorted(p.name for p in tmp_path.iterdir()) == ["r.zarr"]


def test_leftovers_of_a_killed_capture_are_removed(tmp_path: Path) -> None:
    dead = tmp_path / ".r.zarr.tensortap-999999999-deadbeef"  # no such process
    dead.mkdir()
    (dead / "zarr.json").write_text("{}")
    _capture(FakeModel(), _data(20), tmp_path / "r.zarr")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.zarr"]


# ---------------------------------------------------------------- resume checks the data
def _failed_run(path: Path) -> None:
    model = FakeModel()
    model.fail_at_call = 3  # blocks 0 and 1 committed
    with pytest.raises(RuntimeError):
        _capture(model, _data(), path)


def test_resume_with_data_of_another_length_is_refused_before_writing(tmp_path: Path) -> None:
    path = tmp_path / "r.zarr"
    _failed_run(path)
    before = _hashes(path)
    with pytest.raises(ResumeMismatchError, match="captured on 80 samples, the data now holds 120"):
        _capture(FakeModel(), _data(120), path, resume=True)
    assert _hashes(path) == before


def test_resume_with_other_data_of_the_same_length_is_refused(
    tmp_path: Path, reference: tt.Run
) -> None:
    path = tmp_path / "r.zarr"
    _failed_run(path)
    before = _hashes(path)
    with pytest.raises(ResumeMismatchError, match="samples 16-31 differ .* block 1"):
        _capture(FakeModel(), _data(seed=9), path, resume=True)
    assert _hashes(path) == before
    run = _capture(FakeModel(), _data(), path, resume=True)  # the right data still resumes
    _assert_runs_equal(run, reference)


def test_resume_checks_the_data_of_an_iterable_too(tmp_path: Path, reference: tt.Run) -> None:
    path = tmp_path / "r.zarr"
    _failed_run(path)
    x, y = _data()
    batches = ((x[i : i + 10], y[i : i + 10]) for i in range(0, N, 10))  # one-shot, other sizes
    run = _capture(FakeModel(), batches, path, resume=True)
    _assert_runs_equal(run, reference)


# ---------------------------------------------------------------- resumable run creation
def test_the_commit_record_is_published_after_every_array(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, reference: tt.Run
) -> None:
    """A kill while the run is created: simulated by stopping the process (no clean-up)
    just before the commit record's document is written, in place (an s3-like store)."""
    from tensortap.core.store import staging

    published: list[list[str]] = []
    original = staging.Staging.publish

    def publish(self: staging.Staging) -> None:
        published.append(list(self._arrays))
        if "committed" in self._arrays:
            raise KeyboardInterrupt  # the "kill": nothing after this runs
        original(self)

    path = tmp_path / "r.zarr"
    monkeypatch.setattr(staging.Staging, "publish", publish)
    # Written in place (as on s3), and no clean-up after the "kill": what a kill leaves.
    monkeypatch.setattr("tensortap.core.store.new_run.Placement.beside", lambda location: None)
    monkeypatch.setattr("tensortap.core.engine._Finish.failed", lambda self, writer: None)
    with pytest.raises(KeyboardInterrupt):
        _capture(FakeModel(), _data(), path)
    assert published[-1] == ["committed"] and "committed" not in published[0]
    assert "committed" not in os.listdir(path) and "sample" in os.listdir(path)
    monkeypatch.undo()
    run = _capture(FakeModel(), _data(), path, resume=True)
    _assert_runs_equal(run, reference)


# ---------------------------------------------------------------- checksums on every chunk
def test_every_chunk_ends_with_its_crc32c(tmp_path: Path) -> None:
    path = tmp_path / "r.zarr"
    _capture(FakeModel(), _data(), path)
    chunks = [f for f in path.rglob("c.*") if f.is_file()]
    assert len(chunks) > 50
    for f in chunks:
        data = f.read_bytes()
        if len(data) <= 4096:  # the bitwise reference is slow: small chunks with it
            assert _crc32c(data[:-4]) == int.from_bytes(data[-4:], "little"), f
    for meta in path.rglob("zarr.json"):
        if '"node_type": "array"' in meta.read_text():
            array = zarr.open_array(meta.parent, mode="r")
            assert type(array.metadata.codecs[-1]).__name__ == "Crc32cCodec", meta
            array[...]  # plain zarr decodes and checks every chunk


@pytest.mark.parametrize("rows", [3, 1 << 16])  # small, and large enough for O_DIRECT
def test_whole_chunks_with_checksums_are_byte_identical_to_zarrs(tmp_path: Path, rows: int) -> None:
    from tensortap.core.store.direct_io import DirectLocalStore
    from tensortap.core.store.whole_chunks import WholeChunks

    spec = dict(
        shape=(2 * rows + 1, 5),
        chunks=(rows, 5),
        dtype="float32",
        compressors=zarr.codecs.Crc32cCodec(),
        fill_value=np.nan,
        chunk_key_encoding={"name": "default", "separator": "."},
    )
    ours = zarr.create_array(DirectLocalStore(tmp_path / "ours"), **spec)
    ref = zarr.create_array(zarr.storage.LocalStore(tmp_path / "ref"), **spec)
    writer = WholeChunks(ours.store)
    values = np.random.default_rng(0).standard_normal(spec["shape"]).astype(np.float32)
    for sel in (slice(0, rows), slice(rows, 2 * rows), slice(2 * rows, 2 * rows + 1)):
        assert writer.write(ours, sel, values[sel])
        ref[sel] = values[sel]
    assert _hashes(tmp_path / "ours") == _hashes(tmp_path / "ref")
    np.testing.assert_array_equal(zarr.open_array(tmp_path / "ours", mode="r")[:], values)


# ---------------------------------------------------------------- damaged committed blocks
DAMAGED = {
    "activation": ("layers/block.conv/activation/c.2.0.0.0", "layer 'block.conv' activation"),
    "gradient": ("layers/dense/gradient/c.2.0", "layer 'dense' gradient"),
    "stats": ("stats/block_moments/c.2.0.0", "statistics block_moments (every layer)"),
    "commit record": ("committed/c.2", "the commit record"),
}


def _damage(path: Path, chunk: str, how: str) -> None:
    f = path / chunk
    data = f.read_bytes()
    if how == "delete":
        f.unlink()
    elif how == "truncate":
        f.write_bytes(data[: len(data) // 2])
    else:  # overwrite one byte in place: same size, wrong checksum
        f.write_bytes(data[:1] + bytes([data[1] ^ 0xFF]) + data[2:])


def _read(run: tt.Run, what: str) -> None:
    if what == "activation":
        run.activation("block.conv").load()
    elif what == "gradient":
        run.gradient("dense").load()
    elif what == "stats":
        run.stats("dense")


@pytest.mark.parametrize("how", ["delete", "truncate", "overwrite"])
@pytest.mark.parametrize("what", list(DAMAGED))
def test_damaged_chunk_is_reported_then_repaired_and_resumed(
    tmp_path: Path, reference: tt.Run, what: str, how: str
) -> None:
    path = tmp_path / "r.zarr"
    _capture(FakeModel(), _data(), path)
    chunk, where = DAMAGED[what]
    _damage(path, chunk, how)
    # open_run / reads: one CorruptRunError naming the place, the block and the fix.
    with pytest.raises(CorruptRunError) as caught:
        _read(tt.open_run(path), what)
    message = str(caught.value)
    if what == "commit record" and how == "delete":
        assert "commit record counts 64 committed samples but the run's attrs record 80" in (
            message
        )
    else:
        assert f"{where}, block 2" in message, message
        if what != "commit record":
            assert "(samples 32-47)" in message
    assert "tensortap verify" in message and "--resume" in message
    # verify: one problem, on block 2.
    report = tt.verify(path)
    assert not report.ok and [(p.array, p.block) for p in report.problems] == [
        (chunk.rsplit("/", 1)[0], 2)
    ]
    assert "block" in report.table().splitlines()[0]
    # repair marks block 2 uncommitted; the run opens; resume recomputes exactly it.
    repaired = tt.verify(path, repair=True)
    assert repaired.repaired == (2,)
    after = tt.open_run(path)
    assert after.status == "failed" and after.samples == N - B
    assert tt.verify(path).ok
    model = FakeModel()
    run = _capture(model, _data(), path, resume=True)
    assert model.calls == 1  # block 2 only
    _assert_runs_equal(run, reference)
    assert tt.verify(path).ok


def test_verify_finds_missing_arrays_and_attrs_disagreements(tmp_path: Path) -> None:
    import shutil

    path = tmp_path / "r.zarr"
    _capture(FakeModel(), _data(), path)
    assert tt.verify(path).ok
    shutil.rmtree(path / "layers" / "dense" / "gradient")
    report = tt.verify(path)
    assert [(p.array, p.problem) for p in report.problems] == [
        ("layers/dense/gradient", "array missing")
    ]
    assert report.unrepairable == report.problems
    shutil.rmtree(path / "committed")
    problems = {p.problem for p in tt.verify(path).problems}
    assert "the commit record is missing" in problems
    with pytest.raises(CorruptRunError, match="counts 0 committed samples but the run's attrs"):
        tt.open_run(path)


# ---------------------------------------------------------------- the previous release
def test_a_run_of_the_previous_release_opens_and_verifies(tmp_path: Path) -> None:
    """tests/data/run_before_checksums.zarr was written by the release before issue 20
    (no checksums, no input digests): 12 samples of a 4x4 fake model, blocks of 4."""
    import shutil

    path = tmp_path / "old.zarr"
    shutil.copytree(PREVIOUS_RELEASE_RUN, path)
    run = tt.open_run(path)
    assert run.status == "complete" and run.samples == 12 and run.attrs["schema"] == 1
    model = FakeModel(size=4, channels=2, units=3)
    x = images(12, size=4)
    np.testing.assert_allclose(run.activation("dense").values, model.forward(x)["dense"])
    # Schema 1 kept statistics in each layer's group: they still read, against NumPy.
    dense = model.forward(x)["dense"].astype(np.float64)
    stats = run.stats("dense")
    np.testing.assert_allclose(stats["mean"].values, dense.mean(0), rtol=1e-6)
    np.testing.assert_allclose(stats["sample_max"].values, dense, rtol=1e-6)
    assert tt.verify(path).ok
    (path / "layers" / "dense" / "activation" / "c.1.0").unlink()
    with pytest.raises(CorruptRunError, match=r"block 1 \(samples 4-7\): chunk missing"):
        tt.open_run(path).activation("dense").load()


@pytest.mark.parametrize("options", [{"sharded": True}, {"codec": "lz4"}])
@pytest.mark.parametrize("how", ["truncate", "overwrite"])
def test_damaged_sharded_or_compressed_chunks_are_reported(
    tmp_path: Path, options: dict, how: str
) -> None:
    path = tmp_path / "r.zarr"
    _capture(FakeModel(), _data(48), path, gradients=False, **options)
    assert tt.verify(path).ok and tt.open_run(path).activation("block.conv").load() is not None
    _damage(path, "layers/block.conv/activation/c.1.0.0.0", how)
    with pytest.raises(CorruptRunError, match=r"activation, block 1 \(samples 16-31\)"):
        tt.open_run(path).activation("block.conv").load()
    report = tt.verify(path)
    assert [(p.array, p.block) for p in report.problems] == [("layers/block.conv/activation", 1)]


def test_a_failed_run_whose_commit_record_vanished_is_corrupt(tmp_path: Path) -> None:
    import shutil

    path = tmp_path / "r.zarr"
    _failed_run(path)
    assert tt.open_run(path).samples == 2 * B
    shutil.rmtree(path / "committed")
    with pytest.raises(CorruptRunError, match=r"counts 0 .* attrs record 32 \(failed\)"):
        tt.open_run(path)


def test_a_run_of_another_schema_is_refused_with_the_fix(tmp_path: Path) -> None:
    import json
    import shutil

    path = tmp_path / "future.zarr"
    shutil.copytree(PREVIOUS_RELEASE_RUN, path)
    root = json.loads((path / "zarr.json").read_text())
    root["attributes"]["tensortap"]["schema"] = 3
    (path / "zarr.json").write_text(json.dumps(root))
    with pytest.raises(
        CorruptRunError, match="has schema 3; this tensortap reads schemas 1 and 2 — open"
    ):
        tt.open_run(path)


def _edges_reference(values: np.ndarray, bins: int = 128) -> np.ndarray:
    """The documented edge rule from NumPy's finite minimum and maximum: the range widened
    by half its span each side, a lower end at exactly 0 kept."""
    finite = values[np.isfinite(values)].astype(np.float64)
    low, high = float(finite.min()), float(finite.max())
    span = high - low if high > low else max(abs(high), 1.0)
    return np.linspace(0.0 if low == 0.0 else low - span / 2, high + span / 2, bins + 1)


def test_nonfinite_in_the_first_batch_is_reported_and_left_out_of_the_edges(
    tmp_path: Path,
) -> None:
    x, y = _data(40)
    x[0, 0, 0, 0] = np.nan  # the first batch of the first block
    x[5, 1, 1, 1] = np.inf
    x[5, 2, 2, 2] = -np.inf  # +inf and -inf: a NaN sum, still counted as two values
    with pytest.warns(NonFiniteInputWarning, match=r"3 NaN or infinite values in 2 samples"):
        run = _capture(FakeModel(), (x, y), tmp_path / "r.zarr")
    assert run.attrs["nonfinite_inputs"] == {"values": 3, "samples": 2, "first_sample": 0}
    first = slice(0, run.block_size)
    for key in run.layers:
        values = np.asarray(run.activation(key)[first])
        assert not np.isfinite(values).all()  # the NaN reached this layer's first batch
        np.testing.assert_array_equal(run.stats(key)["bin_edges"].values, _edges_reference(values))


def test_finite_inputs_whose_sum_overflows_are_not_reported(tmp_path: Path) -> None:
    x, y = _data(20)
    x[:, 0, 0, 0] = np.finfo(np.float32).max  # finite, but their float32 sum is inf
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        run = _capture(FakeModel(), (x, y), tmp_path / "r.zarr")
    assert "nonfinite_inputs" not in run.attrs
