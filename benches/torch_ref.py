#!/usr/bin/env python3
"""PyTorch reference for `ringtrain bench train`: the same model, batch and
optimizer, timed the same way (samples/s of the compute step: forward,
loss, backward, clipping, update), in eager mode and with torch.compile.

The model is ringtrain's default (src/config.rs, src/data/synthetic.rs,
src/model): input 32 -> Linear+ReLU per --hidden width (default 256,256)
-> one stacked head Linear of 7 columns: "shape" 4-way softmax
cross-entropy, "size" 2-D mean squared error (per element), "flag" binary
cross-entropy with logits; every task loss is the mean over the labels
present (labels are missing at random: 15%, 25%, 10% of rows), weight 1.
AdamW (lr 2e-3, betas 0.9/0.999, eps 1e-8, weight decay 0), global
gradient-norm clipping at 1.0, f32, one GPU, batch --batch-per-rank.

Prints one JSON object per mode on stdout (--json) or a short table.
"""

import argparse
import json
import sys
import time


def parse():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch-per-rank", type=int, default=256)
    p.add_argument("--hidden", default="256,256", help="trunk widths, comma-separated")
    p.add_argument("--iters", type=int, default=200)
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--device", default="cuda")
    p.add_argument("--modes", default="eager,compile", help="eager and/or compile")
    p.add_argument("--json", action="store_true", help="one JSON object per mode")
    return p.parse_args()


INPUT, CLASSES, REGRESS, MISSING = 32, 4, 2, (0.15, 0.25, 0.10)


def main():
    a = parse()
    import torch
    import torch.nn.functional as F

    dev = torch.device(a.device)
    torch.manual_seed(0)
    hidden = [int(h) for h in a.hidden.split(",") if h]
    layers, d = [], INPUT
    for h in hidden:
        layers += [torch.nn.Linear(d, h), torch.nn.ReLU()]
        d = h
    layers.append(torch.nn.Linear(d, CLASSES + REGRESS + 1))
    model = torch.nn.Sequential(*layers).to(dev)
    params = sum(p.numel() for p in model.parameters())
    opt = torch.optim.AdamW(
        model.parameters(), lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0
    )

    b = a.batch_per_rank
    g = torch.Generator(device="cpu").manual_seed(1)
    x = torch.randn(b, INPUT, generator=g).to(dev)
    cls = torch.randint(0, CLASSES, (b,), generator=g).to(dev)
    reg = torch.randn(b, REGRESS, generator=g).to(dev)
    flag = torch.randint(0, 2, (b,), generator=g).float().to(dev)
    m_cls, m_reg, m_flag = (
        (torch.rand(b, generator=g) >= p).float().to(dev) for p in MISSING
    )

    def loss_fn(out):
        lc = (F.cross_entropy(out[:, :CLASSES], cls, reduction="none") * m_cls).sum()
        lc = lc / m_cls.sum().clamp(min=1)
        e = (out[:, CLASSES:CLASSES + REGRESS] - reg) ** 2
        lr_ = (e * m_reg[:, None]).sum() / (REGRESS * m_reg.sum()).clamp(min=1)
        lf = F.binary_cross_entropy_with_logits(out[:, -1], flag, reduction="none")
        lf = (lf * m_flag).sum() / m_flag.sum().clamp(min=1)
        return lc + lr_ + lf

    def step_eager():
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(x))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()

    results = []
    for mode in [m for m in a.modes.split(",") if m]:
        if mode == "eager":
            step = step_eager
        elif mode == "compile":
            fwd_bwd = torch.compile(lambda: loss_fn(model(x)))

            def step():
                opt.zero_grad(set_to_none=True)
                fwd_bwd().backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                opt.step()

        else:
            sys.exit(f"torch_ref.py: unknown mode {mode!r} (eager, compile)")
        for _ in range(a.warmup):
            step()
        if dev.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        for _ in range(a.iters):
            step()
        if dev.type == "cuda":
            torch.cuda.synchronize()
        s = (time.perf_counter() - t) / a.iters
        r = {
            "bench": "torch_ref",
            "mode": mode,
            "torch": torch.__version__,
            "device": str(dev),
            "hidden": hidden,
            "params": params,
            "batch_per_rank": b,
            "iters": a.iters,
            "ms_per_step": 1e3 * s,
            "samples_per_s": b / s,
        }
        results.append(r)
        if a.json:
            print(json.dumps(r), flush=True)
    if not a.json:
        print(f"torch {torch.__version__} on {dev}: model 32 -> {hidden} relu -> 7 ({params} params), batch {b}")
        for r in results:
            print(f"  {r['mode']:<8} {r['ms_per_step']:8.3f} ms/step {r['samples_per_s']:12.0f} samples/s")


if __name__ == "__main__":
    main()
