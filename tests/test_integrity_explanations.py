"""Stored explanations carry checksums like the rest of a run (issue 20): every chunk of
``/explanations/<name>`` ends with its CRC-32C, a read of a missing or damaged chunk is
``CorruptRunError``, ``tt.verify`` reports it and ``--repair`` deletes the explanation only.

Real runs on disk (the NumPy fake backend); the CRC-32C reference is computed bit by bit in
tests/test_integrity.py.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

import tensortap as tt
from tensortap.core.errors import CorruptRunError
from tensortap.core.explanation_store import read_explanation, write_explanation

sys.path.insert(0, str(Path(__file__).parent))
from fake_backend import FakeBackend, FakeModel, images  # noqa: E402
from test_integrity import _crc32c  # noqa: E402

N = 32


def _run_with_explanation(tmp_path: Path) -> tuple[tt.Run, np.ndarray]:
    path = tmp_path / "r.zarr"
    run = tt.capture(
        FakeModel(), images(N), store=path, backend=FakeBackend(), batch_size=16, progress=False
    )
    values = np.random.default_rng(3).random((N, 8, 8), dtype=np.float32)
    write_explanation(
        run,
        "saliency",
        xr.DataArray(values, dims=("sample", "height", "width"), coords={"sample": np.arange(N)}),
    )
    return tt.open_run(path), values


def _chunk(tmp_path: Path) -> Path:
    return tmp_path / "r.zarr" / "explanations" / "saliency" / "values" / "c" / "0" / "0" / "0"


def test_explanation_chunks_end_with_their_crc32c(tmp_path: Path) -> None:
    run, values = _run_with_explanation(tmp_path)
    for chunk in [_chunk(tmp_path), tmp_path / "r.zarr/explanations/saliency/sample/c/0"]:
        data = chunk.read_bytes()
        assert int.from_bytes(data[-4:], "little") == _crc32c(data[:-4])
    np.testing.assert_array_equal(read_explanation(run, "saliency").values, values)
    assert tt.verify(run.path).ok


@pytest.mark.parametrize("how", ["delete", "truncate", "overwrite"])
def test_a_damaged_explanation_is_refused_reported_and_repaired(tmp_path: Path, how: str) -> None:
    run, _ = _run_with_explanation(tmp_path)
    chunk = _chunk(tmp_path)
    data = chunk.read_bytes()
    if how == "delete":
        chunk.unlink()
    elif how == "truncate":
        chunk.write_bytes(data[: len(data) // 2])
    else:  # one byte flipped: same size, wrong checksum
        chunk.write_bytes(data[:10] + bytes([data[10] ^ 0xFF]) + data[11:])
    with pytest.raises(CorruptRunError, match=r"explanation 'saliency' .* is damaged.*tt\.explain"):
        read_explanation(run, "saliency")
    report = tt.verify(run.path)
    assert not report.ok
    assert [p.array for p in report.problems] == ["explanations/saliency/values"]
    tt.verify(run.path, repair=True)
    repaired = tt.open_run(run.path)
    assert repaired.status == "complete" and repaired.samples == N  # captured data untouched
    assert tt.verify(run.path).ok
    assert not (tmp_path / "r.zarr" / "explanations" / "saliency").exists()


def test_cli_verify_repair_names_the_deleted_explanation(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from tensortap.cli import main

    run, _ = _run_with_explanation(tmp_path)
    _chunk(tmp_path).unlink()
    result = CliRunner().invoke(main, ["verify", str(run.path), "--repair", "--no-progress"])
    assert result.exit_code == 1
    assert "explanations/saliency/values" in result.output
    assert "damaged explanations deleted (saliency)" in result.output
    assert CliRunner().invoke(main, ["verify", str(run.path), "--no-progress"]).exit_code == 0
