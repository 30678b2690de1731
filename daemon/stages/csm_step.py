"""One CSM audio frame as fixed-shape tensor code: static KV caches, fused weights, no host syncs.

:class:`StaticStack` runs a Llama-style decoder stack (CSM's backbone or depth decoder)
against a preallocated KV cache. :class:`FrameStep` computes one frame from the backbone's
last hidden state: codebook 0 from the backbone head, codebooks 1..31 from 31 depth-decoder
steps, then the backbone step that consumes the new frame. Every piece has fixed shapes and
reads positions from device tensors, so the whole frame can be captured in one CUDA graph,
and each piece can be compiled with ``torch.compile`` (fusing the small element-wise kernels
that otherwise dominate: uncompiled, a frame is several thousand tiny kernels).
"""

from __future__ import annotations

import logging
from typing import Any, Callable

_LOGGER = logging.getLogger(__name__)


def _rope(x: Any, cos: Any, sin: Any) -> Any:
    import torch

    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rotated * sin


def _fuse(*linears: Any) -> Any:
    """Stack bias-free Linear weights into one matrix; the modules keep views of it (no copy)."""
    import torch

    if any(lin.bias is not None for lin in linears):
        raise ValueError("CSM layers with biases are not supported by the streaming loop")
    fused = torch.cat([lin.weight.detach() for lin in linears])
    start = 0
    for lin in linears:
        rows = lin.weight.shape[0]
        lin.weight.data = fused[start: start + rows]
        start += rows
    return fused


class StaticStack:
    """A Llama-style decoder stack stepped against a static KV cache (no Python-side state).

    ``forward(x, pos)`` takes ``(1, n, hidden)`` inputs at the positions in the long
    tensor ``pos`` (shape ``(n,)``), writes their keys/values into the cache and returns
    the final-normed outputs.
    """

    def __init__(self, model: Any, max_len: int, device: Any, dtype: Any) -> None:
        import torch

        cfg = model.config
        self.layers = list(model.layers)[: cfg.num_hidden_layers]
        self.norm = model.norm
        self.heads = cfg.num_attention_heads
        self.kv_heads = cfg.num_key_value_heads
        self.head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        self.max_len = max_len
        positions = torch.arange(max_len, device=device)
        probe = torch.zeros(1, 1, cfg.hidden_size, device=device, dtype=dtype)
        # The model's own rotary module, so any rope scaling (llama3 for csm-1b) is honoured.
        cos, sin = model.rotary_emb(probe, position_ids=positions[None])
        self.cos, self.sin = cos[0].to(dtype), sin[0].to(dtype)
        self.positions = positions
        shape = (1, self.kv_heads, max_len, self.head_dim)
        self.k = [torch.zeros(shape, device=device, dtype=dtype) for _ in self.layers]
        self.v = [torch.zeros(shape, device=device, dtype=dtype) for _ in self.layers]
        # One matrix-vector product instead of three (q, k, v) and two (gate, up) per layer.
        self.qkv = [_fuse(l.self_attn.q_proj, l.self_attn.k_proj, l.self_attn.v_proj) for l in self.layers]
        self.gate_up = [_fuse(l.mlp.gate_proj, l.mlp.up_proj) for l in self.layers]

    def forward(self, x: Any, pos: Any) -> Any:
        import torch.nn.functional as F

        n, kv_size = x.shape[1], self.kv_heads * self.head_dim
        mask = self.positions[None, :] <= pos[:, None]                 # (n, max_len)
        cos, sin = self.cos[pos], self.sin[pos]                        # (n, head_dim)
        for i, layer in enumerate(self.layers):
            attn, mlp = layer.self_attn, layer.mlp
            qkv = F.linear(layer.input_layernorm(x), self.qkv[i])
            q, k, v = qkv.split([self.heads * self.head_dim, kv_size, kv_size], dim=-1)
            q = _rope(q.view(1, n, self.heads, self.head_dim).transpose(1, 2), cos, sin)
            k = _rope(k.view(1, n, self.kv_heads, self.head_dim).transpose(1, 2), cos, sin)
            self.k[i].index_copy_(2, pos, k)
            self.v[i].index_copy_(2, pos, v.view(1, n, self.kv_heads, self.head_dim).transpose(1, 2))
            out = self._attend(q, self.k[i], self.v[i], mask, n)
            x = x + attn.o_proj(out.transpose(1, 2).reshape(1, n, self.heads * self.head_dim))
            gate, up = F.linear(layer.post_attention_layernorm(x), self.gate_up[i]).chunk(2, dim=-1)
            x = x + mlp.down_proj(mlp.act_fn(gate) * up)
        return self.norm(x)

    def _attend(self, q: Any, k: Any, v: Any, mask: Any, n: int) -> Any:
        """Grouped-query attention without copying K/V: fold each group's heads into rows.

        Written out (two products and a float32 softmax, as transformers' eager attention)
        rather than through SDPA: for one query row cuDNN's fused kernel took 10-30 us per
        call on an H100, several times the compiled products.
        """
        import torch

        groups = self.heads // self.kv_heads
        q = q.reshape(1, self.kv_heads, groups * n, self.head_dim)
        scores = torch.matmul(q, k.transpose(-1, -2)) * self.head_dim ** -0.5
        scores = scores.masked_fill(~mask.repeat(groups, 1)[None, None], float("-inf"))
        out = torch.matmul(torch.softmax(scores.float(), dim=-1).to(q.dtype), v)
        return out.reshape(1, self.heads, n, self.head_dim)

    def snapshot(self, length: int) -> list[tuple[Any, Any]]:
        return [(k[:, :, :length].clone(), v[:, :, :length].clone()) for k, v in zip(self.k, self.v)]

    def restore(self, saved: list[tuple[Any, Any]]) -> None:
        for (k, v), ck, cv in zip(saved, self.k, self.v):
            ck[:, :, : k.shape[2]].copy_(k)
            cv[:, :, : v.shape[2]].copy_(v)


class FrameStep:
    """The per-frame math of CSM over a backbone and a depth-decoder :class:`StaticStack`.

    ``noise`` is one row of exponential noise per codebook (drawn once per frame): sampling
    is ``argmax(p / noise)`` over the top-k, which draws from ``p`` without a host sync.
    """

    def __init__(self, model: Any, backbone: StaticStack, depth: StaticStack, *, codebook_size: int,
                 top_k: int, temperature: Any) -> None:
        import torch

        self.model, self.backbone, self.depth = model, backbone, depth
        self.dd = model.depth_decoder
        self.vocab = int(model.config.vocab_size)
        self.codebook_size, self.top_k, self.temperature = codebook_size, top_k, temperature
        device = temperature.device
        # Separate one-element tensors (not slices of one): compiled code sees the same
        # tensor layout at every codebook, so it is compiled once.
        self.depth_pos = [torch.tensor([q], device=device) for q in range(depth.max_len)]
        # Each codebook's head as its own tensor (130 MB more for csm-1b): indexing the
        # stacked weight by a device tensor copied a 4 MB slice every step.
        self.heads = [w.detach().clone() for w in self.dd.codebooks_head.weight]
        self.head0: Callable[..., Any] = self._head0
        self.depth_first: Callable[..., Any] = self._depth_first
        self.depth_step: Callable[..., Any] = self._depth_step
        self.backbone_step: Callable[..., Any] = self._backbone_step

    def compile(self) -> None:
        """``torch.compile`` each piece (CUDA); the first frames then take a while to compile."""
        import torch

        self.head0 = torch.compile(self._head0, dynamic=False)
        self.depth_first = torch.compile(self._depth_first, dynamic=False)
        self.depth_step = torch.compile(self._depth_step, dynamic=False)
        self.backbone_step = torch.compile(self._backbone_step, dynamic=False)

    def sample(self, logits: Any, noise: Any, greedy: bool) -> Any:
        import torch

        logits = logits[..., : self.codebook_size]
        if greedy:
            return logits.argmax(-1)
        values, index = torch.topk(logits.float() / self.temperature, self.top_k, dim=-1)
        probs = torch.softmax(values, dim=-1)
        return index.gather(-1, (probs / noise).argmax(-1, keepdim=True)).squeeze(-1)

    def _head0(self, h: Any, noise: Any, greedy: bool) -> Any:
        return self.sample(self.model.lm_head(h), noise[0], greedy)

    def _depth_first(self, h: Any) -> None:
        """Position 0 of the depth decoder is the backbone's hidden state itself."""
        self.depth.forward(self.dd.model.inputs_embeds_projector(h)[:, None], self.depth_pos[0])

    def _depth_step(self, code: Any, q: Any, head: Any, noise: Any, greedy: bool) -> Any:
        """Codebook ``q`` from codebook ``q - 1`` at depth position ``q``, with that codebook's head."""
        emb = self.dd.model.embed_tokens(code + (q - 1) * self.vocab)
        last = self.depth.forward(self.dd.model.inputs_embeds_projector(emb)[:, None], q)[:, -1]
        return self.sample(last @ head, noise.index_select(0, q)[0], greedy)

    def _backbone_step(self, frame: Any, pos: Any) -> Any:
        """The backbone consumes a frame (its codebooks' embeddings summed) at ``pos``."""
        embeds = self.model.backbone_model.embed_tokens(frame[None, None])
        return self.backbone.forward(embeds, pos)[:, -1]

    def frame(self, h: Any, pos: Any, noise: Any, greedy: bool) -> tuple[Any, Any]:
        """(codes ``(num_codebooks,)``, the backbone's next hidden state)."""
        import torch

        code = self.head0(h, noise, greedy)
        codes = [code]
        self.depth_first(h)
        for q in range(1, self.depth.max_len):
            code = self.depth_step(code, self.depth_pos[q], self.heads[q - 1], noise, greedy)
            codes.append(code)
        frame = torch.cat(codes)
        return frame, self.backbone_step(frame, pos)
