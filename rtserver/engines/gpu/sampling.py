"""Per-row sampling on the device, as pure functions of tensors.

Each row of a batch has its own temperature, top-p, repetition penalty and seed.
Randomness is counter-based: the noise for (seed, step, token id) is a fixed hash, so
a seeded request draws the same tokens whatever else shares its batch, on CPU or GPU.

* ``penalize(logits, seen, penalty)``: transformers' repetition penalty (a logit of a
  token already in the sequence is divided by the penalty when positive, multiplied
  when negative).
* ``top_p_keep(probs, top_p)``: the smallest set of most likely tokens whose mass
  reaches ``top_p`` (at least one token).
* ``uniform(seeds, steps, vocab)``: uniforms in (0, 1) from the hash.
* ``sample(...)``: penalty, then argmax for rows with temperature 0, else softmax of
  logits / T restricted to the top-p set, drawn by the exponential race
  ``argmax(p / E)``, E ~ Exp(1) (exact sampling from the renormalised distribution).
"""

from __future__ import annotations

import torch
from torch import Tensor

_M32 = 0xFFFFFFFF


def penalize(logits: Tensor, seen: Tensor, penalty: Tensor) -> Tensor:
    """``logits`` [B, V] float, ``seen`` [B, V] bool, ``penalty`` [B] float (1.0: none)."""
    p = penalty[:, None]
    scaled = torch.where(logits > 0, logits / p, logits * p)
    return torch.where(seen, scaled, logits)


def top_p_keep(probs: Tensor, top_p: Tensor) -> Tensor:
    """Bool [B, V]: the tokens inside each row's nucleus. ``top_p`` [B] in (0, 1]."""
    sorted_p, order = probs.sort(dim=-1, descending=True)
    before = sorted_p.cumsum(dim=-1) - sorted_p  # mass of the strictly more likely tokens
    keep_sorted = before < top_p[:, None]
    keep_sorted[:, 0] = True
    return torch.zeros_like(keep_sorted).scatter_(-1, order, keep_sorted)


def _mix(x: Tensor) -> Tensor:
    """lowbias32 (Chris Wellons): a 32-bit integer hash, computed in int64 and masked."""
    x = x & _M32
    x = x ^ (x >> 16)
    x = (x * 0x7FEB352D) & _M32
    x = x ^ (x >> 15)
    x = (x * 0x846CA68B) & _M32
    return x ^ (x >> 16)


def uniform(seeds: Tensor, steps: Tensor, vocab: int) -> Tensor:
    """[B, V] floats in (0, 1), a pure function of (seed, step, token id); ``seeds``/``steps`` int64 [B]."""
    ids = torch.arange(vocab, device=seeds.device, dtype=torch.int64)
    key = _mix(_mix(seeds[:, None] ^ 0x5BD1E995) ^ (steps[:, None] * 0x9E3779B1 & _M32))
    bits = _mix(key ^ (ids[None, :] * 0x85EBCA6B & _M32))
    return ((bits >> 9).float() + 0.5) / 8388608.0  # 23 bits: exact in float32, never 0 or 1


def sample(
    logits: Tensor, *, temperature: Tensor, top_p: Tensor, penalty: Tensor, seen: Tensor | None,
    seeds: Tensor, steps: Tensor, any_sampled: bool = True, any_top_p: bool = True,
) -> Tensor:
    """Next token per row (int64 [B]). Rows with ``temperature <= 0`` are greedy.

    ``any_sampled``/``any_top_p`` are host-side hints (False skips work no row needs);
    ``seen`` may be None when no row has a penalty.
    """
    if seen is not None:
        logits = penalize(logits, seen, penalty)
    greedy = logits.argmax(dim=-1)
    if not any_sampled:
        return greedy
    t = temperature.clamp_min(1e-5)[:, None]
    probs = torch.softmax(logits / t, dim=-1)
    if any_top_p:
        probs = torch.where(top_p_keep(probs, top_p), probs, 0.0)
    race = probs / -torch.log(uniform(seeds, steps, logits.shape[-1]))
    drawn = race.argmax(dim=-1)
    return torch.where(temperature > 0, drawn, greedy)
