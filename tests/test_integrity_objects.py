"""Atomic overwrite on object stores and in memory (issue 20): a failed overwrite leaves the
old run's every key and byte as they were; a successful one leaves exactly the new run.

Real stores: a moto ``ThreadedMotoServer`` on loopback (the ``s3`` fixture,
tests/conftest.py) and zarr's ``MemoryStore``.  References are independent: the stores'
keys and bytes listed before and after, and a capture of the new data to a fresh location.
"""

from __future__ import annotations

import itertools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from zarr.core.buffer import default_buffer_prototype
from zarr.core.sync import sync
from zarr.storage import FsspecStore, MemoryStore

import tensortap as tt
from tensortap.core.errors import CorruptRunError, OptionError, ResumeMismatchError

sys.path.insert(0, str(Path(__file__).parent))
from fake_backend import FakeBackend, FakeModel, images  # noqa: E402

N, B = 48, 16  # 3 blocks of one batch
_names = itertools.count()


def _capture(model: FakeModel, data: Any, where: dict[str, Any], **kw: Any) -> tt.Run:
    kw.setdefault("progress", False)
    kw.setdefault("batch_size", B)
    kw.setdefault("block_size", B)
    kw.setdefault("gradients", True)
    return tt.capture(model, data, backend=FakeBackend(), **where, **kw)


def _snapshot(store: Any) -> dict[str, bytes]:
    """Every key under ``store`` with its bytes (staging siblings included for s3)."""

    async def read() -> dict[str, bytes]:
        keys = sorted([key async for key in store.list()])
        values = [await store.get(k, default_buffer_prototype()) for k in keys]
        return {k: v.to_bytes() for k, v in zip(keys, values, strict=True)}

    return dict(sync(read()))


def _data(n: int = N, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    return images(n, seed=seed), np.arange(n) % 3


@pytest.fixture(params=["s3", "memory"])
def place(request: pytest.FixtureRequest) -> tuple[dict[str, Any], Callable[[], dict]]:
    """``(capture/open keyword arguments, snapshot of the run's surroundings)``."""
    if request.param == "memory":
        store = MemoryStore()
        return {"store": store}, lambda: _snapshot(store)
    options = request.getfixturevalue("s3")
    folder = f"runs/objects-{next(_names)}"
    parent = FsspecStore.from_url(f"s3://{folder}", storage_options=options)
    where = {"store": f"s3://{folder}/exp.zarr", "storage_options": options}
    return where, lambda: _snapshot(parent)


def _open(where: dict[str, Any]) -> tt.Run:
    return tt.open_run(where["store"], storage_options=where.get("storage_options"))


@pytest.mark.s3
def test_a_failed_overwrite_leaves_every_key_and_byte_of_the_old_run(
    place: tuple[dict[str, Any], Callable[[], dict]],
) -> None:
    where, snapshot = place
    _capture(FakeModel(), _data(), where)
    before = snapshot()
    assert any(k.endswith("committed/c.2") for k in before)
    wrong = np.zeros((N, 8, 8, 4), np.float32)  # 4 channels: the model's matmul refuses
    with pytest.raises(ValueError):
        _capture(FakeModel(), wrong, where, overwrite=True)
    assert snapshot() == before
    with pytest.raises(OptionError, match="dtype 'int8' is not allowed"):
        _capture(FakeModel(), _data(), where, overwrite=True, dtype="int8")
    assert snapshot() == before
    model = FakeModel()
    model.fail_at_call = 1  # the model raises on the first batch
    with pytest.raises(RuntimeError, match="boom"):
        _capture(model, _data(), where, overwrite=True)
    assert snapshot() == before
    run = _open(where)
    assert run.status == "complete" and run.samples == N
    np.testing.assert_array_equal(run.inputs().values, _data()[0])


@pytest.mark.s3
def test_an_overwrite_leaves_exactly_the_new_run(
    place: tuple[dict[str, Any], Callable[[], dict]], tmp_path: Path
) -> None:
    where, snapshot = place
    _capture(FakeModel(), _data(), where)
    new = _data(20, seed=7)  # 2 blocks: the old run's block 2 must go
    run = _capture(FakeModel(), new, where, overwrite=True)
    reference = _capture(FakeModel(), new, {"store": tmp_path / "ref.zarr"})
    after = snapshot()
    prefix = "exp.zarr/" if isinstance(where["store"], str) else ""
    assert [k for k in after if not k.startswith(prefix)] == []  # no staging prefix left
    keys = {k.removeprefix(prefix) for k in after}
    expected = {
        str(f.relative_to(tmp_path / "ref.zarr"))
        for f in (tmp_path / "ref.zarr").rglob("*")
        if f.is_file()
    }
    assert keys == expected
    reopened = _open(where)
    assert reopened.status == "complete" and reopened.samples == 20 == run.samples
    for key in reference.layers:
        np.testing.assert_array_equal(
            reopened.activation(key).values, reference.activation(key).values
        )
        np.testing.assert_array_equal(reopened.gradient(key).values, reference.gradient(key).values)
    assert tt.verify(where["store"], storage_options=where.get("storage_options")).ok


@pytest.mark.s3
def test_a_run_killed_while_being_replaced_is_refused_then_replaced(
    place: tuple[dict[str, Any], Callable[[], dict]], monkeypatch: pytest.MonkeyPatch
) -> None:
    where, _snapshot_of = place
    _capture(FakeModel(), _data(), where)

    async def killed(self: object, key: str) -> None:
        raise OSError("killed mid-publish (test)")

    with monkeypatch.context() as patch:
        patch.setattr("tensortap.core.store.object_placement.ObjectPlacement._copy", killed)
        with pytest.raises(tt.StorageError, match="marked 'replacing'"):
            _capture(FakeModel(), _data(20, seed=7), where, overwrite=True)
    with pytest.raises(CorruptRunError, match="is being replaced by a capture with overwrite"):
        _open(where)
    with pytest.raises(ResumeMismatchError, match="capture again with overwrite=True"):
        _capture(FakeModel(), _data(), where, resume=True)
    run = _capture(FakeModel(), _data(20, seed=7), where, overwrite=True)
    assert run.status == "complete" and _open(where).samples == 20
