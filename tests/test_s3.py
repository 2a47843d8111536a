"""Runs on object storage: capture, resume and open on a loopback moto S3 server."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

import tensortap as tt

pytest.importorskip("moto.server")  # the `s3` fixture (tests/conftest.py) starts it

sys.path.insert(0, str(Path(__file__).parent))
from fake_backend import FakeBackend, FakeModel, images  # noqa: E402

pytestmark = pytest.mark.s3


def test_capture_resume_open_on_s3(s3: dict[str, object]) -> None:
    model, x = FakeModel(), images(40)
    url = "s3://runs/exp.zarr"
    model.fail_at_call = 2
    with pytest.raises(RuntimeError):
        tt.capture(
            model,
            x,
            store=url,
            storage_options=s3,
            backend=FakeBackend(),
            batch_size=16,
            block_size=16,  # one batch a block: the first batch is committed alone
            progress=False,
            gradients=True,
        )
    assert tt.open_run(url, storage_options=s3).samples == 16
    model.fail_at_call, model.calls = None, 0
    run = tt.capture(
        model,
        x,
        store=url,
        storage_options=s3,
        backend=FakeBackend(),
        batch_size=16,
        block_size=16,
        progress=False,
        gradients=True,
        resume=True,
    )
    assert model.calls == 2
    reopened = tt.open_run(url, storage_options=s3)
    assert reopened.status == "complete" and reopened.samples == 40 == run.samples
    np.testing.assert_array_equal(
        reopened.activation("block.conv").values, model.forward(x)["block.conv"]
    )
    np.testing.assert_array_equal(reopened.tree["sample"].values, np.arange(40))
    assert reopened.stats("dense")["count"].values.tolist() == [40] * 5
    with pytest.raises(tt.RunExistsError):
        tt.capture(model, x, store=url, storage_options=s3, backend=FakeBackend(), progress=False)


def test_missing_bucket_is_storage_error(s3: dict[str, object]) -> None:
    with pytest.raises(tt.StorageError, match="bucket 'nope' .* does not exist"):
        tt.capture(
            FakeModel(),
            images(4),
            store="s3://nope/run.zarr",
            storage_options=s3,
            backend=FakeBackend(),
            progress=False,
        )
    with pytest.raises(tt.StorageError, match="does not exist"):
        tt.open_run("s3://nope/run.zarr", storage_options=s3)
    with pytest.raises(tt.RunNotFoundError):
        tt.open_run("s3://runs/never-written.zarr", storage_options=s3)
