"""``capture_distributed`` reports NaN/Inf inputs as ``tt.capture`` does (issue 20).

Counts are made on the workers and merged by the coordinator: one warning, and the run's
``nonfinite_inputs`` attr equal to counts computed here with NumPy; ``strict=True`` refuses a
poisoned first batch before the run exists and a poisoned later block with ``DataError``.
A real multi-process ``LocalCluster`` (two workers).
"""

from __future__ import annotations

import re
import subprocess
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import tensortap as tt
from tensortap.core.errors import DataError, NonFiniteInputWarning

pytest.importorskip("tensorflow")
distributed = pytest.importorskip("distributed")

sys.path.insert(0, str(Path(__file__).parent))  # workers unpickle the factory from here
from distributed_models import tiny_cnn_unguarded, two_worker_client  # noqa: E402

pytestmark = pytest.mark.slow

N, B = 32, 8  # 4 blocks: the coordinator writes block 0, the workers the other 3
COMMON = dict(layers=["conv", "dense"], batch_size=B, block_size=B, progress=False)


@pytest.fixture(scope="module")
def client() -> Iterator[Any]:
    with two_worker_client() as c:
        yield c


def _x() -> np.ndarray:
    return np.random.default_rng(0).random((N, 8, 8, 3), dtype=np.float32)


def _expected(x: np.ndarray) -> dict[str, int]:
    bad = ~np.isfinite(x).reshape(len(x), -1)
    per_sample = bad.sum(axis=1)
    return {
        "values": int(bad.sum()),
        "samples": int((per_sample > 0).sum()),
        "first_sample": int(np.flatnonzero(per_sample)[0]),
    }


def test_worker_counts_are_merged_into_one_warning_and_the_attrs(
    client: Any, tmp_path: Path
) -> None:
    x = _x()
    x[3, 0, 0, 0] = np.nan  # block 0: the coordinator's
    x[13, 2, :, 1] = np.inf  # block 1, 8 values
    x[30, 1, 1, :] = -np.inf  # block 3, 3 values
    expected = _expected(x)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run = tt.capture_distributed(
            tiny_cnn_unguarded, x, tmp_path / "r.zarr", client=client, **COMMON
        )
    ours = [w for w in caught if issubclass(w.category, NonFiniteInputWarning)]
    assert len(ours) == 1, [str(w.message) for w in ours]
    assert f"{expected['values']} NaN or infinite values in {expected['samples']} samples" in str(
        ours[0].message
    )
    assert ours[0].filename == __file__  # points at this call
    assert run.status == "complete"
    assert tt.open_run(tmp_path / "r.zarr").attrs["nonfinite_inputs"] == expected


def test_strict_refuses_a_poisoned_first_batch_before_the_run_exists(
    client: Any, tmp_path: Path
) -> None:
    x = _x()
    x[5, 1, 1, 1] = np.nan
    path = tmp_path / "r.zarr"
    with pytest.raises(
        DataError, match=r"1 NaN or infinite values in samples 0-7 \(first: sample 5\)"
    ):
        tt.capture_distributed(tiny_cnn_unguarded, x, path, client=client, strict=True, **COMMON)
    assert not path.exists()


def test_strict_fails_a_later_block_with_data_error(client: Any, tmp_path: Path) -> None:
    x = _x()
    x[20, 0, 0, :] = np.inf  # block 2, on a worker
    path = tmp_path / "r.zarr"
    with pytest.raises(
        DataError, match=r"3 NaN or infinite values in samples 16-23 \(first: sample 20\)"
    ):
        tt.capture_distributed(tiny_cnn_unguarded, x, path, client=client, strict=True, **COMMON)
    run = tt.open_run(path)
    assert run.status == "failed"
    assert "nonfinite_inputs" not in run.attrs  # refused, not recorded


def test_cli_workers_strict_ends_in_the_error_line_without_worker_tracebacks(
    tmp_path: Path,
) -> None:
    keras = pytest.importorskip("keras")
    x = _x()
    x[20, 0, 0, 0] = np.nan  # block 2: a worker's range fails
    np.save(tmp_path / "x.npy", x)
    keras.saving.save_model(tiny_cnn_unguarded(), tmp_path / "m.keras")
    path = tmp_path / "r.zarr"
    argv = [sys.executable, "-m", "tensortap", "capture", str(tmp_path / "m.keras")]
    argv += [str(tmp_path / "x.npy"), "-o", str(path), "--workers", "2", "--strict"]
    argv += ["--batch-size", str(B), "--block-size", str(B), "--no-progress"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert re.fullmatch(
        r"error: the input holds 1 NaN or infinite values in samples 16-23 \(first: sample 20\);.*",
        lines[-1],
    ), lines[-1]
    # TF's own start-up lines in each worker process are not ours; a worker's logged
    # failure ("Compute Failed", its traceback) would be.
    assert "Compute Failed" not in done.stderr and "Traceback" not in done.stderr
    assert tt.open_run(path).status == "failed"
