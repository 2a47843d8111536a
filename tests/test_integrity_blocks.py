"""Integrity (issue 20) with storage blocks of several compute batches (issue 12).

Blocks of ``S = 2·B`` samples: a checksum covers a block's whole chunk, verify and repair
name and uncommit whole blocks of the run's block size, a resume compares the digest of the
whole last committed block (read from several batches of the data), and an atomic
overwrite publishes a run whose block size was decided by bytes.  Real runs on disk, from
the NumPy fake backend; references are independent captures of the same data.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import numpy as np
import pytest
import zarr

import tensortap as tt
from tensortap.core.errors import CorruptRunError, ResumeMismatchError
from tensortap.core.store.checksums import CHECKSUM_BYTES

sys.path.insert(0, str(Path(__file__).parent))
from fake_backend import FakeBackend, FakeModel, images  # noqa: E402

BACKEND = FakeBackend()
N, B, S = 80, 8, 32  # blocks of 4 batches: [32, 32, 16]


def _capture(model, data, store, **kw):
    kw.setdefault("progress", False)
    kw.setdefault("batch_size", B)
    kw.setdefault("gradients", True)
    return tt.capture(model, data, store=store, backend=BACKEND, **kw)


def _data(n: int = N, seed: int = 1):
    return images(n, seed=seed), np.arange(n) % 3


def _hashes(path: Path) -> dict[str, str]:
    return {
        str(f.relative_to(path)): hashlib.sha256(f.read_bytes()).hexdigest()
        for f in sorted(path.rglob("*"))
        if f.is_file()
    }


def _assert_runs_equal(run: tt.Run, ref: tt.Run) -> None:
    assert run.samples == ref.samples == N and run.status == ref.status == "complete"
    for key in ref.layers:
        np.testing.assert_array_equal(run.activation(key).values, ref.activation(key).values)
        np.testing.assert_array_equal(run.gradient(key).values, ref.gradient(key).values)
        np.testing.assert_allclose(
            run.stats(key)["histogram"].values, ref.stats(key)["histogram"].values
        )
    np.testing.assert_array_equal(run.outputs().values, ref.outputs().values)


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> tt.Run:
    # An uninterrupted capture with the same blocks (the histogram edges come from block 0).
    path = tmp_path_factory.mktemp("ref") / "ref.zarr"
    return _capture(FakeModel(), _data(), path, block_size=S)


def test_a_multi_batch_chunk_ends_with_the_crc32c_of_the_whole_block(tmp_path: Path) -> None:
    path = tmp_path / "r.zarr"
    run = _capture(FakeModel(), _data(), path, block_size=S)
    assert run.block_size == S
    assert zarr.open_array(path / "committed", mode="r")[:].tolist() == [32, 32, 16]
    import google_crc32c

    f = path / "layers/block.conv/activation/c.1.0.0.0"
    data = f.read_bytes()
    values = np.asarray(run.activation("block.conv").values[S : 2 * S], dtype="<f4")
    assert data[:-CHECKSUM_BYTES] == values.tobytes()  # the block's 4 batches, one chunk
    assert int.from_bytes(data[-CHECKSUM_BYTES:], "little") == google_crc32c.value(
        data[:-CHECKSUM_BYTES]
    )


def test_damage_in_a_multi_batch_block_is_repaired_as_a_whole_block(
    tmp_path: Path, reference: tt.Run
) -> None:
    path = tmp_path / "r.zarr"
    _capture(FakeModel(), _data(), path, block_size=S)
    chunk = path / "layers/dense/gradient/c.1.0"
    data = chunk.read_bytes()
    chunk.write_bytes(data[:1] + bytes([data[1] ^ 0xFF]) + data[2:])
    with pytest.raises(CorruptRunError, match=r"block 1 \(samples 32-63\)"):
        tt.open_run(path).gradient("dense").load()
    report = tt.verify(path)
    assert [(p.array, p.block) for p in report.problems] == [("layers/dense/gradient", 1)]
    assert tt.verify(path, repair=True).repaired == (1,)
    after = tt.open_run(path)
    assert after.samples == N - S
    np.testing.assert_array_equal(after.sample_indices, np.r_[np.arange(0, S), np.arange(2 * S, N)])
    model = FakeModel()
    run = _capture(model, _data(), path, resume=True)
    assert model.calls == S // B  # block 1's four batches, nothing else
    _assert_runs_equal(run, reference)
    assert tt.verify(path).ok


def _failed_run(path: Path) -> None:
    model = FakeModel()
    model.fail_at_call = 2 * S // B + 1  # blocks 0 and 1 committed (8 batches)
    with pytest.raises(RuntimeError):
        _capture(model, _data(), path, block_size=S)
    assert tt.open_run(path).samples == 2 * S


def test_resume_compares_the_digest_of_the_whole_last_committed_block(
    tmp_path: Path, reference: tt.Run
) -> None:
    path = tmp_path / "r.zarr"
    _failed_run(path)
    before = _hashes(path)
    # Other data that agrees with the run on the first batch of block 1, not on its last:
    # a digest of one batch would let it through.
    x, y = _data()
    other = x.copy()
    other[2 * S - 1] += 1.0
    with pytest.raises(ResumeMismatchError, match="samples 32-63 differ .* block 1"):
        _capture(FakeModel(), (other, y), path, resume=True)
    assert _hashes(path) == before
    model = FakeModel()
    run = _capture(model, _data(), path, resume=True, batch_size=4)  # the run's batch wins
    assert run.block_size == S and model.calls == (N - 2 * S) // B
    _assert_runs_equal(run, reference)


def test_resume_of_an_iterable_reads_the_committed_block_then_continues(
    tmp_path: Path, reference: tt.Run
) -> None:
    path = tmp_path / "r.zarr"
    _failed_run(path)
    x, y = _data()
    pieces = ((x[i : i + 10], y[i : i + 10]) for i in range(0, N, 10))  # one-shot, re-cut
    run = _capture(FakeModel(), pieces, path, resume=True)
    _assert_runs_equal(run, reference)


def test_atomic_overwrite_publishes_a_run_sized_by_bytes(tmp_path: Path) -> None:
    path = tmp_path / "r.zarr"
    _capture(FakeModel(), _data(), path, block_size=B)
    before = _hashes(path)
    wrong = np.zeros((N, 8, 8, 4), np.float32)  # not what the model takes: refused
    with pytest.raises(ValueError):
        _capture(FakeModel(), wrong, path, overwrite=True, chunk_bytes=200 * 1024)
    assert _hashes(path) == before
    run = _capture(FakeModel(), _data(), path, overwrite=True, chunk_bytes=200 * 1024)
    assert run.block_size > B and run.block_size % B == 0  # decided from the bytes
    assert tt.open_run(path).attrs["block_size"] == run.block_size
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.zarr"]
    assert tt.verify(path).ok
