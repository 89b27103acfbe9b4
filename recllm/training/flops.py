"""What training achieves against what the machine can do: FLOP counting and the matmul rate.

FLOPs are counted by torch's own `FlopCounterMode` (matmuls and attention, forward and
backward). It has no formula for the CPU flash-attention kernel that `scaled_dot_product_attention`
runs on CPU, so one is registered here from torch's own attention formulas; without it a
CPU run would leave its attention matmuls uncounted.
"""

from __future__ import annotations

import time

import torch
from torch.utils.flop_counter import (FlopCounterMode, flop_registry, register_flop_formula, sdpa_backward_flop_count,
                                      sdpa_flop_count)

_CPU_ATTENTION = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
_CPU_ATTENTION_BACKWARD = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward

if _CPU_ATTENTION.default not in flop_registry and _CPU_ATTENTION not in flop_registry:
    @register_flop_formula(_CPU_ATTENTION)
    def _cpu_attention_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
        return sdpa_flop_count(query_shape, key_shape, value_shape)

if _CPU_ATTENTION_BACKWARD.default not in flop_registry and _CPU_ATTENTION_BACKWARD not in flop_registry:
    @register_flop_formula(_CPU_ATTENTION_BACKWARD)
    def _cpu_attention_backward_flops(grad_out_shape, query_shape, key_shape, value_shape, *args, out_shape=None,
                                      **kwargs) -> int:
        return sdpa_backward_flop_count(grad_out_shape, query_shape, key_shape, value_shape)


def flop_counter() -> FlopCounterMode:
    """A silent counter: run forward and backward inside it, then read `get_total_flops()`."""
    return FlopCounterMode(display=False)


def matmul_rate(seconds: float = 0.5, n: int = 1024, trials: int = 3) -> float:
    """This process's fp32 FLOP/s on square matmuls, the best of `trials` windows sharing `seconds` (every rank
    measuring at once: the machine's share; the best, so a neighbour's burst cannot make training look busier)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    best = 0.0
    for _ in range(trials):
        reps, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds / trials:
            torch.mm(a, b)
            reps += 1
        best = max(best, 2.0 * n ** 3 * reps / (time.perf_counter() - start))
    return best
