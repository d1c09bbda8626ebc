"""A small Llama/Qwen2 forward over a static, slotted KV cache (gpt-fast style).

The weights come from a Hugging Face ``LlamaForCausalLM`` or ``Qwen2ForCausalLM``
(``from_hf``); q/k/v and gate/up are fused into one matmul each. The KV cache is two
tensors ``[layers, slots, max_len, kv_heads, head_dim]``; every row of a batch is a
slot at its own position, which transformers' ``StaticCache`` does not give.

* ``prefill(tokens, slot, start)`` writes positions ``start … start+T-1`` of one slot
  and returns the logits of the last one.
* ``decode(tokens, pos, active, kv_len)`` advances slots ``0 … B-1`` by one token each;
  rows with ``active`` False leave the cache untouched (their output is garbage). Its
  shapes depend only on ``(B, kv_len)``, so it can be captured as a CUDA graph.

Supported: ``model_type`` llama or qwen2, SiLU MLP without bias, RoPE of type default,
linear, llama3 or yarn (position-independent inverse frequencies); Qwen2's q/k/v bias
and Llama's ``attention_bias``. Anything else raises ``UnsupportedModel``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rtserver.exceptions import EngineError

SUPPORTED_TYPES = ("llama", "qwen2")
STATIC_ROPE = ("default", "linear", "llama3", "yarn")


class UnsupportedModel(EngineError):
    """The model's architecture or options are not ones this forward implements."""


@dataclass(frozen=True, slots=True)
class ModelArgs:
    vocab_size: int
    dim: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    intermediate: int
    norm_eps: float
    qkv_bias: bool
    o_bias: bool
    max_positions: int


def check_supported(config: Any) -> None:
    """Raise ``UnsupportedModel`` with the reason when ``config`` is outside what ``Transformer`` computes."""
    kind = getattr(config, "model_type", "?")
    if kind not in SUPPORTED_TYPES:
        raise UnsupportedModel(f"the gpu engine supports {', '.join(SUPPORTED_TYPES)} models, not {kind!r}")
    act = getattr(config, "hidden_act", "silu")
    if act != "silu":
        raise UnsupportedModel(f"the gpu engine needs a SiLU MLP; this model uses {act!r}")
    if getattr(config, "mlp_bias", False):
        raise UnsupportedModel("the gpu engine does not support mlp_bias")
    if getattr(config, "use_sliding_window", False):
        raise UnsupportedModel("the gpu engine does not support sliding-window attention")
    if getattr(config, "pretraining_tp", 1) not in (1, None):
        raise UnsupportedModel("the gpu engine does not support pretraining_tp > 1")


def rope_inv_freq(config: Any) -> tuple[Tensor, float]:
    """The inverse frequencies and cos/sin scale transformers uses for this config."""
    params = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {}
    rope_type = str(params.get("rope_type", params.get("type", "default")))
    if rope_type not in STATIC_ROPE:
        raise UnsupportedModel(f"the gpu engine does not support RoPE type {rope_type!r} (length-dependent)")
    if rope_type == "default":
        theta = float(params.get("rope_theta", getattr(config, "rope_theta", 10000.0)))
        dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        return 1.0 / (theta ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim)), 1.0
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    inv_freq, scale = ROPE_INIT_FUNCTIONS[rope_type](config, "cpu")
    return inv_freq.float().cpu(), float(scale)


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * h.to(x.dtype)


def rotate(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """HF's non-interleaved RoPE: ``x*cos + rotate_half(x)*sin``; cos/sin are [B, T, 1, head_dim]."""
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rotated * sin


class Attention(nn.Module):
    def __init__(self, a: ModelArgs) -> None:
        super().__init__()
        self.a = a
        q, kv = a.n_heads * a.head_dim, a.n_kv_heads * a.head_dim
        self.wqkv = nn.Linear(a.dim, q + 2 * kv, bias=a.qkv_bias)
        self.wo = nn.Linear(q, a.dim, bias=a.o_bias)

    def forward(
        self, x: Tensor, cos: Tensor, sin: Tensor, mask: Tensor, k_cache: Tensor, v_cache: Tensor,
        rows: Tensor, pos: Tensor, keep: Tensor | None, kv_len: int,
    ) -> Tensor:
        """``k_cache``/``v_cache``: this layer's [slots_in_batch, max_len, kv_heads, head_dim] views."""
        a = self.a
        b, t, _ = x.shape
        q_size, kv_size = a.n_heads * a.head_dim, a.n_kv_heads * a.head_dim
        q, k, v = self.wqkv(x).split([q_size, kv_size, kv_size], dim=-1)
        q = rotate(q.view(b, t, a.n_heads, a.head_dim), cos, sin)
        k = rotate(k.view(b, t, a.n_kv_heads, a.head_dim), cos, sin)
        v = v.view(b, t, a.n_kv_heads, a.head_dim)
        if keep is not None:  # decode: inactive rows write back what was there
            k = torch.where(keep, k, k_cache[rows, pos])
            v = torch.where(keep, v, v_cache[rows, pos])
        k_cache.index_put_((rows, pos), k)
        v_cache.index_put_((rows, pos), v)
        keys = k_cache[:, :kv_len].transpose(1, 2)  # [B, kv_heads, L, head_dim]
        values = v_cache[:, :kv_len].transpose(1, 2)
        rep = a.n_heads // a.n_kv_heads
        # grouped queries: the `rep` heads sharing a kv head become extra query rows, so no K/V copy
        q = q.view(b, t, a.n_kv_heads, rep, a.head_dim).permute(0, 2, 3, 1, 4).reshape(b, a.n_kv_heads, rep * t, a.head_dim)
        out = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask)
        out = out.view(b, a.n_kv_heads, rep, t, a.head_dim).permute(0, 3, 1, 2, 4).reshape(b, t, q_size)
        return self.wo(out)  # type: ignore[no-any-return]


class FeedForward(nn.Module):
    def __init__(self, a: ModelArgs) -> None:
        super().__init__()
        self.w13 = nn.Linear(a.dim, 2 * a.intermediate, bias=False)
        self.w2 = nn.Linear(a.intermediate, a.dim, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        gate, up = self.w13(x).chunk(2, dim=-1)
        return self.w2(F.silu(gate) * up)  # type: ignore[no-any-return]


class Block(nn.Module):
    def __init__(self, a: ModelArgs) -> None:
        super().__init__()
        self.attention_norm = RMSNorm(a.dim, a.norm_eps)
        self.attention = Attention(a)
        self.ffn_norm = RMSNorm(a.dim, a.norm_eps)
        self.feed_forward = FeedForward(a)


class Transformer(nn.Module):
    inv_freq: Tensor

    def __init__(self, a: ModelArgs, inv_freq: Tensor, rope_scale: float) -> None:
        super().__init__()
        self.args = a
        self.tok_embeddings = nn.Embedding(a.vocab_size, a.dim)
        self.layers = nn.ModuleList(Block(a) for _ in range(a.n_layers))
        self.norm = RMSNorm(a.dim, a.norm_eps)
        self.output = nn.Linear(a.dim, a.vocab_size, bias=False)
        self.register_buffer("inv_freq", inv_freq.float(), persistent=False)
        self.rope_scale = rope_scale
        self.k_cache: Tensor | None = None
        self.v_cache: Tensor | None = None

    def setup_cache(self, slots: int, max_len: int) -> None:
        """Allocate the KV cache: ``slots`` sequences of up to ``max_len`` positions each."""
        a = self.args
        shape = (a.n_layers, slots, max_len, a.n_kv_heads, a.head_dim)
        dev, dt = self.output.weight.device, self.output.weight.dtype
        self.k_cache = torch.zeros(shape, device=dev, dtype=dt)
        self.v_cache = torch.zeros(shape, device=dev, dtype=dt)

    def _run(self, tokens: Tensor, pos: Tensor, slots: slice, keep: Tensor | None, kv_len: int) -> Tensor:
        assert self.k_cache is not None and self.v_cache is not None
        b, t = tokens.shape
        x = self.tok_embeddings(tokens)
        freqs = pos.float()[..., None] * self.inv_freq
        emb = torch.cat((freqs, freqs), dim=-1)
        cos = (emb.cos() * self.rope_scale).to(x.dtype)[:, :, None, :]
        sin = (emb.sin() * self.rope_scale).to(x.dtype)[:, :, None, :]
        rep = self.args.n_heads // self.args.n_kv_heads
        span = torch.arange(kv_len, device=tokens.device)
        mask = span[None, None, :] <= pos[:, :, None]  # [B, T, L]
        mask = mask[:, None, None].expand(b, 1, rep, t, kv_len).reshape(b, 1, rep * t, kv_len)
        rows = torch.arange(b, device=tokens.device)[:, None].expand(b, t)
        for i, layer in enumerate(cast("list[Block]", self.layers)):
            h = layer.attention_norm(x)
            x = x + layer.attention(h, cos, sin, mask, self.k_cache[i, slots], self.v_cache[i, slots],
                                    rows, pos, keep, kv_len)
            x = x + layer.feed_forward(layer.ffn_norm(x))
        return cast(Tensor, self.norm(x))

    def prefill(self, tokens: Tensor, slot: int, start: int) -> Tensor:
        """Logits [1, vocab] (float32) after writing ``tokens`` [1, T] at ``start …`` of ``slot``."""
        t = tokens.shape[1]
        pos = torch.arange(start, start + t, device=tokens.device)[None]
        h = self._run(tokens, pos, slice(slot, slot + 1), None, start + t)
        return self.output(h[:, -1]).float()  # type: ignore[no-any-return]

    def decode(self, tokens: Tensor, pos: Tensor, active: Tensor, kv_len: int) -> Tensor:
        """Logits [B, vocab] (float32) of slots ``0 … B-1``, each fed ``tokens[b]`` at ``pos[b]``."""
        b = tokens.shape[0]
        keep = active[:, None, None, None]
        h = self._run(tokens[:, None], pos[:, None], slice(0, b), keep, kv_len)
        return self.output(h[:, 0]).float()  # type: ignore[no-any-return]


@torch.no_grad()
def from_hf(hf: Any) -> Transformer:
    """A ``Transformer`` holding ``hf``'s weights (same device and dtype). ``hf`` can be dropped afterwards."""
    config = hf.config
    check_supported(config)
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    inner = hf.model
    qkv_bias = inner.layers[0].self_attn.q_proj.bias is not None
    o_bias = inner.layers[0].self_attn.o_proj.bias is not None
    a = ModelArgs(
        vocab_size=config.vocab_size, dim=config.hidden_size, n_layers=config.num_hidden_layers,
        n_heads=config.num_attention_heads, n_kv_heads=config.num_key_value_heads, head_dim=head_dim,
        intermediate=config.intermediate_size, norm_eps=float(config.rms_norm_eps), qkv_bias=qkv_bias, o_bias=o_bias,
        max_positions=int(getattr(config, "max_position_embeddings", 4096)),
    )
    inv_freq, scale = rope_inv_freq(config)
    weight = hf.get_output_embeddings().weight
    with torch.device("meta"):
        model = Transformer(a, torch.empty(inv_freq.shape), scale)
    model = model.to_empty(device=weight.device).to(weight.dtype)
    model.inv_freq = inv_freq.to(weight.device)
    model.tok_embeddings.weight.copy_(inner.embed_tokens.weight)
    model.norm.weight.copy_(inner.norm.weight)
    model.output.weight.copy_(weight)
    for mine, theirs in zip(cast("list[Block]", model.layers), inner.layers, strict=True):
        att, mlp = theirs.self_attn, theirs.mlp
        mine.attention.wqkv.weight.copy_(torch.cat([att.q_proj.weight, att.k_proj.weight, att.v_proj.weight]))
        if qkv_bias:
            mine.attention.wqkv.bias.copy_(torch.cat([att.q_proj.bias, att.k_proj.bias, att.v_proj.bias]))
        mine.attention.wo.weight.copy_(att.o_proj.weight)
        if o_bias:
            mine.attention.wo.bias.copy_(att.o_proj.bias)
        mine.feed_forward.w13.weight.copy_(torch.cat([mlp.gate_proj.weight, mlp.up_proj.weight]))
        mine.feed_forward.w2.weight.copy_(mlp.down_proj.weight)
        mine.attention_norm.weight.copy_(theirs.input_layernorm.weight)
        mine.ffn_norm.weight.copy_(theirs.post_attention_layernorm.weight)
    return model.eval()
