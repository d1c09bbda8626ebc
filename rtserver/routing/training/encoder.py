"""MiniLM-L6 (BERT) sentence encoder in plain torch, exported to ONNX.

The module reproduces ``sentence-transformers/all-MiniLM-L6-v2``: a 6-layer BERT
followed by attention-masked mean pooling and L2 normalisation, so the exported
graph maps ``(input_ids, attention_mask)`` int64 ``[batch, seq]`` straight to a
unit-length ``embedding`` float32 ``[batch, 384]``. ``token_type_ids`` are
always zero for single sentences and are folded into the embeddings.
"""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import torch
from torch import nn
from torch.nn import functional as F

from rtserver.routing.training.weights import read_safetensors

OPSET = 17


@dataclass(frozen=True, slots=True)
class BertConfig:
    """The handful of ``config.json`` fields the encoder needs."""

    vocab_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    intermediate_size: int
    max_positions: int
    layer_norm_eps: float

    @classmethod
    def from_json(cls, path: Path) -> BertConfig:
        raw = json.loads(path.read_text())
        if raw.get("hidden_act", "gelu") != "gelu":
            raise ValueError(f"{path}: only the exact (erf) gelu activation is supported")
        return cls(
            vocab_size=int(raw["vocab_size"]),
            hidden_size=int(raw["hidden_size"]),
            num_layers=int(raw["num_hidden_layers"]),
            num_heads=int(raw["num_attention_heads"]),
            intermediate_size=int(raw["intermediate_size"]),
            max_positions=int(raw["max_position_embeddings"]),
            layer_norm_eps=float(raw["layer_norm_eps"]),
        )


class _Layer(nn.Module):
    def __init__(self, cfg: BertConfig) -> None:
        super().__init__()
        h = cfg.hidden_size
        self.heads = cfg.num_heads
        self.head_dim = h // cfg.num_heads
        self.query = nn.Linear(h, h)
        self.key = nn.Linear(h, h)
        self.value = nn.Linear(h, h)
        self.attn_out = nn.Linear(h, h)
        self.attn_norm = nn.LayerNorm(h, eps=cfg.layer_norm_eps)
        self.intermediate = nn.Linear(h, cfg.intermediate_size)
        self.output = nn.Linear(cfg.intermediate_size, h)
        self.out_norm = nn.LayerNorm(h, eps=cfg.layer_norm_eps)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        x = x.view((*x.size()[:-1], self.heads, self.head_dim))
        return x.permute(0, 2, 1, 3)

    def forward(self, x: torch.Tensor, additive_mask: torch.Tensor) -> torch.Tensor:
        q = self._split(self.query(x))
        k = self._split(self.key(x))
        v = self._split(self.value(x))
        scores = torch.matmul(q, k.transpose(-1, -2))
        scores = scores / math.sqrt(self.head_dim)
        scores = scores + additive_mask
        ctx = torch.matmul(torch.softmax(scores, dim=-1), v)
        ctx = ctx.permute(0, 2, 1, 3).contiguous()
        ctx = ctx.view((*ctx.size()[:-2], self.heads * self.head_dim))
        x = self.attn_norm(self.attn_out(ctx) + x)
        out: torch.Tensor = self.out_norm(self.output(F.gelu(self.intermediate(x))) + x)
        return out


class SentenceEncoder(nn.Module):
    """BERT + masked mean pooling + L2 normalisation; eval-only (no dropout)."""

    def __init__(self, cfg: BertConfig) -> None:
        super().__init__()
        self.word = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.position = nn.Embedding(cfg.max_positions, cfg.hidden_size)
        self.token_type = nn.Embedding(2, cfg.hidden_size)
        self.position_ids: torch.Tensor
        self.register_buffer("position_ids", torch.arange(cfg.max_positions).unsqueeze(0), persistent=False)
        self.emb_norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.layers = nn.ModuleList(_Layer(cfg) for _ in range(cfg.num_layers))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        seq = input_ids.size(1)
        positions = self.position_ids[:, :seq]
        token_types = torch.zeros_like(input_ids)
        x = self.word(input_ids) + self.token_type(token_types)
        x = self.emb_norm(x + self.position(positions))
        additive = attention_mask[:, None, None, :].to(x.dtype)
        additive = (1.0 - additive) * -10000.0
        for layer in self.layers:
            x = layer(x, additive)
        mask = attention_mask.unsqueeze(-1).to(x.dtype)
        summed = torch.sum(x * mask, dim=1)
        counts = torch.clamp(mask.sum(dim=1), min=1e-9)
        return F.normalize(summed / counts, p=2.0, dim=1)

    @classmethod
    def from_pretrained(cls, model_dir: Path) -> SentenceEncoder:
        """Load ``config.json`` + ``model.safetensors`` of a HF BERT checkpoint."""
        cfg = BertConfig.from_json(model_dir / "config.json")
        src = read_safetensors(model_dir / "model.safetensors")
        state: dict[str, torch.Tensor] = {
            "word.weight": _t(src["embeddings.word_embeddings.weight"]),
            "position.weight": _t(src["embeddings.position_embeddings.weight"]),
            "token_type.weight": _t(src["embeddings.token_type_embeddings.weight"]),
            "emb_norm.weight": _t(src["embeddings.LayerNorm.weight"]),
            "emb_norm.bias": _t(src["embeddings.LayerNorm.bias"]),
        }
        names = {
            "query": "attention.self.query",
            "key": "attention.self.key",
            "value": "attention.self.value",
            "attn_out": "attention.output.dense",
            "attn_norm": "attention.output.LayerNorm",
            "intermediate": "intermediate.dense",
            "output": "output.dense",
            "out_norm": "output.LayerNorm",
        }
        for i in range(cfg.num_layers):
            for ours, theirs in names.items():
                for part in ("weight", "bias"):
                    state[f"layers.{i}.{ours}.{part}"] = _t(src[f"encoder.layer.{i}.{theirs}.{part}"])
        model = cls(cfg)
        model.load_state_dict(state, strict=True)
        return model.eval()


def _t(array: npt.NDArray[np.generic]) -> torch.Tensor:
    return torch.from_numpy(np.array(array, dtype=np.float32))


def export_onnx(encoder: SentenceEncoder, path: Path) -> None:
    """Write ``encoder`` as a single-file ONNX graph with dynamic batch and sequence axes."""
    ids = torch.tensor([[101, 7592, 2088, 102]], dtype=torch.int64)
    mask = torch.ones_like(ids)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the TorchScript exporter is deliberate: stable graphs
        torch.onnx.export(
            encoder,
            (ids, mask),
            str(path),
            dynamo=False,
            input_names=["input_ids", "attention_mask"],
            output_names=["embedding"],
            dynamic_axes={
                "input_ids": {0: "batch", 1: "sequence"},
                "attention_mask": {0: "batch", 1: "sequence"},
                "embedding": {0: "batch"},
            },
            opset_version=OPSET,
            do_constant_folding=True,
        )
