"""A streaming decode loop for Sesame CSM (transformers' ``CsmForConditionalGeneration``).

Stock ``generate`` spends its time on per-step overhead: one backbone step and 31
depth-decoder steps per 80 ms frame, each a fresh Python forward with a growing cache
(310 ms per frame on an H100). This loop uses the model's own weights with

* static KV caches for the backbone (``max_len`` positions) and the depth decoder
  (``num_codebooks`` positions, overwritten every frame);
* one CUDA graph per sampling mode that runs a whole frame: codebook 0 from the backbone's
  last hidden state, the 31 depth-decoder steps, then the backbone step on the new frame;
* the reference-voice context prefilled once and its KV copied in for every utterance;
* audio decoded chunk by chunk (a small first chunk, then larger ones) by
  :class:`~daemon.stages.mimi_stream.MimiStreamDecoder`, seamless across chunks.

On the CPU (tests) the same step functions run eagerly. Greedy decoding reproduces stock
``generate(do_sample=False)`` frame for frame.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

from daemon.stages.base import ShouldStop, never_stop
from daemon.stages.mimi_stream import MimiStreamDecoder

_LOGGER = logging.getLogger(__name__)


@dataclass(frozen=True)
class Segment:
    """One turn of CSM's prompt: ``[speaker]text`` and, for context turns, its audio codes."""

    speaker: int
    text: str
    codes: Any = None            # (frames, num_codebooks) long tensor, or None


@dataclass(frozen=True)
class TextIds:
    """How text becomes token ids: ``encode`` without special tokens, plus BOS/EOS ids."""

    encode: Callable[[str], list[int]]
    bos_id: int
    eos_id: int


def _rope(x: Any, cos: Any, sin: Any) -> Any:
    import torch

    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rotated * sin


class _Stack:
    """A Llama-style decoder stack stepped against a static KV cache (no Python-side state).

    ``forward(x, pos)`` takes ``(1, n, hidden)`` inputs at the positions in the long
    tensor ``pos`` (shape ``(n,)``), writes their keys/values into the cache and returns
    the final-normed outputs. Shapes never change, so the step can be graph-captured.
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

    def forward(self, x: Any, pos: Any) -> Any:
        n = x.shape[1]
        mask = self.positions[None, :] <= pos[:, None]                 # (n, max_len)
        cos, sin = self.cos[pos], self.sin[pos]                        # (n, head_dim)
        for i, layer in enumerate(self.layers):
            attn = layer.self_attn
            h = layer.input_layernorm(x)
            q = attn.q_proj(h).view(1, n, self.heads, self.head_dim).transpose(1, 2)
            k = attn.k_proj(h).view(1, n, self.kv_heads, self.head_dim).transpose(1, 2)
            v = attn.v_proj(h).view(1, n, self.kv_heads, self.head_dim).transpose(1, 2)
            q, k = _rope(q, cos, sin), _rope(k, cos, sin)
            self.k[i].index_copy_(2, pos, k)
            self.v[i].index_copy_(2, pos, v)
            out = self._attend(q, self.k[i], self.v[i], mask, n)
            x = x + attn.o_proj(out.transpose(1, 2).reshape(1, n, self.heads * self.head_dim))
            x = x + layer.mlp(layer.post_attention_layernorm(x))
        return self.norm(x)

    def _attend(self, q: Any, k: Any, v: Any, mask: Any, n: int) -> Any:
        """Grouped-query attention without copying K/V: fold each group's heads into rows."""
        import torch.nn.functional as F

        groups = self.heads // self.kv_heads
        q = q.reshape(1, self.kv_heads, groups * n, self.head_dim)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask.repeat(groups, 1)[None, None])
        return out.reshape(1, self.heads, n, self.head_dim)

    def snapshot(self, length: int) -> list[tuple[Any, Any]]:
        return [(k[:, :, :length].clone(), v[:, :, :length].clone()) for k, v in zip(self.k, self.v)]

    def restore(self, saved: list[tuple[Any, Any]]) -> None:
        for (k, v), ck, cv in zip(saved, self.k, self.v):
            ck[:, :, : k.shape[2]].copy_(k)
            cv[:, :, : v.shape[2]].copy_(v)


class CsmStreamer:
    """Frame-by-frame CSM generation and chunked audio for one model, one caller at a time."""

    def __init__(self, model: Any, *, max_len: int | None = None, top_k: int = 50,
                 use_cuda_graphs: bool | None = None) -> None:
        import torch

        self.model = model.eval()
        self.config = model.config
        param = next(model.parameters())
        self.device, self.dtype = param.device, param.dtype
        self.num_codebooks = int(self.config.num_codebooks)
        self.vocab = int(self.config.vocab_size)
        self.max_len = min(max_len or self.config.max_position_embeddings, self.config.max_position_embeddings)
        codec_cfg = model.codec_model.config
        # CSM's vocabulary has 3 ids past Mimi's codebook (padding etc.) that Mimi cannot decode.
        self.codebook_size = min(self.vocab, int(codec_cfg.codebook_size))
        self.top_k = min(top_k, self.codebook_size)
        self.sample_rate = int(codec_cfg.sampling_rate)
        self.samples_per_frame = int(round(self.sample_rate / float(codec_cfg.frame_rate)))
        with torch.no_grad():
            self.backbone = _Stack(model.backbone_model, self.max_len, self.device, self.dtype)
            self.depth = _Stack(model.depth_decoder.model, self.num_codebooks, self.device, self.dtype)
        self.mimi = MimiStreamDecoder(model.codec_model)
        self.graphs = self.device.type == "cuda" if use_cuda_graphs is None else use_cuda_graphs
        self._h = torch.zeros(1, self.config.hidden_size, device=self.device, dtype=self.dtype)
        self._pos = torch.zeros(1, dtype=torch.long, device=self.device)
        self._codes = torch.zeros(self.num_codebooks, dtype=torch.long, device=self.device)
        self._temp = torch.ones(1, device=self.device, dtype=torch.float32)
        self._depth_pos = torch.arange(self.num_codebooks, device=self.device)
        self._captured: dict[bool, Any] = {}
        self._prefixes: dict[Any, tuple[int, list[tuple[Any, Any]]]] = {}

    # ------------------------------------------------------------- prompt
    def encode_audio(self, samples: Any) -> Any:
        """24 kHz mono float samples -> ``(frames, num_codebooks)`` Mimi codes."""
        import torch

        wav = torch.as_tensor(samples, dtype=torch.float32, device=self.device).reshape(1, 1, -1)
        with torch.no_grad():
            codes = self.model.codec_model.encode(wav.to(self.dtype)).audio_codes
        return codes[0, : self.num_codebooks].transpose(0, 1).contiguous()

    def embed(self, segments: Sequence[Segment], text_ids: TextIds) -> Any:
        """Backbone input embeddings ``(1, n, hidden)`` for segments, as CSM's chat template lays them out."""
        import torch

        parts = []
        with torch.no_grad():
            for seg in segments:
                ids = [text_ids.bos_id, *text_ids.encode(f"[{seg.speaker}]{seg.text}"), text_ids.eos_id]
                ids_t = torch.tensor([ids], dtype=torch.long, device=self.device)
                parts.append(self.model.embed_text_tokens(ids_t))
                if seg.codes is not None:
                    eos = torch.full((1, self.num_codebooks), int(self.config.codebook_eos_token_id),
                                     dtype=torch.long, device=self.device)
                    frames = torch.cat([seg.codes.to(self.device), eos])[None]
                    parts.append(self.model.backbone_model.embed_tokens(frames))
        return torch.cat(parts, dim=1).to(self.dtype)

    def prefill(self, embeds: Any, *, prefix_key: Any = None, prefix: Any = None) -> None:
        """Run the prompt through the backbone; a ``prefix`` (context) is computed once per key."""
        import torch

        start = 0
        with torch.no_grad():
            if prefix is not None:
                if prefix_key not in self._prefixes:
                    self._run_backbone(prefix, 0)
                    self._prefixes[prefix_key] = (prefix.shape[1], self.backbone.snapshot(prefix.shape[1]))
                start, saved = self._prefixes[prefix_key]
                self.backbone.restore(saved)
            self._run_backbone(embeds, start)

    def _run_backbone(self, embeds: Any, start: int) -> None:
        import torch

        n = embeds.shape[1]
        if start + n >= self.max_len:
            raise ValueError(f"CSM prompt of {start + n} positions exceeds the {self.max_len}-position cache")
        pos = torch.arange(start, start + n, device=self.device)
        out = self.backbone.forward(embeds, pos)
        self._h.copy_(out[:, -1])
        self._pos.fill_(start + n)

    def frames_left(self) -> int:
        return self.max_len - int(self._pos.item())

    # ------------------------------------------------------------- one frame
    def _sample(self, logits: Any, greedy: bool) -> Any:
        import torch

        logits = logits[..., : self.codebook_size]
        if greedy:
            return logits.argmax(-1)
        values, index = torch.topk(logits.float() / self._temp, self.top_k, dim=-1)
        probs = torch.softmax(values, dim=-1)
        # Exponential-race sampling: argmax(p / E) ~ Categorical(p), with no host sync.
        noise = torch.empty_like(probs).exponential_(1.0)
        return index.gather(-1, (probs / noise).argmax(-1, keepdim=True)).squeeze(-1)

    def _frame(self, greedy: bool) -> None:
        """Sample one frame's codebooks from ``_h``, then advance the backbone by that frame."""
        import torch

        model, dd = self.model, self.model.depth_decoder
        c0 = self._sample(model.lm_head(self._h), greedy)                      # (1,)
        codes = [c0]
        x = torch.stack([self._h, dd.model.embed_tokens(c0)], dim=1)
        last = self.depth.forward(dd.model.inputs_embeds_projector(x), self._depth_pos[:2])[:, -1]
        heads = dd.codebooks_head.weight
        for p in range(1, self.num_codebooks):
            code = self._sample(last @ heads[p - 1], greedy)
            codes.append(code)
            if p + 1 < self.num_codebooks:
                emb = dd.model.embed_tokens(code + p * self.vocab)[:, None]
                last = self.depth.forward(dd.model.inputs_embeds_projector(emb),
                                          self._depth_pos[p + 1: p + 2])[:, -1]
        frame = torch.cat(codes)
        self._codes.copy_(frame)
        out = self.backbone.forward(model.backbone_model.embed_tokens(frame[None, None]), self._pos)
        self._h.copy_(out[:, -1])
        self._pos.add_(1)

    def _capture(self, greedy: bool) -> Any:
        """Record ``_frame`` as a CUDA graph (after warm-up on a side stream, as CUDA requires)."""
        import torch

        h, pos = self._h.clone(), self._pos.clone()
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream), torch.no_grad():
            for _ in range(2):
                self._frame(greedy)
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph), torch.no_grad():
            self._frame(greedy)
        self._h.copy_(h)
        self._pos.copy_(pos)
        return graph

    def warm_up(self, greedy: bool = False) -> None:
        """Capture the frame graph now (a few seconds) rather than on the first utterance."""
        if self.graphs and greedy not in self._captured:
            self._graph(greedy)

    def _graph(self, greedy: bool) -> Any:
        if greedy not in self._captured:
            try:
                self._captured[greedy] = self._capture(greedy)
            except RuntimeError as exc:     # slower, still correct: run the frame eagerly
                _LOGGER.warning("CSM: CUDA graph capture failed (%s); decoding without graphs", exc)
                self.graphs = False
                return None
        return self._captured[greedy]

    def step(self, greedy: bool) -> Any:
        """Generate one frame; returns the ``(num_codebooks,)`` device tensor of its codes."""
        import torch

        graph = self._graph(greedy) if self.graphs else None
        if graph is not None:
            graph.replay()
        else:
            with torch.no_grad():
                self._frame(greedy)
        return self._codes

    # ------------------------------------------------------------- streaming
    def frames(self, *, max_frames: int, temperature: float, should_stop: ShouldStop = never_stop) -> Iterator[Any]:
        """Yield frames ``(num_codebooks,)`` (on the CPU) after :meth:`prefill` until EOS or a limit."""
        greedy = temperature <= 0
        self._temp.fill_(max(temperature, 1e-5))
        eos = int(self.config.codebook_eos_token_id)
        for _ in range(min(max_frames, self.frames_left() - 1)):
            if should_stop():
                return
            frame = self.step(greedy).to("cpu", copy=True)
            if bool((frame[:-1] == eos).all()):     # the EOS frame, as stock generate detects it
                return
            yield frame

    def stream(self, *, max_frames: int, temperature: float, first_chunk_frames: int, chunk_frames: int,
               should_stop: ShouldStop = never_stop) -> Iterator[tuple[Any, Any]]:
        """Yield ``(codes (frames, num_codebooks), audio float32 (samples,))`` chunks.

        The first chunk has ``first_chunk_frames`` frames, later ones ``chunk_frames``;
        the last may be shorter. Stops between frames once ``should_stop()`` is true.
        """
        import torch

        self.mimi.reset()
        pending: list[Any] = []
        want = max(1, first_chunk_frames)
        for frame in self.frames(max_frames=max_frames, temperature=temperature, should_stop=should_stop):
            pending.append(frame)
            if len(pending) >= want:
                yield self._decode(torch.stack(pending))
                pending, want = [], max(1, chunk_frames)
        if pending and not should_stop():
            yield self._decode(torch.stack(pending))

    def _decode(self, codes: Any) -> tuple[Any, Any]:
        audio = self.mimi.decode(codes.to(self.device).transpose(0, 1)[None])
        return codes, audio[0, 0].float().cpu().numpy()
