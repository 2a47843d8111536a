"""``capture_distributed`` follows tt.capture's integrity rules (issue 20): an overwrite leaves
the old run untouched until block 0 is committed, and a resume with other data is
``ResumeMismatchError`` before anything is written.

A real multi-process ``LocalCluster`` (two workers); the old run's files are hashed before
and after, references are single-process captures of the same data.
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import tensortap as tt
from tensortap.core.errors import OptionError, ResumeMismatchError

pytest.importorskip("tensorflow")
distributed = pytest.importorskip("distributed")

sys.path.insert(0, str(Path(__file__).parent))  # workers unpickle the factory from here
from distributed_models import tiny_cnn, two_worker_client  # noqa: E402

pytestmark = pytest.mark.slow

N, B = 32, 8  # 4 blocks: the coordinator writes block 0, the workers the other 3
COMMON = dict(layers=["conv", "dense"], batch_size=B, block_size=B, progress=False)


def _hashes(path: Path) -> dict[str, str]:
    return {
        str(f.relative_to(path)): hashlib.sha256(f.read_bytes()).hexdigest()
        for f in sorted(path.rglob("*"))
        if f.is_file()
    }


def _x(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).random((N, 8, 8, 3), dtype=np.float32)


@pytest.fixture(scope="module")
def client() -> Iterator[Any]:
    with two_worker_client() as c:
        yield c


def test_a_failed_overwrite_keeps_the_old_run_and_a_good_one_replaces_it(
    client: Any, tmp_path: Path
) -> None:
    path = tmp_path / "r.zarr"
    tt.capture(tiny_cnn(), _x(1), store=path, **COMMON)
    before = _hashes(path)
    poisoned = _x(2)
    poisoned[3, 0, 0, 0] = np.nan  # block 0 fails in the coordinator (FiniteGuard)
    with pytest.raises(Exception, match="poisoned sample"):
        tt.capture_distributed(tiny_cnn, poisoned, path, client=client, overwrite=True, **COMMON)
    assert _hashes(path) == before
    with pytest.raises(OptionError, match="dtype 'int8' is not allowed"):
        tt.capture_distributed(
            tiny_cnn, _x(2), path, client=client, overwrite=True, dtype="int8", **COMMON
        )
    assert _hashes(path) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.zarr"]  # no sibling left
    run = tt.capture_distributed(tiny_cnn, _x(2), path, client=client, overwrite=True, **COMMON)
    reference = tt.capture(tiny_cnn(), _x(2), store=tmp_path / "ref.zarr", **COMMON)
    assert run.status == "complete" and run.samples == N
    for key in COMMON["layers"]:
        np.testing.assert_array_equal(run.activation(key).values, reference.activation(key).values)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.zarr", "ref.zarr"]
    assert tt.verify(path).ok


def test_a_resume_with_other_data_is_refused_before_writing(client: Any, tmp_path: Path) -> None:
    path = tmp_path / "r.zarr"
    poisoned = _x(1)
    poisoned[2 * B + 1, 0, 0, 0] = np.nan  # block 2 fails on its worker
    with pytest.raises(Exception, match="poisoned sample"):
        tt.capture_distributed(tiny_cnn, poisoned, path, client=client, **COMMON)
    before = _hashes(path)
    assert tt.open_run(path).status == "failed"
    with pytest.raises(
        ResumeMismatchError, match=r"samples 0-7 differ .* \(input digest of block 0\)"
    ):
        tt.capture_distributed(tiny_cnn, _x(5), path, client=client, resume=True, **COMMON)
    assert _hashes(path) == before
    run = tt.capture_distributed(tiny_cnn, _x(1), path, client=client, resume=True, **COMMON)
    assert run.status == "complete" and run.samples == N
    reference = tt.capture(tiny_cnn(), _x(1), store=tmp_path / "ref.zarr", **COMMON)
    for key in COMMON["layers"]:
        np.testing.assert_array_equal(run.activation(key).values, reference.activation(key).values)
