"""tensortap beside its peers on the same workloads, all measured in one run (issue 19).

Keras: the seed's small CNN (Conv 32 → pool → Conv 64 → pool → Flatten → Dense 10 on
28×28×3, random weights and images), every layer:

- the seed's snippet, one multi-output ``keras.Model(inputs, [layer.output ...]).predict``;
- tensortap ``capture(layers="*")`` into memory and into a local run;
- keract ``get_activations``: on Keras 3 (the error is recorded), and on legacy Keras 2
  (``tf_keras`` with ``TF_USE_LEGACY_KERAS=1``) in the peers' environment.

PyTorch: the tests' ``TinyResNet`` on 3×32×32 images, one thread:

- the plain forward (``no_grad``);
- tensortap every node into memory and into a local run;
- TorchLens ``trace`` (every operation saved, its default) in memory and streamed to disk (``storage=to_disk``);
- Captum ``LayerActivation`` over every submodule, and ``LayerGradCam`` on ``layer2``
  against tensortap's gradients of ``layer2`` + ``tt.cam``.

The peers run in their own virtual environment (``benchmarks/_peer_env.py``).  TensorFlow
Debugger V2 (FULL_TENSOR) and tf-keras-vis ``Gradcam`` are measured on MobileNetV2 by
``bench_capture`` and ``bench_views``.  Every figure is the median of ``--repeats`` runs
after a warm-up.

Run: ``python -m benchmarks.bench_peers [--samples N] [--torch-samples N] [--repeats R]``;
it writes its own ``## Peers`` section in ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks._peer_env import peer_error, run_peer
from benchmarks._results import write_section
from benchmarks.bench_torch import _tiny_resnet

KERAS3_KERACT = """
import keras, keract, numpy as np
model = keras.Sequential([keras.Input((28, 28, 3)), keras.layers.Conv2D(32, 3), keras.layers.Flatten(),
                          keras.layers.Dense(10)])
keract.get_activations(model, np.zeros((4, 28, 28, 3), "float32"))
"""


def seed_cnn() -> Any:
    """The seed's small CNN (the same one benchmarks/peers/keract_legacy.py builds)."""
    import keras

    keras.utils.set_random_seed(0)
    layers = keras.layers
    return keras.Sequential(
        [
            keras.Input((28, 28, 3)),
            layers.Conv2D(32, 3, padding="same", activation="relu", name="conv1"),
            layers.MaxPooling2D(name="pool1"),
            layers.Conv2D(64, 3, padding="same", activation="relu", name="conv2"),
            layers.MaxPooling2D(name="pool2"),
            layers.Flatten(name="flatten"),
            layers.Dense(10, name="logits"),
        ]
    )


def _median(repeats: int, work: Any) -> float:
    work()  # warm: traces, compiles, first allocations
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        work()
        seconds.append(time.perf_counter() - started)
    return statistics.median(seconds)


def _files(path: Path) -> int:
    return sum(1 for p in path.rglob("*") if p.is_file())


def keras_rows(samples: int, repeats: int, folder: Path) -> dict[str, Any]:
    import keras

    import tensortap as tt

    model = seed_cnn()
    x = np.random.default_rng(0).random((samples, 28, 28, 3), dtype=np.float32)
    submodel = keras.Model(model.inputs, [layer.output for layer in model.layers])
    store = folder / "keras.zarr"
    options = {"layers": "*", "batch_size": 32, "progress": False}
    rows: dict[str, Any] = {
        "submodel": _median(repeats, lambda: submodel.predict(x, batch_size=32, verbose=0)),
        "memory": _median(repeats, lambda: tt.capture(model, x, store=None, **options)),
        "disk": _median(
            repeats, lambda: tt.capture(model, x, store=str(store), overwrite=True, **options)
        ),
    }
    rows["files"] = _files(store)
    rows["keract_keras3"] = peer_error(KERAS3_KERACT) or "ran"
    rows["keract"] = run_peer("keract_legacy.py", samples, repeats)
    rows["versions"] = {"keras": keras.__version__}
    return rows


def torch_rows(samples: int, batch: int, repeats: int, folder: Path) -> dict[str, Any]:
    import torch

    import tensortap as tt

    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = _tiny_resnet().TinyResNet(width=8, classes=10).eval()
    x = np.random.default_rng(0).random((samples, 3, 32, 32), dtype=np.float32)

    def forward() -> None:
        with torch.no_grad():
            for i in range(0, samples, batch):
                model(torch.from_numpy(x[i : i + batch]))

    store = folder / "torch.zarr"
    options = {"layers": "*", "batch_size": batch, "progress": False}
    cam_options = {"layers": "layer2", "gradients": True, "target": "predicted"}

    def cam() -> None:
        run = tt.capture(model, x, store=None, batch_size=batch, progress=False, **cam_options)
        tt.cam(run, "layer2")

    rows: dict[str, Any] = {
        "forward": _median(repeats, forward),
        "memory": _median(repeats, lambda: tt.capture(model, x, store=None, **options)),
        "disk": _median(
            repeats, lambda: tt.capture(model, x, store=str(store), overwrite=True, **options)
        ),
        "cam": _median(repeats, cam),
    }
    rows["files"] = _files(store)
    rows["layers"] = len(tt.open_run(str(store)).layers)
    peers = run_peer("torch_peers.py", samples, batch, repeats, folder / "torchlens")
    for key, value in peers.items():
        rows[key] = statistics.median(value) if isinstance(value, list) else value
    rows["versions"] = {"torch": torch.__version__, **peers["versions"]}
    return rows


def _ratio(a: float, b: float) -> str:
    return f"{a:.2f} s / {b:.2f} s = **{a / b:.2f}**"


def section(k: dict[str, Any], t: dict[str, Any], args: argparse.Namespace) -> str:
    kr = k["keract"]
    keract_s = statistics.median(kr["seconds"])
    lines = [
        "## Peers",
        "",
        f"`python -m benchmarks.bench_peers --samples {args.samples} --torch-samples "
        f"{args.torch_samples} --repeats {args.repeats}` on {platform.machine()}, "
        f"{os.cpu_count()} CPUs (shared), {time.strftime('%Y-%m-%d')}; every figure from this "
        "one run, medians after a warm-up. Peers run in their own virtual environment "
        f"(`benchmarks/_peer_env.py`): {', '.join(f'{p} {v}' for p, v in {**kr['versions'], **t['versions']}.items())}; "
        f"Keras {k['versions']['keras']}.",
        "",
        f"**Keras**: the seed's CNN, {args.samples} samples of 28×28×3, batch 32, every layer "
        f"({kr['layers']} tensors per sample in keract; {kr['bytes'] / 1e6:,.0f} MB float32).",
        "",
        "| what | time | against the seed's multi-output `predict` |",
        "|---|---|---|",
        f"| the seed's multi-output sub-model `predict` (memory) | {k['submodel']:.2f} s | 1.00 |",
        f'| tensortap `capture(layers="*")`, in memory (statistics included) | {k["memory"]:.2f} s | {k["memory"] / k["submodel"]:.2f} |',
        f"| tensortap, to a local run ({k['files']} files) | {k['disk']:.2f} s | {k['disk'] / k['submodel']:.2f} |",
        f"| keract 4.5 `get_activations` on Keras 3 | fails: `{k['keract_keras3'][:160]}` | — |",
        f"| keract on legacy Keras 2 (`tf_keras`, `TF_USE_LEGACY_KERAS=1`), memory only | {keract_s:.2f} s | {keract_s / k['submodel']:.2f} |",
        "",
        f"**PyTorch**: `TinyResNet` (width 8), {args.torch_samples} samples of 3×32×32, batch "
        f"{args.batch_size}, one thread.",
        "",
        "| what | time | against the plain forward |",
        "|---|---|---|",
        f"| plain forward (`no_grad`) | {t['forward']:.2f} s | 1.00 |",
        f"| tensortap every node ({t['layers']} modules), in memory | {t['memory']:.2f} s | {t['memory'] / t['forward']:.1f} |",
        f"| tensortap every node, to a local run ({t['files']} files) | {t['disk']:.2f} s | {t['disk'] / t['forward']:.1f} |",
        f"| TorchLens `trace` (its default saves every operation) ({t['torchlens_layers']} per batch), in memory | {t['torchlens_memory']:.2f} s | {t['torchlens_memory'] / t['forward']:.1f} |",
    ]
    if "torchlens_disk" in t:
        lines.append(
            f"| TorchLens streamed to disk (`storage=to_disk`, {t['torchlens_disk_files']} files, "
            f"{t['torchlens_disk_bytes'] / 1e6:,.0f} MB) | {t['torchlens_disk']:.2f} s | {t['torchlens_disk'] / t['forward']:.1f} |"
        )
    else:
        lines.append(f"| TorchLens streamed to disk | fails: `{t['torchlens_disk_error']}` | — |")
    lines += [
        f"| Captum `LayerActivation` over every submodule ({t['captum_layers']}), in memory | {t['captum_layer_activation']:.2f} s | {t['captum_layer_activation'] / t['forward']:.1f} |",
        "",
        "| Grad-CAM of `layer2`, predicted class | time | |",
        "|---|---|---|",
        f"| tensortap gradients of `layer2` (in memory) + `tt.cam` / Captum `LayerGradCam` | {_ratio(t['cam'], t['captum_layer_gradcam'])} | tensortap also keeps the activations, gradients and statistics |",
        "",
        "TorchLens logs every tensor operation (not only modules' outputs), so it stores more "
        "per sample than tensortap's every-module capture; keract and Captum keep everything "
        "in memory and write nothing, so their rows compare with tensortap's in-memory row.",
        "",
    ]
    return "\n".join(lines)


def main(
    samples: int = 2048,
    torch_samples: int = 256,
    batch_size: int = 32,
    repeats: int = 3,
    write: bool = True,
) -> dict[str, Any]:
    args = argparse.Namespace(
        samples=samples, torch_samples=torch_samples, batch_size=batch_size, repeats=repeats
    )
    folder = Path(tempfile.mkdtemp(prefix="tensortap-peers-"))
    try:
        k = keras_rows(samples, repeats, folder)
        t = torch_rows(torch_samples, batch_size, repeats, folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    text = section(k, t, args)
    print(text)
    if write:
        write_section("## Peers", text)
    return {"keras": k, "torch": t}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=2048)
    parser.add_argument("--torch-samples", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-write", action="store_true", help="do not update RESULTS.md")
    a = parser.parse_args()
    main(a.samples, a.torch_samples, a.batch_size, a.repeats, write=not a.no_write)
