"""A streaming decode loop for Sesame CSM (transformers' ``CsmForConditionalGeneration``).

Stock ``generate`` spends its time on per-step overhead: one backbone step and 31
depth-decoder steps per 80 ms frame, each a fresh Python forward with a growing cache
(310 ms per frame on an H100). This loop uses the model's own weights with

* static KV caches for the backbone (``max_len`` positions) and the depth decoder
  (``num_codebooks`` positions, overwritten every frame) - see :mod:`daemon.stages.csm_step`;
* on CUDA, the frame's pieces compiled with ``torch.compile`` (kernel fusion) and the whole
  frame (codebook 0, 31 depth steps, the backbone step) replayed as one CUDA graph;
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
from daemon.stages.csm_step import FrameStep, StaticStack
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


class CsmStreamer:
    """Frame-by-frame CSM generation and chunked audio for one model, one caller at a time."""

    def __init__(self, model: Any, *, max_len: int | None = None, top_k: int = 50,
                 use_cuda_graphs: bool | None = None, compile_steps: bool | None = None) -> None:
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
        if self.dtype != torch.float32:
            # Mimi is small: decoding in float32 keeps chunk seams exact (bf16 leaves ~1% errors).
            model.codec_model.float()
            for module in model.codec_model.modules():
                if getattr(module, "_embed", None) is not None:
                    module._embed = None         # Mimi's cached codebook, still in the old dtype
        with torch.no_grad():
            self.backbone = StaticStack(model.backbone_model, self.max_len, self.device, self.dtype)
            self.depth = StaticStack(model.depth_decoder.model, self.num_codebooks, self.device, self.dtype)
        self.mimi = MimiStreamDecoder(model.codec_model)
        cuda = self.device.type == "cuda"
        self.graphs = cuda if use_cuda_graphs is None else use_cuda_graphs
        self._h = torch.zeros(1, self.config.hidden_size, device=self.device, dtype=self.dtype)
        self._pos = torch.zeros(1, dtype=torch.long, device=self.device)
        self._codes = torch.zeros(self.num_codebooks, dtype=torch.long, device=self.device)
        self._temp = torch.ones(1, device=self.device, dtype=torch.float32)
        self._noise = torch.ones(self.num_codebooks, self.top_k, device=self.device, dtype=torch.float32)
        self.steps = FrameStep(model, self.backbone, self.depth, codebook_size=self.codebook_size,
                               top_k=self.top_k, temperature=self._temp)
        self.compiled = cuda if compile_steps is None else compile_steps
        if self.compiled:
            self.steps.compile()
        self._captured: dict[bool, Any] = {}
        self._prefixes: dict[Any, tuple[int, list[tuple[Any, Any]]]] = {}

    # ------------------------------------------------------------- prompt
    def encode_audio(self, samples: Any) -> Any:
        """24 kHz mono float samples -> ``(frames, num_codebooks)`` Mimi codes."""
        import torch

        codec = self.model.codec_model
        dtype = next(codec.parameters()).dtype            # float32: see __init__
        wav = torch.as_tensor(samples, dtype=dtype, device=self.device).reshape(1, 1, -1)
        with torch.no_grad():
            codes = codec.encode(wav).audio_codes
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
    def _frame(self, greedy: bool) -> None:
        """Sample one frame's codebooks from ``_h``, then advance the backbone by that frame."""
        if not greedy:
            self._noise.exponential_(1.0)
        frame, h = self.steps.frame(self._h, self._pos, self._noise, greedy)
        self._codes.copy_(frame)
        self._h.copy_(h)
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
        while greedy not in self._captured:
            try:
                self._captured[greedy] = self._capture(greedy)
            except Exception as exc:  # noqa: BLE001 - slower but still correct without them
                if self.compiled:
                    _LOGGER.warning("CSM: compiled frame failed (%s); using the uncompiled one", _line(exc))
                    self.steps = FrameStep(self.model, self.backbone, self.depth, codebook_size=self.codebook_size,
                                           top_k=self.top_k, temperature=self._temp)
                    self.compiled = False
                    continue
                _LOGGER.warning("CSM: CUDA graph capture failed (%s); decoding without graphs", _line(exc))
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


def _line(exc: Exception) -> str:
    return " ".join(str(exc).split())[:300] or type(exc).__name__
