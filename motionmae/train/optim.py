"""Optimizer parts both training loops use: weight-decay groups, AdamW, the warm-up + cosine schedule, a step."""

from __future__ import annotations

import math

import torch


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """No weight decay on norms, biases (incl. q_bias / v_bias), mask tokens and position tables."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        if param.ndim <= 1 or name.endswith(("mask_token", "pos_embed")):
            no_decay.append(param)
        else:
            decay.append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def adamw(groups: list[dict], lr: float, betas) -> torch.optim.AdamW:
    """AdamW, fused into one kernel per step where this torch build supports it (CUDA; CPU from 2.4)."""
    try:
        return torch.optim.AdamW(groups, lr=lr, betas=tuple(betas), fused=True)
    except RuntimeError:
        return torch.optim.AdamW(groups, lr=lr, betas=tuple(betas))


def cosine_schedule(warmup_steps: int, total_steps: int, min_ratio: float):
    """lr multiplier per step: linear warm-up from 0, then cosine decay to `min_ratio`."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))

    return factor


def apply_gradients(
    model: torch.nn.Module, optimizer, scheduler, clip_grad: float | None, scaler: torch.amp.GradScaler | None = None
) -> None:
    """Clip (optionally), step the optimizer and the lr schedule, clear the gradients. An enabled loss
    `scaler` (fp16) unscales the gradients before clipping, and skips a step whose gradients overflowed."""
    scaler = scaler or torch.amp.GradScaler("cpu", enabled=False)  # a disabled one passes the calls through
    scaler.unscale_(optimizer)
    if clip_grad:
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip_grad)
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad(set_to_none=True)
    scheduler.step()
