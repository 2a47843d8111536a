"""TorchLens and Captum on the tests' TinyResNet: every layer saved, and a layer Grad-CAM.

Usage: ``python torch_peers.py SAMPLES BATCH REPEATS OUT_DIR``; prints one JSON object with
the seconds of each measure (lists, one per repeat) and the peers' versions.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
import time
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
import torch

MODELS = Path(__file__).resolve().parents[2] / "tests" / "torch_models.py"


def tiny_resnet() -> torch.nn.Module:
    spec = importlib.util.spec_from_file_location("torch_models", MODELS)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("torch_models", module)
    spec.loader.exec_module(module)
    return module.TinyResNet(width=8, classes=10).eval()


def timed(repeats: int, work: Any) -> list[float]:
    work()  # warm
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        work()
        seconds.append(time.perf_counter() - started)
    return seconds


def main() -> None:
    samples, batch, repeats, out = (
        int(sys.argv[1]),
        int(sys.argv[2]),
        int(sys.argv[3]),
        Path(sys.argv[4]),
    )
    torch.set_num_threads(1)  # as bench_torch: a ratio of single-threaded timings is steadier
    torch.manual_seed(0)
    model = tiny_resnet()
    x = torch.from_numpy(np.random.default_rng(0).random((samples, 3, 32, 32), dtype=np.float32))
    batches = [x[i : i + batch] for i in range(0, samples, batch)]
    results: dict[str, Any] = {}

    from captum.attr import LayerActivation, LayerGradCam

    modules = [
        m for name, m in model.named_modules() if name
    ]  # every submodule, as tensortap's "*"

    def captum_activations() -> None:
        explainer = LayerActivation(model, modules)
        for b in batches:
            explainer.attribute(b)

    def captum_gradcam() -> None:
        explainer = LayerGradCam(model, model.layer2)
        for b in batches:
            with torch.no_grad():
                target = model(b).argmax(dim=1)
            explainer.attribute(b, target=target)

    results["captum_layer_activation"] = timed(repeats, captum_activations)
    results["captum_layer_gradcam"] = timed(repeats, captum_gradcam)
    results["captum_layers"] = len(modules)

    import torchlens as tl

    def torchlens_memory() -> None:
        for b in batches:
            trace = tl.trace(model, b)  # TorchLens 2 saves every operation by default
            del trace

    def torchlens_disk() -> None:
        if out.exists():
            shutil.rmtree(out)
        for i, b in enumerate(batches):
            trace = tl.trace(model, b, storage=tl.to_disk(out / f"batch{i}"))
            del trace

    results["torchlens_memory"] = timed(repeats, torchlens_memory)
    try:
        results["torchlens_disk"] = timed(repeats, torchlens_disk)
        results["torchlens_disk_files"] = sum(1 for p in out.rglob("*") if p.is_file())
        results["torchlens_disk_bytes"] = sum(
            p.stat().st_size for p in out.rglob("*") if p.is_file()
        )
    except Exception as err:  # noqa: BLE001 - a peer's missing feature is a result to report
        results["torchlens_disk_error"] = f"{type(err).__name__}: {str(err).splitlines()[0][:200]}"
    trace = tl.trace(model, batches[0])
    results["torchlens_layers"] = len(trace.layer_labels)
    assert all(trace[label].has_saved_activation for label in trace.layer_labels)
    results["versions"] = {p: version(p) for p in ("torchlens", "captum", "torch")}
    print(json.dumps(results))


if __name__ == "__main__":
    main()
