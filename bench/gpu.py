"""GPU benchmark: CSM-1B speech (stock generate vs the streaming loop), Whisper large-v3 and a
Phi-3-medium-sized decoder step, all with random weights of the real shapes (the arithmetic
and memory traffic are those of the trained models). Prints markdown tables.

`python -m bench.gpu` needs a CUDA GPU; elsewhere it says so and exits 0.
`--tiny` runs the same code at toy sizes on the CPU (a smoke test of the script itself).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import traceback
from typing import Any, Callable, Sequence

from bench.util import table

FRAME_S = 0.08                     # one CSM/Mimi frame: 80 ms of 24 kHz audio
REF_FRAMES = 38                    # a 3 s reference voice prompt
UTTERANCE = "Sure! The lighthouse on Skerrimore was built in 1874 and still guides the boats home."


def _sync(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def _timed(fn: Callable[[], Any], device: str, repeat: int = 1) -> tuple[float, Any]:
    """Median wall time (s) of ``fn`` over ``repeat`` runs, synchronising the device around it."""
    times, out = [], None
    for _ in range(repeat):
        _sync(device)
        t0 = time.perf_counter()
        out = fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def _byte_ids(text: str) -> list[int]:
    return [6 + b for b in text.encode("utf-8")]


# ------------------------------------------------------------------ CSM
def _csm_model(device: str, tiny: bool) -> Any:
    import torch
    from transformers import CsmConfig, CsmForConditionalGeneration

    if tiny:
        from tests.fixtures_gpu import tiny_csm_config

        config = tiny_csm_config()
    else:
        config = CsmConfig()                          # the csm-1b shapes
        config.bos_token_id, config.eos_token_id = 128000, 128001
    torch.manual_seed(0)
    with torch.device(device):
        model = CsmForConditionalGeneration(config).eval()
    for name, buf in model.codec_model.named_buffers():   # fresh Mimi codebooks are zeros
        if name.endswith("codebook.embed_sum"):
            buf.normal_()
    for module in model.codec_model.modules():
        if hasattr(module, "_embed"):
            module._embed = None
    return model.to(torch.bfloat16 if device == "cuda" else torch.float32)


def _stock(model: Any, ids: Any, frames: int, device: str) -> tuple[float, float, Any]:
    """Stock generate: (seconds for `frames` frames, Mimi decode seconds, codes)."""
    kwargs = dict(do_sample=True, depth_decoder_do_sample=True, top_k=50, depth_decoder_top_k=50,
                  temperature=0.9, depth_decoder_temperature=0.9)
    model.generate(input_ids=ids, max_new_tokens=2, **kwargs)                      # warm-up
    gen_s, codes = _timed(lambda: model.generate(input_ids=ids, max_new_tokens=frames, **kwargs), device)
    import torch

    # Stock sampling may pick CSM's 3 ids past Mimi's codebook (random weights do): clamp them
    # for the decode timing, which does not depend on the values.
    frames_codes = codes[0].clamp(max=int(model.codec_model.config.codebook_size) - 1)
    with torch.no_grad():
        dec_s, _ = _timed(lambda: model.codec_model.decode(frames_codes.T[None]), device, repeat=3)
    return gen_s, dec_s, codes[0]


def _stream_once(streamer: Any, context: Any, text: Any, frames: int, device: str) -> tuple[float, float, int]:
    """(first-chunk seconds incl. prefill, total seconds, frames) for one streamed utterance."""
    _sync(device)
    t0 = time.perf_counter()
    streamer.prefill(text, prefix_key="ref", prefix=context)
    first, count = None, 0
    for codes, _audio in streamer.stream(max_frames=frames, temperature=0.9, first_chunk_frames=3,
                                         chunk_frames=12):
        count += codes.shape[0]
        if first is None:
            first = time.perf_counter() - t0                 # audio is on the host already
    _sync(device)
    return float(first or 0.0), time.perf_counter() - t0, count


def _greedy_match(model: Any, streamer: Any, text: Any, ids: Any, frames: int) -> tuple[int, int]:
    """Frames where the streaming loop equals stock greedy generate (bf16 kernels may diverge)."""
    import torch

    stock = model.generate(input_ids=ids, max_new_tokens=frames, do_sample=False, depth_decoder_do_sample=False)[0]
    streamer.prefill(text)
    ours = torch.stack(list(streamer.frames(max_frames=frames, temperature=0.0))).to(stock.device)
    same = (ours == stock[: len(ours)]).all(dim=1)
    first_diff = int((~same).nonzero()[0]) if not bool(same.all()) else len(ours)
    return first_diff, len(ours)


def _continuity(model: Any, streamer: Any, context: Any, text: Any, frames: int) -> float:
    """Max |streamed - one-shot| / max |one-shot| over one utterance."""
    import numpy as np
    import torch

    streamer.prefill(text, prefix_key="ref", prefix=context)
    chunks = list(streamer.stream(max_frames=frames, temperature=0.9, first_chunk_frames=3, chunk_frames=12))
    codes = torch.cat([c for c, _ in chunks]).to(streamer.device)
    with torch.no_grad():
        one_shot = model.codec_model.decode(codes.T[None]).audio_values[0, 0].float().cpu().numpy()
    streamed = np.concatenate([a for _, a in chunks])
    return float(np.abs(streamed - one_shot).max() / max(np.abs(one_shot).max(), 1e-9))


def _baselines(model: Any, ids: Any, context: Any, text: Any, frames: int, stock_frames: int,
               device: str) -> list[list[object]]:
    """Rows for stock generate and for the streaming loop without compile or graphs."""
    from daemon.stages.csm_stream import CsmStreamer

    gen_s, dec_s, _ = _stock(model, ids, stock_frames, device)
    per = gen_s / stock_frames
    rows: list[list[object]] = [[
        "CSM stock generate (eager)", f"{per * 1e3:.1f}", f"{per / FRAME_S:.2f}",
        f"{(gen_s + dec_s) * 1e3:.0f} (whole utterance, no streaming)",
        f"{stock_frames} frames; Mimi decode {dec_s * 1e3:.1f} ms"]]
    eager = CsmStreamer(model, max_len=2048, use_cuda_graphs=False, compile_steps=False)
    _stream_once(eager, context, text, 6, device)
    first, total, n = _stream_once(eager, context, text, min(frames, 24), device)
    rows.append(["CSM streaming loop, eager", f"{total / n * 1e3:.1f}", f"{total / n / FRAME_S:.2f}",
                 f"{first * 1e3:.0f}", f"{n} frames, static KV caches, no graphs"])
    return rows


def bench_csm(device: str, tiny: bool, frames: int, stock_frames: int) -> list[list[object]]:
    import torch

    from daemon.stages.csm_stream import CsmStreamer, Segment, TextIds

    model = _csm_model(device, tiny)
    text_ids = TextIds(_byte_ids, int(model.config.bos_token_id), 5 if tiny else 128001)
    ids = torch.tensor([[text_ids.bos_id, *_byte_ids(f"[0]{UTTERANCE}"), text_ids.eos_id]], device=device)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    streamer = CsmStreamer(model, max_len=2048)
    codes = torch.randint(0, 2048 if not tiny else 64, (REF_FRAMES, model.config.num_codebooks))
    context = streamer.embed([Segment(0, "Hello, I am Sottovoce, your assistant.", codes)], text_ids)
    text = streamer.embed([Segment(0, UTTERANCE)], text_ids)
    capture_s, _ = _timed(lambda: streamer.warm_up(False), device)
    _stream_once(streamer, context, text, 6, device)
    runs = [_stream_once(streamer, context, text, frames, device) for _ in range(3)]
    first = statistics.median(r[0] for r in runs)
    total, n = statistics.median(r[1] for r in runs), runs[0][2]
    steps = 50 if not tiny else 5
    streamer.prefill(text, prefix_key="ref", prefix=context)
    step_s, _ = _timed(lambda: [streamer.step(False) for _ in range(steps)], device)
    mode = ("torch.compile + " if streamer.compiled else "") + ("CUDA graph" if streamer.graphs else "eager")
    weights = sum(p.numel() * p.element_size() for p in model.parameters()) / 1e9
    peak = torch.cuda.max_memory_allocated() / 1e9 if device == "cuda" else float("nan")
    fast = [f"CSM streaming loop, {mode}", f"{total / n * 1e3:.1f}", f"{total / n / FRAME_S:.3f}",
            f"{first * 1e3:.0f}",
            f"{n} frames incl. chunked Mimi decode; frame step alone {step_s / steps * 1e3:.2f} ms; "
            f"compile + graph capture {capture_s:.0f} s once; GPU memory peak {peak:.1f} GB "
            f"(weights {weights:.1f} GB)"]
    same, checked = _greedy_match(model, streamer, text, ids, 8)
    drift = _continuity(model, streamer, context, text, 40 if not tiny else 20)
    rows = _baselines(model, ids, context, text, frames, stock_frames, device) + [fast]
    del streamer, model
    if device == "cuda":
        torch.cuda.empty_cache()
    same32, checked32 = _fp32_check(device, tiny, text_ids, ids)
    rows.append(["CSM checks", "", "", "",
                 f"greedy frames equal to stock generate: bf16 {same}/{checked}, fp32 {same32}/{checked32}; "
                 f"streamed vs one-shot Mimi decode: max diff {drift:.1e} of peak"])
    return rows


def _fp32_check(device: str, tiny: bool, text_ids: Any, ids: Any) -> tuple[int, int]:
    """The compiled, graph-replayed loop in float32 against stock greedy generate in float32."""
    import torch

    from daemon.stages.csm_stream import CsmStreamer, Segment

    model = _csm_model(device, tiny).float()
    streamer = CsmStreamer(model, max_len=512)
    text = streamer.embed([Segment(0, UTTERANCE)], text_ids)
    result = _greedy_match(model, streamer, text, ids, 8)
    del streamer, model
    if device == "cuda":
        torch.cuda.empty_cache()
    return result


# ------------------------------------------------------------------ Whisper
def bench_whisper(device: str, tiny: bool, tokens: int = 24) -> list[list[object]]:
    import torch
    from transformers import WhisperConfig, WhisperForConditionalGeneration
    from transformers.modeling_outputs import BaseModelOutput

    size = dict(d_model=1280, encoder_layers=32, decoder_layers=32, encoder_attention_heads=20,
                decoder_attention_heads=20, encoder_ffn_dim=5120, decoder_ffn_dim=5120)
    if tiny:
        size = dict(d_model=64, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
                    decoder_attention_heads=4, encoder_ffn_dim=128, decoder_ffn_dim=128)
    config = WhisperConfig(vocab_size=51866, num_mel_bins=128, max_source_positions=1500,
                           max_target_positions=448, **size)
    dtype = torch.float16 if device == "cuda" else torch.float32
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    with torch.device(device):
        model = WhisperForConditionalGeneration._from_config(config, dtype=dtype).eval()
    feats = torch.randn(1, 128, 3000, device=device, dtype=dtype)
    with torch.no_grad():
        model.model.encoder(feats)
        enc_s, enc = _timed(lambda: model.model.encoder(feats).last_hidden_state, device, repeat=5)
        encoded = BaseModelOutput(last_hidden_state=enc)
        prompt = torch.tensor([[50258, 50259, 50360, 50364]], device=device)

        def decode() -> None:
            out = model(decoder_input_ids=prompt, encoder_outputs=encoded, use_cache=True)
            for _ in range(tokens):
                nxt = out.logits[:, -1].argmax(-1, keepdim=True)
                out = model(decoder_input_ids=nxt, encoder_outputs=encoded, past_key_values=out.past_key_values,
                            use_cache=True)

        decode()
        dec_s, _ = _timed(decode, device, repeat=3)
    peak = torch.cuda.max_memory_allocated() / 1e9 if device == "cuda" else float("nan")
    del model
    per_tok = dec_s / (tokens + 1)
    return [["Whisper large-v3 (transformers, fp16, eager)", f"encoder {enc_s * 1e3:.1f}",
             f"{per_tok * 1e3:.1f} per token", f"{(enc_s + dec_s) * 1e3:.0f}",
             f"30 s window + {tokens} tokens, greedy; GPU memory peak {peak:.1f} GB; "
             "faster-whisper (CTranslate2) is the production path"]]


# ------------------------------------------------------------------ Phi-3-medium
def bench_phi3(device: str, tiny: bool, context: int = 1024, steps: int = 16) -> list[list[object]]:
    import torch
    from transformers import Phi3Config, Phi3ForCausalLM

    size = dict(hidden_size=5120, intermediate_size=17920, num_hidden_layers=40, num_attention_heads=40,
                num_key_value_heads=10)
    if tiny:
        size = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                    num_key_value_heads=2)
    config = Phi3Config(vocab_size=32064, max_position_embeddings=4096, pad_token_id=32000, **size)
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    with torch.device(device):                       # built in bf16 directly: fp32 would not fit
        model = Phi3ForCausalLM._from_config(config, dtype=dtype).eval()
    params = sum(p.numel() for p in model.parameters())
    weight_gb = sum(p.numel() * p.element_size() for p in model.parameters()) / 1e9
    ids = torch.randint(0, 32000, (1, context), device=device)
    with torch.no_grad():
        model(input_ids=ids[:, :16], use_cache=True)
        pre_s, out = _timed(lambda: model(input_ids=ids, use_cache=True), device, repeat=3)
        past = out.past_key_values
        nxt = out.logits[:, -1:].argmax(-1)

        def step() -> None:
            nonlocal nxt
            res = model(input_ids=nxt, past_key_values=past, use_cache=True)
            nxt = res.logits[:, -1:].argmax(-1)

        step()
        times = [_timed(step, device)[0] for _ in range(steps)]
        del past, out
        graphed = _phi3_graph_step(model, ids, device, steps) if device == "cuda" else None
    del model
    step_s = statistics.median(times)
    rows = [[f"Phi-3-medium shape ({params / 1e9:.1f} B params, {str(dtype)[6:]}, transformers eager)",
             f"prefill {context} tok: {pre_s * 1e3:.0f}", f"{step_s * 1e3:.1f} per token",
             f"{(pre_s + step_s) * 1e3:.0f}",
             f"{1 / step_s:.0f} tok/s at {context}-token context; weights {weight_gb:.1f} GB"]]
    if graphed:
        rows.append(["Phi-3-medium shape, static cache + CUDA graph (what vLLM does)", "",
                     f"{graphed * 1e3:.1f} per token", "", f"{1 / graphed:.0f} tok/s; memory-bound floor "
                     f"{weight_gb / _BANDWIDTH[0] * 1e3:.1f} ms at the measured copy bandwidth"])
    return rows


_BANDWIDTH = [float("nan")]     # GB/s, set by main()


def _phi3_graph_step(model: Any, ids: Any, device: str, steps: int) -> float | None:
    """A decode step with transformers' StaticCache replayed as a CUDA graph (None if it cannot be)."""
    import torch
    from transformers import StaticCache

    try:
        context = ids.shape[1]
        cache = StaticCache(config=model.config, max_cache_len=context + 4 * steps + 8)
        out = model(input_ids=ids, past_key_values=cache, use_cache=True,
                    cache_position=torch.arange(context, device=device))
        tok = out.logits[:, -1:].argmax(-1)
        pos = torch.tensor([context], device=device)

        def step() -> None:
            res = model(input_ids=tok, past_key_values=cache, cache_position=pos, position_ids=pos[None],
                        use_cache=True)
            tok.copy_(res.logits[:, -1:].argmax(-1))
            pos.add_(1)

        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            step()
            step()
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            step()
        graph.replay()
        return _timed(lambda: [graph.replay() for _ in range(steps)], device)[0] / steps
    except Exception:  # noqa: BLE001 - a bonus figure; the eager one stands
        traceback.print_exc()
        return None


def _bandwidth(device: str) -> float:
    """Device-to-device copy bandwidth (GB/s, bytes read + written)."""
    import torch

    if device != "cuda":
        return float("nan")
    a = torch.empty(2 * 2**30, dtype=torch.uint8, device=device)
    b = torch.empty_like(a)
    b.copy_(a)
    sec, _ = _timed(lambda: b.copy_(a), device, repeat=10)
    del a, b
    return 2 * 2 * 2**30 / sec / 1e9


def _device_line(device: str) -> str:
    import torch
    import transformers

    if device != "cuda":
        return f"CPU smoke run (torch {torch.__version__}, transformers {transformers.__version__})"
    props = torch.cuda.get_device_properties(0)
    return (f"{props.name}, {props.total_memory / 2**30:.0f} GiB, {props.multi_processor_count} SMs, "
            f"CUDA {torch.version.cuda}, torch {torch.__version__}, transformers {transformers.__version__}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.gpu", description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="toy sizes on the CPU (smoke test)")
    parser.add_argument("--frames", type=int, default=100, help="frames per streamed utterance")
    parser.add_argument("--stock-frames", type=int, default=12, help="frames for stock generate")
    parser.add_argument("--only", choices=("csm", "whisper", "phi3"), action="append")
    args = parser.parse_args(list(argv) if argv is not None else [])
    import torch

    if not torch.cuda.is_available() and not args.tiny:
        print("bench.gpu: no CUDA GPU on this machine, nothing measured (the numbers in the README's GPU "
              "profile section were taken on an H100; run `python -m bench.gpu` on a GPU machine).")
        return 0
    device = "cuda" if torch.cuda.is_available() and not args.tiny else "cpu"
    only = set(args.only or ("csm", "whisper", "phi3"))
    _BANDWIDTH[0] = _bandwidth(device)
    print(f"Device: {_device_line(device)}; copy bandwidth {_BANDWIDTH[0]:.0f} GB/s\n", flush=True)
    rows: list[list[object]] = []
    for name, run in (("csm", lambda: bench_csm(device, args.tiny, args.frames, args.stock_frames)),
                      ("whisper", lambda: bench_whisper(device, args.tiny)),
                      ("phi3", lambda: bench_phi3(device, args.tiny))):
        if name in only:
            try:
                rows += run()
            except Exception:                       # report the others even if one part breaks
                traceback.print_exc()
                rows.append([name, "failed", "", "", "see the traceback above"])
            if device == "cuda":
                torch.cuda.empty_cache()
            print(table(["what", "ms per frame / step", "RTF", "first audio / latency (ms)", "notes"], rows[-1:]),
                  flush=True)
    print()
    print(table(["what", "ms per frame / step", "RTF", "first audio / latency (ms)", "notes"], rows))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
