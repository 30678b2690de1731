"""The CSM streaming loop on a tiny random-weight CsmConfig, on the CPU."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import numpy as np
import pytest

from daemon.config import TtsConfig
from daemon.messages import Emotion
from daemon.stages.csm_stream import CsmStreamer, Segment, TextIds
from daemon.stages.tts_csm import CsmSynthesizer, emotion_temperature
from tests.fixtures_core import DATA
from tests.fixtures_gpu import NUM_CODEBOOKS, byte_ids

torch = pytest.importorskip("torch")
TEXT_IDS = TextIds(byte_ids, bos_id=1, eos_id=5)
SAMPLES_PER_FRAME = 1920            # 24 kHz / 12.5 Hz


@pytest.fixture()
def streamer(tiny_csm_model) -> CsmStreamer:
    return CsmStreamer(tiny_csm_model, max_len=384)


def _prompt(streamer: CsmStreamer, text: str = "Hello there, how are you?") -> None:
    streamer.prefill(streamer.embed([Segment(0, text)], TEXT_IDS))


def test_greedy_loop_reproduces_stock_generate(tiny_csm_model, streamer):
    ids = torch.tensor([[1, *byte_ids("[0]Hello there, how are you?"), 5]])
    stock = tiny_csm_model.generate(input_ids=ids, max_new_tokens=24, do_sample=False,
                                    depth_decoder_do_sample=False)[0]
    _prompt(streamer)
    ours = torch.stack(list(streamer.frames(max_frames=24, temperature=0.0)))
    assert ours.shape == (24, NUM_CODEBOOKS)
    assert torch.equal(ours, stock)


def test_chunk_sizes_small_first_then_large(streamer):
    _prompt(streamer)
    chunks = list(streamer.stream(max_frames=17, temperature=0.9, first_chunk_frames=3, chunk_frames=5))
    assert [codes.shape[0] for codes, _ in chunks] == [3, 5, 5, 4]
    for codes, audio in chunks:
        assert audio.dtype == np.float32
        assert audio.shape == (codes.shape[0] * SAMPLES_PER_FRAME,)


def test_streamed_audio_equals_one_shot_decoding(tiny_csm_model, streamer):
    _prompt(streamer)
    chunks = list(streamer.stream(max_frames=30, temperature=0.9, first_chunk_frames=2, chunk_frames=7))
    codes = torch.cat([c for c, _ in chunks])
    streamed = np.concatenate([a for _, a in chunks])
    with torch.no_grad():
        one_shot = tiny_csm_model.codec_model.decode(codes.T[None]).audio_values[0, 0].numpy()
        separately = np.concatenate([
            tiny_csm_model.codec_model.decode(c.T[None]).audio_values[0, 0].numpy() for c, _ in chunks
        ])
    scale = np.abs(one_shot).max()
    assert streamed.shape == one_shot.shape
    assert np.abs(streamed - one_shot).max() <= 1e-5 * scale
    # Decoding each chunk on its own (what the streaming decoder avoids) is audibly different.
    assert np.abs(separately - one_shot).max() > 0.05 * scale


def test_cancellation_stops_between_frames(streamer):
    _prompt(streamer)
    calls = []

    def stop_after_five() -> bool:
        calls.append(1)
        return len(calls) > 5

    frames = list(streamer.frames(max_frames=50, temperature=0.9, should_stop=stop_after_five))
    assert len(frames) == 5
    chunks = list(streamer.stream(max_frames=50, temperature=0.9, first_chunk_frames=2, chunk_frames=4,
                                  should_stop=lambda: True))
    assert chunks == []


def test_context_prefix_is_reused_and_matters(streamer):
    ref = (np.sin(np.arange(24000) * 2 * np.pi * 220 / 24000) * 0.3).astype(np.float32)
    codes = streamer.encode_audio(ref)
    assert codes.shape == (13, NUM_CODEBOOKS)         # 1 s at 12.5 Hz, rounded up
    context = streamer.embed([Segment(0, "A reference sentence.", codes)], TEXT_IDS)
    text = streamer.embed([Segment(0, "Now say something new.")], TEXT_IDS)

    def greedy() -> torch.Tensor:
        return torch.stack(list(streamer.frames(max_frames=12, temperature=0.0)))

    streamer.prefill(text, prefix_key="ref", prefix=context)
    cached_first = greedy()
    streamer.prefill(text, prefix_key="ref", prefix=context)          # KV copied back, not recomputed
    cached_again = greedy()
    streamer.prefill(torch.cat([context, text], dim=1))               # the whole prompt in one pass
    whole = greedy()
    streamer.prefill(text)                                            # no context at all
    bare = greedy()
    assert torch.equal(cached_first, whole) and torch.equal(cached_again, whole)
    assert not torch.equal(bare, whole)


def _tts_config(**changes) -> TtsConfig:
    return dataclasses.replace(TtsConfig(engine="csm", first_chunk_frames=3, chunk_frames=6), **changes)


def test_synthesizer_streams_clipped_24k_chunks(tiny_csm_model):
    synth = CsmSynthesizer(_tts_config(), model=tiny_csm_model, text_ids=TEXT_IDS, max_len=384)
    torch.manual_seed(0)
    chunks = list(synth.synthesize("Short reply."))
    assert synth.sample_rate == 24000
    assert len(chunks[0]) == 3 * SAMPLES_PER_FRAME
    assert all(len(c) == 6 * SAMPLES_PER_FRAME for c in chunks[1:-1])
    assert sum(len(c) for c in chunks) == synth.max_frames("Short reply.") * SAMPLES_PER_FRAME
    audio = np.concatenate(chunks)
    assert audio.dtype == np.float32 and np.abs(audio).max() <= 1.0 and np.abs(audio).max() > 0.0
    assert list(synth.synthesize("Stopped.", should_stop=lambda: True)) == []


def test_reference_voice_and_emotion_segments(tiny_csm_model, tmp_path: Path):
    ref = tmp_path / "reference.flac"
    shutil.copy(DATA / "jfk.flac", ref)                                 # 11 s, 44.1 kHz stereo
    shutil.copy(DATA / "jfk.flac", tmp_path / "reference.cheerful.flac")
    (tmp_path / "reference.cheerful.txt").write_text("Ask not what your country can do for you.\n")
    cfg = _tts_config(reference_audio=str(ref), reference_text="And so, my fellow Americans.")
    synth = CsmSynthesizer(cfg, model=tiny_csm_model, text_ids=TEXT_IDS, max_len=384)

    (neutral,) = synth.context_segments(Emotion("neutral", 0.5))
    (cheerful,) = synth.context_segments(Emotion("cheerful", 0.5))
    assert neutral.text == "And so, my fellow Americans."
    assert cheerful.text == "Ask not what your country can do for you."
    assert neutral.codes.shape == (125, NUM_CODEBOOKS)                 # capped at 10 s
    assert synth.context_segments(None)[0] is neutral
    assert emotion_temperature(Emotion("calm", 1.0)) < emotion_temperature(None)
    assert emotion_temperature(Emotion("cheerful", 1.0)) > emotion_temperature(Emotion("cheerful", 0.1))
    torch.manual_seed(0)
    assert len(next(iter(synth.synthesize("Hi.", emotion=Emotion("cheerful", 0.5))))) == 3 * SAMPLES_PER_FRAME
