"""The training-run layout on disk (docs/store-format.md, *Training runs*): statistics of all
layers in two root groups, a CRC-32C on every chunk, the schema pinned (issue 14)."""

from __future__ import annotations

import json

import google_crc32c
import numpy as np
import pytest
import zarr

pytest.importorskip("torch")

import tensortap as tt  # noqa: E402
from tensortap.core.errors import ResumeMismatchError  # noqa: E402

from .training_models import digits, torch_cnn, torch_training_run  # noqa: E402


def test_statistics_of_every_layer_share_root_groups_and_read_back_per_layer(tmp_path):
    store = tmp_path / "train.zarr"
    run = torch_training_run(store, steps=6, every=2, policy="full")
    assert run.attrs["schema"] == 3
    # five statistics chunks a step whatever the number of layers; no per-layer groups
    files = sorted(p.name for p in (store / "step_stats").rglob("c.*"))
    assert len(files) == 5 * len(run.step_values)
    for key in run.layers:
        assert not (store / "layers" / key / "stats").exists()
    # each layer's span reads back as statistics of its own stored activation (numpy reference)
    for key in run.layers:
        node = run.node(key)
        axis = node["dims"].index(node["channel_dim"]) + 1  # +1: the sample axis first
        for step in run.tensor_steps:
            values = run.activation(key, step=int(step)).values.astype(np.float64)
            per_channel = np.moveaxis(values, axis, -1).reshape(-1, values.shape[axis])
            stats = run.stats(key, step=int(step))
            np.testing.assert_allclose(stats["mean"].values, per_channel.mean(0), rtol=1e-6)
            np.testing.assert_allclose(stats["max"].values, per_channel.max(0), rtol=1e-6)
            counts, _ = np.histogram(values, bins=stats["bin_edges"].values)
            assert stats["histogram"].sum() + stats["underflow"] + stats["overflow"] == values.size
            np.testing.assert_array_equal(stats["histogram"].values, counts)
    # plain xarray opens the whole tree
    import xarray as xr

    tree = xr.open_datatree(store, engine="zarr", consolidated=False)
    assert tree["step_stats/moments"].dims == ("step", "moment", "stat_channel")
    assert tree["layers/1/activation"].dims[:2] == ("step", "sample")


def test_every_step_chunk_ends_with_its_crc32c_and_damage_is_detected(tmp_path):
    store = tmp_path / "train.zarr"
    torch_training_run(store, steps=4, every=2, policy="full")
    chunks = [p for p in store.rglob("c.*") if p.is_file()]
    assert chunks
    for path in chunks:
        data = path.read_bytes()
        assert int.from_bytes(data[-4:], "little") == google_crc32c.value(data[:-4]), path
    damaged = store / "step_stats" / "moments" / "c.0.0.0"
    data = bytearray(damaged.read_bytes())
    data[3] ^= 0xFF
    damaged.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="(?i)checksum|crc"):
        zarr.open_array(store, path="step_stats/moments", mode="r")[0]


def test_appending_to_a_training_run_of_an_older_schema_is_refused(tmp_path):
    store = tmp_path / "train.zarr"
    torch_training_run(store, steps=2, every=1)
    meta_path = store / "zarr.json"
    meta = json.loads(meta_path.read_text())
    meta["attributes"]["tensortap"]["schema"] = 2  # as written before the schema was pinned
    meta_path.write_text(json.dumps(meta))
    _, _, px, py = digits(n_probe=32)
    with pytest.raises(ResumeMismatchError, match="schema 2"):
        tt.Monitor(torch_cnn(), (px.transpose(0, 3, 1, 2).copy(), py), store, every=1).open()
