"""Benchmark: the reference scaled dot-product attention against torch's built-in.

For each sequence length L (= S) it prints the median time of each (torch.utils.benchmark), the
peak memory each adds while it runs, their ratios, and the largest absolute difference between
the two outputs. The reference is the clear matmul-softmax-matmul of chapter 4, which holds the
whole (B, H, L, S) score matrix; torch's fused kernel works in blocks and never does.

Peak memory: on CUDA, torch's allocator statistics. On the CPU, the process's resident-set high
water mark (VmHWM), reset before each run through /proc/self/clear_refs, measured in a child
process whose glibc mmap threshold is pinned (MALLOC_MMAP_THRESHOLD_) so that every tensor above
64 KiB is mmap'd and handed back to the system when freed: the difference is then the memory the
call itself needed. Times are taken in this process, with the allocator as users have it.

Usage: python bench/bench_sdpa.py [--lengths 128 512 1024 2048] [--heads 8] [--head-dim 64]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils import benchmark

from autograder.chapters.ch04_self_attention.reference import (
    scaled_dot_product_attention as reference,
)

_STATUS = Path("/proc/self/status")


def _rss_kib(field: str) -> int:
    return int(re.search(rf"^{field}:\s+(\d+) kB", _STATUS.read_text(), re.M).group(1))


def peak_memory_bytes(fn, *args) -> int | None:
    """Extra memory the call needs at its peak, beyond what was resident before it."""
    gc.collect()
    if args[0].is_cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        out = fn(*args)
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - before
        del out
        return peak
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
    except OSError:
        return None
    before = _rss_kib("VmRSS")
    out = fn(*args)
    peak = (_rss_kib("VmHWM") - before) * 1024
    del out
    return peak


def median_seconds(fn, *args) -> float:
    timer = benchmark.Timer(
        stmt="fn(q, k, v)", globals={"fn": fn, "q": args[0], "k": args[1], "v": args[2]}
    )
    return timer.blocked_autorange(min_run_time=0.5).median


def mib(n: int | None) -> str:
    return "n/a" if n is None else f"{n / 2**20:8.1f}"


def inputs(B: int, H: int, L: int, D: int, device: str):
    g = torch.Generator().manual_seed(L)
    return tuple(torch.randn(B, H, L, D, generator=g).to(device) for _ in range(3))  # (B, H, L, D)


def peak_memory_in_child(B: int, H: int, L: int, D: int, device: str) -> tuple[int | None, ...]:
    """(reference, torch) peak bytes, measured by this script in a fresh child process."""
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_=str(64 * 1024))  # read by glibc at start-up
    argv = [sys.executable, __file__, "--memory-child", json.dumps([B, H, L, D, device])]
    out = subprocess.run(argv, env=env, capture_output=True, text=True, check=True).stdout
    return tuple(json.loads(out.strip().splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[128, 512, 1024, 2048])
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--head-dim", type=int, default=64)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--memory-child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        B, H, L, D, device = json.loads(args.memory_child)
        q, k, v = inputs(B, H, L, D, device)
        with torch.no_grad():
            reference(q, k, v), F.scaled_dot_product_attention(q, k, v)  # warm up
            print(
                json.dumps(
                    [
                        peak_memory_bytes(reference, q, k, v),
                        peak_memory_bytes(F.scaled_dot_product_attention, q, k, v),
                    ]
                )
            )
        return

    B, H, D = args.batch, args.heads, args.head_dim
    print(
        f"scaled dot-product attention, B={B}, H={H}, D={D}, float32, {args.device}, "
        f"{torch.get_num_threads()} threads, torch {torch.__version__}"
    )
    header = (
        f"{'L':>6} | {'ref ms':>8} {'torch ms':>9} {'time x':>7} | {'ref MiB':>8} "
        f"{'torch MiB':>9} {'mem x':>6} | {'max |diff|':>10}"
    )
    print(header)
    print("-" * len(header))
    worst = 0.0
    for L in args.lengths:
        q, k, v = inputs(B, H, L, D, args.device)  # (B, H, L, D) each
        with torch.no_grad():
            diff = (reference(q, k, v) - F.scaled_dot_product_attention(q, k, v)).abs().max()
            worst = max(worst, diff.item())
            t_ref = median_seconds(reference, q, k, v)
            t_torch = median_seconds(F.scaled_dot_product_attention, q, k, v)
        m_ref, m_torch = peak_memory_in_child(B, H, L, D, args.device)
        mem_ratio = "n/a" if m_ref is None or not m_torch else f"{m_ref / m_torch:6.1f}"
        print(
            f"{L:>6} | {t_ref * 1e3:8.2f} {t_torch * 1e3:9.2f} {t_ref / t_torch:7.2f} | "
            f"{mib(m_ref)} {mib(m_torch):>9} {mem_ratio:>6} | {diff.item():10.2e}"
        )
    print(
        f"largest absolute difference over all lengths: {worst:.2e} "
        f"({'within' if worst <= 1e-5 else 'OVER'} the 1e-5 fp32 target)"
    )


if __name__ == "__main__":
    main()
