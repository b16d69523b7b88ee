"""Wall time, peak memory and the device's plain matmul GFLOP/s, as the benchmarks measure them."""

from __future__ import annotations

import ctypes
import os
import threading
import time
from typing import Callable

import torch

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


class PeakMemory:
    """Peak memory above the starting point: CUDA allocator stats, or RSS sampled every 2 ms on CPU."""

    def __init__(self, device: torch.device):
        self.device = device
        self.peak_bytes = 0

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated()
        else:
            _return_free_memory_to_os()
            self.base = _rss_bytes()
            self.peak_bytes = 0
            self._stop = threading.Event()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self):
        while not self._stop.wait(0.002):
            self.peak_bytes = max(self.peak_bytes, _rss_bytes() - self.base)

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            self.peak_bytes = torch.cuda.max_memory_allocated() - self.base
        else:
            self._stop.set()
            self._thread.join()
            self.peak_bytes = max(self.peak_bytes, _rss_bytes() - self.base)

    @property
    def mib(self) -> float:
        return self.peak_bytes / 2**20


def _return_free_memory_to_os() -> None:
    """So that one model's freed heap does not hide the next model's peak from RSS."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def sync(device: torch.device) -> None:
    """Waits for queued CUDA kernels, so that a timer stopped after it measures the work."""
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn: Callable[[], torch.Tensor], device: torch.device, repeats: int) -> tuple[float, float, torch.Tensor]:
    """Best wall time over repeats, peak memory of the first run, and the output."""
    best = float("inf")
    peak = None
    for _ in range(repeats):
        with PeakMemory(device) as memory:
            sync(device)
            start = time.perf_counter()
            out = fn()
            sync(device)
            best = min(best, time.perf_counter() - start)
        peak = memory.mib if peak is None else peak
    return best, peak, out


def matmul_gflops(device: torch.device, dtype: torch.dtype) -> float:
    n = 8192 if device.type == "cuda" else 2048
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    a @ b
    repeats = 20 if device.type == "cuda" else 3
    sync(device)
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    sync(device)
    return 2 * n**3 * repeats / (time.perf_counter() - start) / 1e9
