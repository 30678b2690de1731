"""Speech to text with faster-whisper (CTranslate2), guarded against invented text.

Whisper writes plausible sentences ("Thank you.") over silence and noise. Three guards:
near-silent audio never reaches the model; a VAD must find speech first; and segments
Whisper itself thinks are not speech, or stock phrases on weak evidence, are dropped.
"""

from __future__ import annotations

import collections
import logging
import math
import re
import threading
from typing import Any, Callable

import numpy as np

from daemon.config import SttConfig
from daemon.errors import ModelError
from daemon.stages.base import SpeechDetector

_LOGGER = logging.getLogger(__name__)

SAMPLE_RATE = 16000
_MIN_SAMPLES = SAMPLE_RATE // 10          # under 0.1 s nothing can be said
_SILENT_PEAK = 10 ** (-55 / 20)           # -55 dBFS: a muted or unplugged microphone
_VAD_THRESHOLD = 0.5
_VAD_MIN_SPEECH_MS = 120
# Whisper's own retries of an unsure decode, by sampling (only with stt.sampling_fallback).
_FALLBACK_TEMPERATURES = [0.0, 0.2, 0.4]
# Phrases Whisper is known to produce from silence, noise or music (subtitle credits).
_HALLUCINATIONS = frozenset(
    {
        "thank you", "thank you very much", "thanks for watching", "thank you for watching",
        "thanks for listening", "bye", "you", "so", "okay", "oh", "hmm", "um", "uh",
        "please subscribe", "subscribe", "music", "applause", "silence", "the end",
    }
)
_HALLUCINATION_MARKERS = re.compile(r"subtitles by|amara\.org|www\.|\.com\b", re.IGNORECASE)
# Evidence below which a stock phrase is treated as invented.
_WEAK_NO_SPEECH = 0.2
_WEAK_LOGPROB = -0.7
# Long-form audio drops a segment over stt.no_speech_threshold only when its words are also
# unsure (Whisper's own rule): its no-speech probability is one figure for a whole 30 s
# window, and over clear speech with pauses it reads 0.6-0.9 (avg_logprob -0.4), so most of
# an 85 s recording was lost. A short utterance keeps the stricter rule (the threshold alone).
_UNSURE_LOGPROB = -1.0
# A biased second pass must cover about as much sound as the first (consonant skeletons)
# and sound mostly alike: it corrects a name, it does not write a different sentence.
_SPAN_LOW, _SPAN_HIGH = 0.75, 1.3
_MIN_LIKENESS = 0.6
_FULL_WINDOW = 3000                        # Whisper's 30 s of 10 ms mel frames
# Audio longer than this decodes with timestamps (Whisper's long-form mode): without them
# Whisper may end a window at its first sentence ("I'm sorry for this." for a 14.6 s reply)
# and faster-whisper then moves on a whole window, so the rest is lost. Questions stay
# without: on the quality benchmark's 40 they are heard better so (biased WER 26.8% / 29.4%).
_LONG_FORM_SAMPLES = 10 * SAMPLE_RATE

Hints = Callable[[str], str | None]


class WhisperTranscriber:
    """faster-whisper on 16 kHz float32 mono; thread-safe for one caller at a time.

    ``vad`` gates the model (no speech -> empty text). Without one, faster-whisper's own
    Silero filter is used. Hotwords are passed on only while ``cfg.hotwords`` is true.
    """

    def __init__(self, cfg: SttConfig, vad: SpeechDetector | None = None) -> None:
        from daemon.models import resolve_model

        self._cfg = cfg
        self._vad = vad
        path = resolve_model(cfg.model, "STT model")
        try:
            self._model = _caching_model_class()(
                str(path), device=cfg.device, compute_type=cfg.compute_type, cpu_threads=cfg.cpu_threads
            )
        except Exception as exc:  # noqa: BLE001 - CTranslate2 raises RuntimeError/ValueError
            raise ModelError(
                f"STT model: cannot load {path} ({str(exc).splitlines()[0] if str(exc) else exc!r}); "
                "check stt.model, stt.device and stt.compute_type"
            ) from None
        self._language = None if cfg.language in ("", "auto") else cfg.language
        self._lock = threading.Lock()
        self._text_tokenizer: Any = None
        _LOGGER.info("STT model loaded from %s (%s, %s)", path, cfg.device, cfg.compute_type)

    def transcribe(
        self, audio: np.ndarray, *, hotwords: str | None = None, hints: Hints | None = None
    ) -> tuple[str, float]:
        """16 kHz float32 mono -> (text, worst no-speech probability). Empty text = no speech.

        ``hints`` makes it two-pass: ``hints(first transcript)`` returns hotwords for a second
        decode of the same audio (the encoder's output is reused, so it costs the decoder only;
        beam ``stt.biased_beam_size``), or nothing to keep the first. The second is kept unless
        it covers clearly more or less sound than the first (a name written where nothing was
        said, or words dropped).
        """
        audio = np.asarray(audio, dtype=np.float32).reshape(-1)
        if audio.size < _MIN_SAMPLES or float(np.max(np.abs(audio))) < _SILENT_PEAK:
            return "", 1.0
        if self._vad is not None and self._find_speech(audio) is None:
            _LOGGER.debug("STT skipped: the VAD heard no speech")
            return "", 1.0
        enabled = self._cfg.hotwords
        long_form = audio.size > _LONG_FORM_SAMPLES
        with self._lock:
            self._model.window_frames = self._window_frames(audio.size)
            segments = self._decode(audio, hotwords if enabled else None, self._cfg.beam_size)
        first = self._keep(segments, long_form)
        second_hotwords = hints(first[0]) if hints is not None and enabled and first[0] else None
        if not second_hotwords:
            return first
        with self._lock:
            second = self._keep(self._decode_biased(audio, second_hotwords), long_form)
        if not plausible_correction(first[0], second[0]):
            _LOGGER.debug("biased transcript rejected: %r is not a correction of %r", second[0], first[0])
            return first
        return second

    def _window_frames(self, samples: int) -> int:
        """Mel frames (10 ms each) the encoder sees: the configured window, or all the
        speech plus a second of padding when it is longer; 0 = Whisper's own 30 s."""
        window = self._cfg.encoder_window_s
        if window <= 0:
            return 0
        frames = math.ceil(samples / (SAMPLE_RATE // 100)) + 100
        return min(_FULL_WINDOW, max(round(window * 100), frames))

    def _find_speech(self, audio: np.ndarray) -> tuple[float, float] | None:
        from daemon.stages.vad import find_speech

        assert self._vad is not None
        return find_speech(self._vad, audio, threshold=_VAD_THRESHOLD, min_speech_ms=_VAD_MIN_SPEECH_MS)

    def _decode(self, audio: np.ndarray, hotwords: str | None, beam: int) -> list[Any]:
        # chunk_length is left at 30 s on purpose: faster-whisper pads every window to 30 s
        # for the encoder anyway, and passing it mutates the shared feature extractor.
        segments, _info = self._model.transcribe(
            audio,
            language=self._language,
            beam_size=beam,
            best_of=beam,
            temperature=_FALLBACK_TEMPERATURES if self._cfg.sampling_fallback else [0.0],
            no_speech_threshold=self._cfg.no_speech_threshold,
            condition_on_previous_text=False,   # a hallucination must not seed the next window
            without_timestamps=audio.size <= _LONG_FORM_SAMPLES,
            log_prob_threshold=_UNSURE_LOGPROB,
            hotwords=hotwords or None,
            vad_filter=self._vad is None,
        )
        return list(segments)                    # the generator does the work: finish it here

    def _decode_biased(self, audio: np.ndarray, hotwords: str) -> list[Any]:
        """The second pass: a beam search whose near-tied readings are settled by
        ``prefer_question`` (one window decoded by the beam only; otherwise as decoded)."""
        import dataclasses

        from daemon.stages.stt_nbest import prefer_question

        beam, margin = self._cfg.biased_beam_size, self._cfg.question_margin
        if beam < 2 or margin <= 0:
            return self._decode(audio, hotwords, beam)
        recorder = self._model.model
        recorder.start(beam)
        try:
            segments = self._decode(audio, hotwords, beam)
        finally:
            calls = recorder.stop()
        if len(segments) != 1 or len(calls) != 1 or not calls[0]:
            return segments
        readings = [(self._tokenizer().decode(ids).strip(), score) for ids, score in calls[0]]
        pick = prefer_question(readings, margin)
        if pick == 0:
            return segments
        _LOGGER.debug("question reading %r kept over %r", readings[pick][0], readings[0][0])
        return [dataclasses.replace(segments[0], text=" " + readings[pick][0], tokens=calls[0][pick][0])]

    def _tokenizer(self) -> Any:
        if self._text_tokenizer is None:
            from faster_whisper.tokenizer import Tokenizer

            self._text_tokenizer = Tokenizer(self._model.hf_tokenizer, self._model.model.is_multilingual,
                                             task="transcribe", language=self._language or "en")
        return self._text_tokenizer

    def _keep(self, segments: list[Any], long_form: bool) -> tuple[str, float]:
        """The segments' text without what Whisper thinks is not speech, nor stock phrases
        on weak evidence; and the worst no-speech probability."""
        kept: list[str] = []
        worst = 1.0 if not segments else 0.0
        for seg in segments:
            worst = max(worst, float(seg.no_speech_prob))
            text = seg.text.strip()
            if not _has_words(text):
                continue
            if seg.no_speech_prob > self._cfg.no_speech_threshold and (
                not long_form or seg.avg_logprob < _UNSURE_LOGPROB
            ):
                continue
            if _is_stock_phrase(text) and (
                seg.no_speech_prob > _WEAK_NO_SPEECH or seg.avg_logprob < _WEAK_LOGPROB
            ):
                _LOGGER.debug("dropped a likely hallucination (%d chars)", len(text))
                continue
            kept.append(text)
        text = " ".join(kept).strip()
        return text, (worst if text else max(worst, self._cfg.no_speech_threshold))


def _caching_model_class() -> type:
    """faster-whisper's model with two changes to its encoder call, and its CTranslate2
    model behind a :class:`HypothesisRecorder`.

    It encodes only ``window_frames`` of the padded 30 s window when set: the encoder's cost
    grows faster than its input, and the padding is silence. And it remembers the output for
    the last window, so a second decode of the same audio (the knowledge-base biased pass)
    costs only the decoder.
    """
    from faster_whisper import WhisperModel

    from daemon.stages.stt_nbest import HypothesisRecorder

    class CachingWhisperModel(WhisperModel):  # type: ignore[misc]
        _last: tuple[np.ndarray, Any] | None = None
        window_frames: int = 0

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.model = HypothesisRecorder(self.model)   # the beam's n-best, for the biased pass

        def encode(self, features: np.ndarray) -> Any:
            keep = self.window_frames
            if 0 < keep < features.shape[-1]:
                features = np.ascontiguousarray(features[..., :keep])
            last = self._last
            if last is not None and last[0].shape == features.shape and np.array_equal(last[0], features):
                return last[1]
            output = super().encode(features)
            self._last = (np.array(features, copy=True), output)
            return output

    return CachingWhisperModel


def plausible_correction(first: str, second: str) -> bool:
    """Whether a hotword-biased ``second`` transcript may replace ``first``: it covers about
    as much speech, sounds mostly alike, and has not fallen into repeating a phrase."""
    import difflib

    if not same_sound_span(first, second):
        return False
    a, b = _skeleton(first), _skeleton(second)
    if difflib.SequenceMatcher(None, a, b, autojunk=False).ratio() < _MIN_LIKENESS:
        return False
    return _repeats(second) <= _repeats(first)


def _repeats(text: str) -> int:
    """How many times the most repeated two-word phrase occurs beyond once."""
    words = re.findall(r"[a-z0-9']+", text.lower())
    pairs = collections.Counter(zip(words, words[1:]))
    return max(pairs.values(), default=1) - 1


def same_sound_span(first: str, second: str) -> bool:
    """Whether ``second`` covers about as much speech as ``first`` (consonant skeleton lengths)."""
    a, b = len(_skeleton(first)), len(_skeleton(second))
    if a == 0 or b == 0:
        return a == b
    return _SPAN_LOW <= b / a <= _SPAN_HIGH


def _skeleton(text: str) -> str:
    """Consonants of each word, doubled letters once: roughly how many sounds were heard."""
    out = []
    for word in re.findall(r"[a-z0-9]+", text.lower()):
        # Digits are spoken as words: count a number as a few sounds, not one.
        if word.isdigit():
            out.append("n" * (2 * len(word)))
            continue
        letters = word[0] + re.sub(r"[aeiouyhw]", "", word[1:])
        out.append(re.sub(r"(.)\1+", r"\1", letters))
    return "".join(out)


def _has_words(text: str) -> bool:
    return any(ch.isalnum() for ch in text)


def _is_stock_phrase(text: str) -> bool:
    norm = re.sub(r"[^a-z ]+", "", text.lower()).strip()
    norm = re.sub(r"\s+", " ", norm)
    return norm in _HALLUCINATIONS or bool(_HALLUCINATION_MARKERS.search(text))
