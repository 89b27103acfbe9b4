"""FLOP counting and the machine's matmul rate, as the training loop reports them."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import sdpa_backward_flop_count

from recllm.training.flops import flop_counter, matmul_rate


def test_a_linear_layers_flops_are_counted_forward_and_backward():
    x = torch.randn(8, 16, requires_grad=True)
    w = torch.randn(32, 16, requires_grad=True)
    with flop_counter() as counter:
        F.linear(x, w).sum().backward()
    assert counter.get_total_flops() == 3 * 2 * 8 * 16 * 32  # forward, and two matmuls backward


def test_cpu_attention_is_counted_like_torchs_own_attention_formula():
    q, k, v = (torch.randn(2, 4, 10, 8, requires_grad=True) for _ in range(3))
    mask = torch.ones(2, 1, 10, 10, dtype=torch.bool).tril()
    with flop_counter() as counter:
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    forward = counter.get_total_flops()
    assert forward == 2 * (2 * 2 * 4 * 10 * 10 * 8)  # QK^T and AV, each 2*b*h*s*s*d
    with flop_counter() as counter:
        out.sum().backward()
    assert counter.get_total_flops() == sdpa_backward_flop_count(q.shape, q.shape, k.shape, v.shape) > forward


def test_the_matmul_rate_is_a_plausible_flop_rate():
    rate = matmul_rate(seconds=0.1, n=256)
    assert 1e8 < rate < 1e14
