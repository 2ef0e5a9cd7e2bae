#!/usr/bin/env python3
"""PyTorch CPU peer of `ringtrain bench train`: the same model, batch and
optimizer on the CPU, one thread per process, in eager mode, with
torch.compile, and as DistributedDataParallel over gloo at 1 and 2
processes.

The model is ringtrain's (see benches/torch_ref.py, the GPU peer): input 32
-> Linear + activation (relu, or gelu in its tanh form as ringtrain's) per
--hidden width -> one stacked head Linear of 7 columns ("shape" 4-way
softmax cross-entropy, "size" 2-D MSE, "flag" BCE with logits, each the
mean over the labels present; labels missing at random 15%, 25%, 10%).
AdamW (lr 2e-3, betas 0.9/0.999, eps 1e-8, weight decay 0), global
gradient-norm clipping at 1.0, f32, --batch-per-rank samples per process.
The parameter count is printed so it can be checked against ringtrain's.

Samples/s count the step (forward, loss, backward with DDP's all-reduce,
clipping, update), after --warmup steps; DDP reports per process.
Prints one JSON object per mode (--json) or a short table.
"""

import argparse
import json
import os
import sys
import time

INPUT, CLASSES, REGRESS, MISSING = 32, 4, 2, (0.15, 0.25, 0.10)


def parse():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch-per-rank", type=int, default=256)
    p.add_argument("--hidden", default="256,256", help="trunk widths, comma-separated")
    p.add_argument("--activation", default="relu", choices=["relu", "gelu"])
    p.add_argument("--iters", type=int, default=200)
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--modes", default="eager,compile,ddp1,ddp2",
                   help="any of eager, compile, ddp1, ddp2")
    p.add_argument("--json", action="store_true", help="one JSON object per mode")
    return p.parse_args()


def one_thread():
    import torch

    torch.set_num_threads(1)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass  # already set in this process


def build(a, torch):
    """The model, its optimizer, one fixed batch and the loss function."""
    import torch.nn.functional as F

    torch.manual_seed(0)
    hidden = [int(h) for h in a.hidden.split(",") if h]
    act = torch.nn.ReLU if a.activation == "relu" else (lambda: torch.nn.GELU(approximate="tanh"))
    layers, d = [], INPUT
    for h in hidden:
        layers += [torch.nn.Linear(d, h), act()]
        d = h
    layers.append(torch.nn.Linear(d, CLASSES + REGRESS + 1))
    model = torch.nn.Sequential(*layers)
    b = a.batch_per_rank
    g = torch.Generator().manual_seed(1)
    x = torch.randn(b, INPUT, generator=g)
    cls = torch.randint(0, CLASSES, (b,), generator=g)
    reg = torch.randn(b, REGRESS, generator=g)
    flag = torch.randint(0, 2, (b,), generator=g).float()
    m_cls, m_reg, m_flag = ((torch.rand(b, generator=g) >= p).float() for p in MISSING)

    def loss_fn(out):
        lc = (F.cross_entropy(out[:, :CLASSES], cls, reduction="none") * m_cls).sum()
        lc = lc / m_cls.sum().clamp(min=1)
        e = (out[:, CLASSES:CLASSES + REGRESS] - reg) ** 2
        lr_ = (e * m_reg[:, None]).sum() / (REGRESS * m_reg.sum()).clamp(min=1)
        lf = F.binary_cross_entropy_with_logits(out[:, -1], flag, reduction="none")
        lf = (lf * m_flag).sum() / m_flag.sum().clamp(min=1)
        return lc + lr_ + lf

    return model, x, loss_fn, hidden


def timed(a, torch, model, x, loss_fn, fwd=None):
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, betas=(0.9, 0.999),
                            eps=1e-8, weight_decay=0.0)
    fwd = fwd or (lambda: loss_fn(model(x)))

    def step():
        opt.zero_grad(set_to_none=True)
        fwd().backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()

    for _ in range(a.warmup):
        step()
    t = time.perf_counter()
    for _ in range(a.iters):
        step()
    return (time.perf_counter() - t) / a.iters


def record(a, torch, mode, hidden, params, s, procs):
    return {
        "bench": "torch_cpu",
        "mode": mode,
        "torch": torch.__version__,
        "hidden": hidden,
        "activation": a.activation,
        "params": params,
        "batch_per_rank": a.batch_per_rank,
        "processes": procs,
        "threads": torch.get_num_threads(),
        "iters": a.iters,
        "ms_per_step": 1e3 * s,
        "samples_per_s_per_rank": a.batch_per_rank / s,
        "samples_per_s": procs * a.batch_per_rank / s,
    }


def ddp_worker(rank, world, port, a, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    import torch
    import torch.distributed as dist

    one_thread()
    dist.init_process_group("gloo", rank=rank, world_size=world)
    model, x, loss_fn, hidden = build(a, torch)
    params = sum(p.numel() for p in model.parameters())
    ddp = torch.nn.parallel.DistributedDataParallel(model)
    dist.barrier()
    s = timed(a, torch, ddp, x, loss_fn)
    # The slowest rank's step time is the job's.
    t = torch.tensor([s], dtype=torch.float64)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    if rank == 0:
        out.put(record(a, torch, f"ddp{world}", hidden, params, t.item(), world))
    dist.destroy_process_group()


def free_port():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main():
    a = parse()
    import torch

    one_thread()
    results = []
    for mode in [m for m in a.modes.split(",") if m]:
        if mode in ("eager", "compile"):
            model, x, loss_fn, hidden = build(a, torch)
            params = sum(p.numel() for p in model.parameters())
            fwd = torch.compile(lambda: loss_fn(model(x))) if mode == "compile" else None
            s = timed(a, torch, model, x, loss_fn, fwd)
            r = record(a, torch, mode, hidden, params, s, 1)
        elif mode in ("ddp1", "ddp2"):
            import torch.multiprocessing as mp

            world = int(mode[3:])
            ctx = mp.get_context("spawn")
            q = ctx.SimpleQueue()
            mp.start_processes(ddp_worker, args=(world, free_port(), a, q), nprocs=world,
                               join=True, start_method="spawn")
            r = q.get()
        else:
            sys.exit(f"torch_cpu.py: unknown mode {mode!r} (eager, compile, ddp1, ddp2)")
        results.append(r)
        if a.json:
            print(json.dumps(r), flush=True)
    if not a.json:
        r0 = results[0]
        print(f"torch {torch.__version__} CPU, 1 thread/process: model 32 -> {r0['hidden']} "
              f"{a.activation} -> 7 ({r0['params']} params), batch {a.batch_per_rank}/process")
        for r in results:
            print(f"  {r['mode']:<8} {r['ms_per_step']:8.3f} ms/step "
                  f"{r['samples_per_s_per_rank']:12.0f} samples/s per process")


if __name__ == "__main__":
    main()
