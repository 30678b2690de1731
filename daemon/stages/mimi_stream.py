"""Chunk-by-chunk Mimi decoding whose output equals one-shot decoding of the same codes.

transformers' ``MimiModel.decode`` only works on a whole sequence: its causal convolutions
pad with zeros on the left and its transposed convolutions drop their right-hand overlap,
so decoding chunks separately gives a click at every boundary. Here every layer of the
decoder keeps the state it needs between chunks:

* causal ``Conv1d`` (stride 1): the last ``kernel - 1`` input samples (the zero padding of
  a one-shot decode is the initial state);
* causal ``ConvTranspose1d``: the ``kernel - stride`` output samples that the next frame
  still adds to (overlap-add), biased only once;
* the decoder transformer: its KV cache, with explicit positions.

Every operation is causal, so the first ``n`` frames' samples never depend on later frames
and the concatenated chunks equal ``MimiModel.decode`` of all codes up to float rounding.
"""

from __future__ import annotations

import logging
from typing import Any

_LOGGER = logging.getLogger(__name__)


class _StreamConv:
    """A causal stride-1 MimiConv1d that carries its left context between chunks."""

    def __init__(self, module: Any) -> None:
        if int(module.conv.stride[0]) != 1 or not module.causal:
            raise ValueError("streaming Mimi decoding needs causal stride-1 convolutions")
        if getattr(module, "pad_mode", "constant") != "constant":
            raise ValueError(f"streaming Mimi decoding needs constant padding, not {module.pad_mode!r}")
        self.module = module
        self.context = int(module.padding_total)
        self.state: Any = None

    def reset(self) -> None:
        self.state = None

    def __call__(self, x: Any) -> Any:
        import torch

        if self.context == 0:
            return self.module.conv(x)
        if self.state is None:
            self.state = x.new_zeros(x.shape[0], x.shape[1], self.context)
        full = torch.cat([self.state, x], dim=-1)
        self.state = full[..., -self.context:]
        return self.module.conv(full)


class _StreamConvTranspose:
    """A causal MimiConvTranspose1d that overlap-adds its tail into the next chunk."""

    def __init__(self, module: Any) -> None:
        conv = module.conv
        self.kernel = int(conv.kernel_size[0])
        self.stride = int(conv.stride[0])
        if not module.causal or module.padding_left != 0 or module.padding_right != self.kernel - self.stride:
            raise ValueError("streaming Mimi decoding needs causal transposed convolutions trimmed on the right")
        self.conv = conv
        self.tail: Any = None

    def reset(self) -> None:
        self.tail = None

    def __call__(self, x: Any) -> Any:
        import torch.nn.functional as F

        conv = self.conv
        y = F.conv_transpose1d(x, conv.weight, None, self.stride, groups=conv.groups)
        emit = x.shape[-1] * self.stride
        if self.tail is not None:
            y[..., : self.tail.shape[-1]] += self.tail
        self.tail = y[..., emit:].clone()
        out = y[..., :emit]
        if conv.bias is not None:
            out = out + conv.bias[None, :, None]
        return out


class _StreamResnet:
    """MimiResnetBlock: residual + (ELU, conv, ELU, conv), each conv streaming."""

    def __init__(self, module: Any, wrap: Any) -> None:
        self.block = [wrap(layer) for layer in module.block]
        shortcut = module.shortcut
        self.shortcut = wrap(shortcut) if hasattr(shortcut, "conv") else None

    def reset(self) -> None:
        for op in self.block:
            getattr(op, "reset", lambda: None)()
        if self.shortcut is not None:
            self.shortcut.reset()

    def __call__(self, x: Any) -> Any:
        residual = self.shortcut(x) if self.shortcut is not None else x
        for op in self.block:
            x = op(x)
        return residual + x


def _decoder_parts(codec: Any) -> tuple[Any, Any, Any, Any]:
    """(quantizer, upsample, transformer, seanet) across transformers' two Mimi layouts."""
    decoder = codec.decoder
    if hasattr(decoder, "decoder_seanet"):      # transformers >= 5.2x: MimiDecoderModel
        return codec.quantizer, decoder.upsample, decoder.decoder_transformer, decoder.decoder_seanet
    return codec.quantizer, codec.upsample, codec.decoder_transformer, decoder


class MimiStreamDecoder:
    """Decode Mimi codes chunk by chunk; ``reset()`` between utterances.

    ``decode(codes)`` takes ``(1, num_codebooks, frames)`` integer codes and returns
    ``(1, 1, frames * samples_per_frame)`` audio, continuing the previous chunk.
    """

    def __init__(self, codec: Any) -> None:
        quantizer, upsample, transformer, seanet = _decoder_parts(codec)
        self.quantizer = quantizer
        self.upsample = _StreamConvTranspose(upsample) if upsample is not None else None
        self.transformer = transformer
        self.seanet = [self._wrap(layer) for layer in seanet.layers]
        self._kv: Any = None
        self._steps = 0

    @staticmethod
    def _wrap(layer: Any) -> Any:
        name = type(layer).__name__
        if name == "MimiConv1d":
            return _StreamConv(layer)
        if name == "MimiConvTranspose1d":
            return _StreamConvTranspose(layer)
        if name == "MimiResnetBlock":
            return _StreamResnet(layer, MimiStreamDecoder._wrap)
        return layer                                 # pointwise (ELU): no state

    def reset(self) -> None:
        """Forget the previous utterance."""
        self._kv = None
        self._steps = 0
        if self.upsample is not None:
            self.upsample.reset()
        for op in self.seanet:
            getattr(op, "reset", lambda: None)()

    def decode(self, codes: Any) -> Any:
        import torch

        with torch.no_grad():
            latents = self.quantizer.decode(codes)
            if self.upsample is not None:
                latents = self.upsample(latents)
            hidden = self._transformer(latents.transpose(1, 2)).transpose(1, 2)
            for op in self.seanet:
                hidden = op(hidden)
        return hidden

    def _transformer(self, hidden: Any) -> Any:
        import torch

        steps = hidden.shape[1]
        # Positions are passed explicitly: a sliding-window cache's length stops growing.
        positions = torch.arange(self._steps, self._steps + steps, device=hidden.device)[None]
        out = self.transformer(hidden, position_ids=positions, past_key_values=self._kv, use_cache=True)
        self._kv = out.past_key_values if hasattr(out, "past_key_values") else out[1]
        self._steps += steps
        return out[0]
