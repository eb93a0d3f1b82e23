"""Do several standalone trainings overlap on one GPU? (prints a table; no assertions)

Why: a standalone subnet's training step at batch 512 is ~600 tiny kernels, ~4 ms of GPU time even
replayed as one CUDA graph (benchmarks/supernet_judge.py), and worker processes sharing the GPU
add no throughput (the GPU time-slices between processes: 16 processes trained 128 steps/s
together, 1 process 250). Kernels of one process on different CUDA streams may run at the same
time; this measures whether N models trained by N threads, each on its own stream, beat the same
N models trained one after another.

Per mode, the aggregate training steps/s of --models random nasrec-full subnets (Criteo-shaped
tables capped at --max-table-rows), each with its own Adagrad, bf16 autocast and (on CUDA) its
step captured as CUDA graphs before any thread starts (a capture must not overlap other work).
Batches are made on the device beforehand, so only the training steps are timed. It also prints
the largest parameter difference between the threaded and the sequential run from the same
weights and batches (0 or rounding if the streams are ordered correctly).

    PYTHONPATH=. python benchmarks/standalone_streams.py --device cuda --models 4
    .venv/bin/python benchmarks/standalone_streams.py --device cpu --models 2 --steps 5
Not yet run on a GPU (written after the session's device time was spent); on the 2-core CPU the
threaded run is 0.91-0.95x the sequential one with identical parameters, as expected there.
"""

from __future__ import annotations

import argparse
import copy
import sys
import threading
import time
from contextlib import nullcontext
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402

LR = 0.01  # constant (no warm-up): small enough that no model diverges in a few hundred steps


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="auto")
    p.add_argument("--models", type=int, default=4)
    p.add_argument("--steps", type=int, default=300, help="timed steps per model")
    p.add_argument("--batch-size", type=int, default=512)
    p.add_argument("--batches", type=int, default=8, help="distinct device batches, cycled")
    p.add_argument("--rows", type=int, default=50_000)
    p.add_argument("--max-table-rows", type=int, default=1000)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--no-graphs", dest="graphs", action="store_false")
    return p.parse_args(argv)


def make_models(args, tables, n_dense, device):
    from models.nas.optim import make_optimizer
    from models.nas.space import sample_subnet
    from models.nas.supernet import SubnetModel

    rng = np.random.default_rng([args.seed, 0x5B])
    models = []
    for i in range(args.models):
        m = SubnetModel(sample_subnet("nasrec-full", rng), tables, n_dense, seed=i).to(device)
        models.append((m, make_optimizer(m, LR, 1e-2)))
    return models


def run(models, batches, steps, device, *, threaded: bool) -> float:
    """Seconds for `steps` training steps of every model, one after another or one thread (and
    one CUDA stream) per model."""
    from models.nas.train import train_step

    amp = device.type == "cuda"

    def train(model, opt, stream=None):
        ctx = torch.cuda.stream(stream) if stream is not None else nullcontext()
        with ctx:
            for i in range(steps):
                train_step(model, opt, batches[i % len(batches)], LR, 5.0, amp, device)

    sync(device)
    t0 = time.perf_counter()
    if not threaded:
        for m, opt in models:
            train(m, opt)
    else:
        streams = [torch.cuda.Stream() if device.type == "cuda" else None for _ in models]
        for s in streams:
            if s is not None:  # the batches were made on the default stream
                s.wait_stream(torch.cuda.current_stream())
        threads = [threading.Thread(target=train, args=(m, o, s))
                   for (m, o), s in zip(models, streams, strict=True)]  # fmt: skip
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for s in streams:
            if s is not None:
                torch.cuda.current_stream().wait_stream(s)
    sync(device)
    return time.perf_counter() - t0


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def main(argv: list[str] | None = None) -> int:
    import tempfile

    from models.data import open_split, prepare
    from models.nas.graphs import graph_model
    from models.nas.runtime import BatchStream, resolve_device

    args = parse_args(argv)
    device = resolve_device(args.device)
    work = Path(tempfile.mkdtemp(prefix="streams-"))
    data = prepare("synthetic", None, work / "data", rows=args.rows, seed=args.seed,
                   max_table_rows=args.max_table_rows, progress=False)  # fmt: skip
    split = open_split(data, "train")
    tables, n_dense = split.manifest["table_sizes"], len(split.manifest["dense_features"])
    stream = BatchStream(split, args.batch_size, seed=args.seed, device=device)
    batches = [next(stream) for _ in range(args.batches)]
    stream.close()
    models = make_models(args, tables, n_dense, device)
    start = [(copy.deepcopy(m.state_dict()), copy.deepcopy(o.state_dict())) for m, o in models]
    graphed = args.graphs and device.type == "cuda"
    if graphed:
        for m, _ in models:
            graph_model(m, args.batch_size, n_dense, len(tables))
    warm = min(args.steps, 20)
    rows, params = [], {}
    for mode in ("sequential", "threaded"):
        for (m, o), (ms, os_) in zip(models, start, strict=True):
            m.load_state_dict(ms)  # in place: the graphs keep their parameters
            o.load_state_dict(copy.deepcopy(os_))  # Adagrad adopts (then updates) these tensors
        run(models, batches, warm, device, threaded=mode == "threaded")
        for (m, o), (ms, os_) in zip(models, start, strict=True):
            m.load_state_dict(ms)  # in place: the graphs keep their parameters
            o.load_state_dict(copy.deepcopy(os_))  # Adagrad adopts (then updates) these tensors
        wall = run(models, batches, args.steps, device, threaded=mode == "threaded")
        rows.append((mode, args.models * args.steps / wall))
        params[mode] = [[p.detach().float().clone() for p in m.parameters()] for m, _ in models]
    diff = max(float((a - b).abs().max()) for pa, pb in zip(params["sequential"],
               params["threaded"], strict=True) for a, b in zip(pa, pb, strict=True))  # fmt: skip
    print(f"{args.models} subnets, batch {args.batch_size}, {args.steps} timed steps each, "
          f"{device.type}{', CUDA graphs' if graphed else ''}")  # fmt: skip
    print(f"{'mode':12s} {'steps/s (all models)':>20s} {'vs sequential':>14s}")
    for mode, rate in rows:
        print(f"{mode:12s} {rate:20.1f} {rate / rows[0][1]:13.2f}x")
    print(f"largest parameter difference, threaded vs sequential: {diff:.3g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
