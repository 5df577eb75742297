"""Training steps with glibc's default malloc against ``keep_freed_memory()``, side by side.

``superres train`` calls :func:`superres.runtime.keep_freed_memory` first. This measures
what that buys on the small x3 networks of the shipped recipes: Adam steps of ESPCN and FSRCNN
(batch 16, 32x32 LR patches on Y, channels_last, one thread, as the recipes run), each setting in
its own process (malloc settings are per process), the two taking turns over a few rounds.
Prints ms per step (median), user and kernel CPU seconds, and the ratio.

    python benchmarks/malloc_speed.py [--steps 40] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

STEP_LOOP = r"""
import json, os, sys, time
import torch
from superres.archs.espcn import ESPCN
from superres.archs.fsrcnn import FSRCNN
from superres.runtime import keep_freed_memory

arch, steps, tuned = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1"
applied = keep_freed_memory() if tuned else False
torch.set_num_threads(1)
torch.manual_seed(0)
net = {"ESPCN": ESPCN, "FSRCNN": FSRCNN}[arch](3, 1).to(memory_format=torch.channels_last)
opt = torch.optim.Adam(net.parameters(), 1e-3)
x = torch.rand(16, 1, 32, 32).contiguous(memory_format=torch.channels_last)
y = torch.rand(16, 1, 96, 96)

def step():
    loss = torch.nn.functional.l1_loss(net(x), y)
    opt.zero_grad()
    loss.backward()
    opt.step()

for _ in range(5):
    step()
t0, start = os.times(), time.perf_counter()
for _ in range(steps):
    step()
t1 = os.times()
print(json.dumps({"ms": (time.perf_counter() - start) / steps * 1000, "user": t1.user - t0.user,
                  "sys": t1.system - t0.system, "applied": applied}))
"""


def run(arch: str, steps: int, tuned: bool) -> dict:
    env_free = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    out = subprocess.run([sys.executable, "-c", STEP_LOOP, arch, str(steps), "1" if tuned else "0"],
                         capture_output=True, text=True, check=True, env=env_free)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    for arch in ("ESPCN", "FSRCNN"):
        results: dict[bool, list[dict]] = {False: [], True: []}
        for _ in range(args.rounds):
            for tuned in (False, True):
                results[tuned].append(run(arch, args.steps, tuned))
        if not all(r["applied"] for r in results[True]):
            print(f"{arch}: keep_freed_memory() did not apply here (not glibc?)")
        ms = {t: statistics.median(r["ms"] for r in rs) for t, rs in results.items()}
        for tuned, label in ((False, "glibc default"), (True, "keep_freed_memory")):
            rs = results[tuned]
            rounds = ", ".join(f"{r['ms']:.1f}" for r in rs)
            user, kernel = (statistics.median(r[k] for r in rs) for k in ("user", "sys"))
            print(f"{arch:7s} {label:18s} {ms[tuned]:6.1f} ms/step (rounds: {rounds}), "
                  f"CPU user {user:.2f} s, kernel {kernel:.2f} s")
        print(f"{arch:7s} speed-up {ms[False] / ms[True]:.2f}x")


if __name__ == "__main__":
    main()
