"""The capture engine end to end with the real TensorFlow backend (tiny models)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import xarray as xr

import tensortap as tt

keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")


@pytest.fixture(scope="module")
def cnn() -> object:
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 3), name="image")
    h = keras.layers.Conv2D(4, 3, activation="relu", name="conv")(inputs)
    h = keras.layers.GlobalAveragePooling2D(name="pool")(h)
    outputs = keras.layers.Dense(3, activation="softmax", name="dense")(h)
    return keras.Model(inputs, outputs, name="cnn")


@pytest.fixture(scope="module")
def two_inputs() -> object:
    a = keras.Input((4,), name="a")
    b = keras.Input((2,), name="b")
    h = keras.layers.Concatenate(name="cat")([a, b])
    return keras.Model([a, b], keras.layers.Dense(3, name="out")(h), name="two")


def _x(n: int) -> np.ndarray:
    return np.random.default_rng(0).random((n, 8, 8, 3), dtype=np.float32)


def test_graph_prints_keys(cnn: object) -> None:
    g = tt.graph(cnn)
    assert "conv" in g.keys and "Conv2D" in str(g)


def test_in_memory_capture_matches_keras(cnn: object, capsys: pytest.CaptureFixture[str]) -> None:
    x, y = _x(20), np.arange(20) % 3
    run = tt.capture(
        cnn, (x, y), layers=["conv", "dense"], gradients=True, target="label", batch_size=8
    )
    assert run.path == "<memory>" and run.samples == 20 and run.status == "complete"
    reference = keras.Model(cnn.inputs, cnn.get_layer("conv").output)(x).numpy()
    np.testing.assert_allclose(run.activation("conv").values, reference, rtol=1e-6, atol=1e-6)
    assert run.gradient("conv").shape == reference.shape
    np.testing.assert_array_equal(run.labels.values, y)
    assert "MB/s" in capsys.readouterr().err  # the progress bar


def test_data_forms(cnn: object, two_inputs: object, tmp_path: Path) -> None:
    x = _x(10)
    np.save(tmp_path / "x.npy", x)
    mapped = np.load(tmp_path / "x.npy", mmap_mode="r")
    expected = tt.capture(cnn, x, layers="conv", progress=False).activation("conv").values
    for data in (
        mapped,
        {"image": x},
        [x],
        (x,),
        iter([x[:3], x[3:]]),
        tf.data.Dataset.from_tensor_slices(x).batch(4),
    ):
        got = tt.capture(cnn, data, layers="conv", batch_size=4, progress=False)
        np.testing.assert_array_equal(got.activation("conv").values, expected)
    a = np.ones((6, 4), np.float32)
    b = np.zeros((6, 2), np.float32)
    for data in ({"a": a, "b": b}, [a, b]):
        run = tt.capture(two_inputs, data, layers="cat", progress=False)
        assert run.activation("cat").shape == (6, 6)
        assert set(run.input_names) == {"a", "b"}


def test_bad_data(cnn: object) -> None:
    with pytest.raises(tt.EmptyDataError):
        tt.capture(cnn, _x(0), progress=False)
    with pytest.raises(tt.DataError, match="3 labels for 5 samples"):
        tt.capture(cnn, _x(5), labels=np.zeros(3), progress=False)
    with pytest.raises(tt.EmptyDataError):
        tt.capture(cnn, iter([]), progress=False)


def test_nested_model_run_opens_with_plain_xarray(tmp_path: Path) -> None:
    base = keras.applications.MobileNetV2(
        weights=None, input_shape=(32, 32, 3), include_top=False, alpha=0.35
    )
    inputs = keras.Input((32, 32, 3))
    h = keras.layers.GlobalAveragePooling2D()(base(inputs))
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(h))
    path = tmp_path / "nested.zarr"
    run = tt.capture(
        model,
        np.random.default_rng(0).random((4, 32, 32, 3), np.float32),
        store=path,
        layers="*block_1_expand*",
        progress=False,
    )
    key = "mobilenetv2_0.35_32.block_1_expand"
    assert key in run.layers
    tree = xr.open_datatree(path, engine="zarr")
    assert tree[f"layers/{key}/activation"].shape == run.activation(key).shape
    assert tree[f"layers/{key}"].attrs["layer_type"] == "Conv2D"


def test_resume_fills_gaps_and_never_rewrites_committed_blocks(cnn: object, tmp_path: Path) -> None:
    """A run with a gap (as parallel writers can leave): resume captures only the gap."""
    import zarr

    x = _x(32)
    path = tmp_path / "gap.zarr"
    tt.capture(cnn, x, store=path, layers="conv", batch_size=8, block_size=8, progress=False)
    expected = tt.open_run(path).activation("conv").values
    group = zarr.open_group(path, mode="r+")
    group["committed"][1] = 0  # block 1 (samples 8..15) lost its commit: a gap
    # ... as a failed parallel capture leaves it (a *complete* run with a gap is damage).
    group.attrs["tensortap"] = dict(group.attrs["tensortap"]) | {"status": "failed", "samples": 24}
    sentinel = np.full((8, 6, 6, 4), -7.0, np.float32)
    group["layers/conv/activation"][8:16] = sentinel  # what a dead writer left half-written
    group["layers/conv/activation"][24:32] = (
        sentinel  # a committed block, marked to detect rewrites
    )
    gap = tt.open_run(path)
    assert gap.samples == 24 and list(gap.sample_indices[8:10]) == [16, 17]

    run = tt.capture(cnn, x, store=path, layers="conv", batch_size=8, resume=True, progress=False)
    got = run.activation("conv").values
    assert run.samples == 32 and run.status == "complete"
    np.testing.assert_array_equal(got[:24], expected[:24])  # the gap was captured again
    np.testing.assert_array_equal(got[24:], sentinel)  # block 3 was committed: left alone
