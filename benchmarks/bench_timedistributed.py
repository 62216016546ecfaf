"""TimeDistributed benchmark: overhead, loop speed-up, time-major folding, chunked peak memory.

    python benchmarks/bench_timedistributed.py            # CPU, and CUDA when available
    python benchmarks/bench_timedistributed.py --quick    # fewer repeats

Prints medians of repeated runs. Peak memory is CUDA ``max_memory_allocated`` on a GPU,
and on the CPU the peak RSS growth of a fresh subprocess during one forward.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

import torch
import torchvision
from torch import Tensor, nn

from tdvideo import TimeDistributed


def naive_fold(module: nn.Module, x: Tensor) -> Tensor:
    """The hand-rolled version people copy: contiguous() + view, then view back."""
    b, t = x.shape[:2]
    y = module(x.contiguous().view(b * t, *x.shape[2:]))
    return y.view(b, t, *y.shape[1:])


def median_ms(fn: Callable[[], object], device: torch.device, repeats: int, warmup: int = 2) -> float:
    times = []
    for i in range(warmup + repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= warmup:
            times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def models(device: torch.device) -> dict[str, tuple[nn.Module, tuple[int, ...]]]:
    """name -> (per-frame module, (B, T, ...) input shape)."""
    big = device.type == "cuda"
    return {
        "resnet18 @112": (torchvision.models.resnet18(weights=None), (4 if big else 2, 16, 3, 112, 112)),
        "conv3x3 16ch @64": (nn.Conv2d(3, 16, 3, padding=1), (8, 32, 3, 64, 64)),
        "linear 256->256": (nn.Linear(256, 256), (64, 128, 256)),
        # Cheap per-element work: here a copy of the input is a large part of the cost.
        "layernorm 256": (nn.LayerNorm(256), (64, 128, 256)),
    }


def bench_speed(device: torch.device, repeats: int) -> None:
    print(f"\n== speed on {device} (median of {repeats} runs, ms) ==")
    header = f"{'module':<18} {'direct':>9} {'ours':>9} {'overhead':>9} {'loop':>9} {'speed-up':>9}"
    print(header)
    for name, (module, shape) in models(device).items():
        module = module.to(device).eval()
        x = torch.randn(shape, device=device)
        folded = x.flatten(0, 1)
        td = TimeDistributed(module)
        with torch.inference_mode():
            # Interleave the contenders so drifting clocks hit both alike.
            direct, ours = [], []
            for _ in range(repeats):
                direct.append(median_ms(lambda module=module, folded=folded: module(folded), device, 1, warmup=1))
                ours.append(median_ms(lambda td=td, x=x: td(x), device, 1, warmup=1))
            d, o = statistics.median(direct), statistics.median(ours)
            loop = median_ms(lambda module=module, x=x: torch.stack([module(x[:, t]) for t in range(x.size(1))], 1), device, max(3, repeats // 3))
        print(f"{name:<18} {d:>9.2f} {o:>9.2f} {100 * (o - d) / d:>8.1f}% {loop:>9.2f} {loop / o:>8.1f}x")
    x = torch.randn(2, 3, 4, device=device)
    identity = TimeDistributed(nn.Identity())
    cost = median_ms(lambda: identity(x), device, 200) * 1e3
    print(f"wrapper cost alone (nn.Identity, tiny input): {cost:.1f} us per call")


def bench_time_major(device: torch.device, repeats: int) -> None:
    print(f"\n== time-major input on {device}: x = x_tbchw.transpose(0, 1) (median ms) ==")
    print(f"{'module':<18} {'contiguous().view':>18} {'ours':>9} {'ratio':>7}")
    for name, (module, shape) in models(device).items():
        module = module.to(device).eval()
        b, t, *rest = shape
        x = torch.randn(t, b, *rest, device=device).transpose(0, 1)
        td = TimeDistributed(module)
        with torch.inference_mode():
            naive = median_ms(lambda module=module, x=x: naive_fold(module, x), device, repeats)
            ours = median_ms(lambda td=td, x=x: td(x), device, repeats)
        print(f"{name:<18} {naive:>18.2f} {ours:>9.2f} {naive / ours:>6.2f}x")


_CHILD = """
import sys, torch
from torch import nn
from tdvideo import TimeDistributed

def rss_kib(field):
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith(field))

chunk = None if sys.argv[1] == "none" else int(sys.argv[1])
module = nn.Sequential(nn.Conv2d(3, 64, 3, padding=1), nn.ReLU(), nn.Conv2d(64, 64, 3, padding=1),
                       nn.AdaptiveAvgPool2d(1), nn.Flatten()).eval()
x = torch.randn(4, 64, 3, 112, 112)
with open("/proc/self/clear_refs", "w") as fh:
    fh.write("5")  # reset the peak-RSS mark (VmHWM): imports and setup no longer count
before = rss_kib("VmRSS:")
with torch.inference_mode():
    TimeDistributed(module, chunk_size=chunk)(x)
print(rss_kib("VmHWM:") - before)
"""


def _child_peak_kib(chunk: int | None) -> int:
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, "none" if chunk is None else str(chunk)],
        capture_output=True, text=True, check=True,
    )
    return int(out.stdout.strip())


def bench_memory(device: torch.device) -> None:
    print(f"\n== peak memory on {device}: 2x conv 64ch @112, B=4, T=64 (256 frames) ==")
    for chunk in (None, 64, 16):
        if device.type == "cuda":
            module = nn.Sequential(
                nn.Conv2d(3, 64, 3, padding=1), nn.ReLU(), nn.Conv2d(64, 64, 3, padding=1),
                nn.AdaptiveAvgPool2d(1), nn.Flatten(),
            ).to(device).eval()
            x = torch.randn(4, 64, 3, 112, 112, device=device)
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
            with torch.inference_mode():
                TimeDistributed(module, chunk_size=chunk)(x)
            torch.cuda.synchronize()
            peak_mib = (torch.cuda.max_memory_allocated() - base) / 2**20
            label = "CUDA max_memory_allocated above the input"
        else:
            peak_mib = _child_peak_kib(chunk) / 1024
            label = "peak RSS during the forward above RSS before it, fresh subprocess (Linux VmHWM)"
        print(f"chunk_size={chunk!s:<5} {peak_mib:>9.1f} MiB   ({label})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    parser.add_argument("--device", choices=["cpu", "cuda", "all"], default="all")
    args = parser.parse_args()
    repeats = 5 if args.quick else 15
    devices = [torch.device("cpu")] if args.device != "cuda" else []
    if args.device != "cpu" and torch.cuda.is_available():
        devices.append(torch.device("cuda"))
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads"
          + (f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""))
    for device in devices:
        bench_speed(device, repeats)
        bench_time_major(device, repeats)
        bench_memory(device)


if __name__ == "__main__":
    main()
