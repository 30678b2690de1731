"""Wiring in one place: build every stage from the config; stages never import each other."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np

from daemon.config import Config
from daemon.errors import BadArgumentError, KnowledgeBaseError, NoSpeechError, SottovoceError
from daemon.history import ConversationHistory, without_oldest
from daemon.messages import ChatMessage, Emotion, Passage
from daemon.stages.base import ChatModel, SpeechSynthesizer
from daemon.stages.prompt import PromptBuilder

if TYPE_CHECKING:
    from daemon.kb.index import Progress as IndexProgress   # (done, total, file) while embedding

_LOGGER = logging.getLogger(__name__)
Progress = Callable[[str], None]

FIRST_CLAUSE_MAX_CHARS = 32
_PRIME_NOTE = "The Brimble bridge is 240 metres long."
# Emotions that sound better with a little more randomness in the wording.
_LIVELY = {"humorous": 0.35, "cheerful": 0.2}


@dataclass
class Pipeline:
    cfg: Config
    llm: ChatModel
    tts: SpeechSynthesizer
    history: ConversationHistory
    stt: Any = None                 # daemon.stages.stt.WhisperTranscriber
    vad_model: Any = None           # daemon.stages.vad.SileroVad (file endpointing)
    kb: Any = None                  # daemon.kb.KnowledgeBase, None when unavailable
    prompts: PromptBuilder = field(init=False)
    load_times: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.prompts = PromptBuilder(self.cfg)

    # ---- small helpers the turn runner calls
    def find_notes(self, question: str) -> tuple[list[Passage], list[str]]:
        """The sentences the LLM gets, and their source files; ([], []) -> chat path (also
        for a joke, story or poem, whatever its subject: see :mod:`daemon.stages.requests`)."""
        from daemon.stages.requests import wants_invention

        if self.kb is None or wants_invention(question):
            return [], []
        passages = self.kb.retrieve(question)
        if not passages or not self.kb.is_relevant(passages):
            return [], []
        notes = self.kb.select_context(question, passages, self.cfg.rag.max_context_sentences)
        sources: list[str] = []
        for note in notes:
            if note.source not in sources:
                sources.append(note.source)
        return list(notes), sources

    def messages_for(self, question: str, notes: Sequence[Passage], emotion: Emotion) -> list[ChatMessage]:
        """The prompt for ``question``: the oldest remembered exchanges are left out until it
        and a full reply fit the LLM's context window. BadArgumentError when the question
        alone does not fit (a typed question dense in numbers can: ~1 token a character)."""
        history = self.history.messages()
        max_tokens = self.cfg.llm.max_tokens
        while True:
            messages = self.prompts.build(question, notes, history, emotion)
            over = self.llm.prompt_overflow(messages, max_tokens)
            if over <= 0:
                return messages
            if not history:
                raise BadArgumentError(
                    f"the question is too long for the language model: {over} tokens more than its "
                    "context window holds with the instructions and a reply; ask something shorter")
            history = without_oldest(history)
            _LOGGER.info("left out the oldest remembered exchange: the prompt was %d tokens too long", over)

    def temperature_for(self, emotion: Emotion) -> float:
        return min(2.0, self.cfg.llm.temperature + _LIVELY.get(emotion.name, 0.0) * emotion.intensity)

    def new_chunker(self) -> Any:
        from daemon.stages.chunker import ClauseChunker

        # The first clause sets the time to first audio: with no comma in its first ~32
        # characters it is cut at a word boundary (measured on 2 cores: first clause ready
        # 0.12 s sooner and synthesized ~0.1 s faster than at the 80-character default).
        return ClauseChunker(first_max_chars=FIRST_CLAUSE_MAX_CHARS)

    @staticmethod
    def speakable(text: str) -> str:
        from daemon.stages.speech_text import to_speakable

        return to_speakable(text)

    def hotwords(self, question_hint: str | None = None) -> str | None:
        """Hotwords for a second recognition pass over a first transcript (``question_hint``);
        None without one: a long unchosen list makes Whisper write names nobody said."""
        if self.kb is None or not self.cfg.stt.hotwords or not question_hint:
            return None
        return self.kb.speech_hints(question_hint) or None

    def warm_up(self) -> None:
        """Run every loaded stage once so the first real question pays no lazy start-up:
        the embedder loads, and the LLM's KV cache holds the fixed prompt prefix."""
        if self.kb is not None:
            self.kb.retrieve("warm up")
        if self.llm is not None:
            note = [Passage("The Brimble bridge is 240 metres long.", "warm-up", 1.0)]
            emotion = Emotion(self.cfg.emotion.default, self.cfg.emotion.intensity)
            for notes in ([], note):
                for _ in self.llm.stream(self.prompts.build("Hello?", notes, [], emotion),
                                         max_tokens=1, temperature=0.0):
                    pass
        if self.tts is not None:
            for _ in self.tts.synthesize("Hello."):
                pass
        if self.stt is not None:
            self.stt.transcribe(np.zeros(16000, dtype=np.float32))

    def prime(self, emotion: Emotion) -> None:
        """Put the next prompt's fixed part (instructions, history, examples) in the LLM's
        cache while nobody talks, so the next question pays only for its notes and words.
        The history changes after every turn, and everything after it must be computed again."""
        if self.llm is None:
            return
        notes = [Passage(_PRIME_NOTE, "prime", 1.0)]     # a note: the grounded prompt's shape
        messages = self.messages_for("?", notes, emotion)
        for _ in self.llm.stream(messages, max_tokens=1, temperature=0.0):
            pass

    def transcribe(self, audio: np.ndarray) -> str:
        """Speech to text; raises NoSpeechError when nothing was said."""
        text, _ = self.stt.transcribe(audio, hints=self.hotwords)
        if not text.strip():
            raise NoSpeechError("no speech heard")
        return text.strip()


def _timed(name: str, times: dict[str, float], progress: Progress | None, fn: Callable[[], Any]) -> Any:
    if progress:
        progress(f"loading {name}")
    start = time.monotonic()
    value = fn()
    times[name] = round(time.monotonic() - start, 3)
    _LOGGER.info("%s ready in %.2f s", name, times[name])
    return value


def _indexing_lines(progress: Progress) -> IndexProgress:
    """Indexing as progress lines: "indexing 1/3 a.md", ..., "indexed 3 files"."""
    def line(done: int, total: int, name: str) -> None:
        progress(f"indexing {done + 1}/{total}: {name}" if name
                 else f"indexed {total} file{'s' if total != 1 else ''}")
    return line


def load_knowledge_base(cfg: Config, progress: Progress | None = None, strict: bool = False,
                        indexing: IndexProgress | None = None,
                        on_kb: Callable[[Any], None] | None = None) -> Any:
    """The knowledge base, opened (and synced); None when it cannot be used and not strict.
    Files being embedded are reported to ``indexing`` (done, total, name) when given, else as
    a ``progress`` line; ``on_kb(kb)`` gets the knowledge base before it is opened (to follow
    a long first indexing)."""
    from daemon.kb import KnowledgeBase

    kb = KnowledgeBase(cfg.rag)
    if on_kb is not None:
        on_kb(kb)
    try:
        if strict:
            kb.check_folder()
        kb.open(progress=indexing or (_indexing_lines(progress) if progress else None))
    except KnowledgeBaseError as exc:
        if strict:
            raise
        _LOGGER.warning("knowledge base unavailable, answering without it for now: %s", exc)
    except SottovoceError as exc:   # e.g. the embedding model is missing: no retrieval at all
        if strict:
            raise
        _LOGGER.error("knowledge base disabled: %s", exc)
        return None
    return kb


def build_pipeline(
    cfg: Config,
    *,
    progress: Progress | None = None,
    stages: Sequence[str] = ("vad", "stt", "kb", "llm", "tts"),
    strict_kb: bool = False,
    indexing: IndexProgress | None = None,
    on_kb: Callable[[Any], None] | None = None,
) -> Pipeline:
    """Load the requested stages (all by default) and wire them together; ``progress`` gets a
    line per step, ``indexing`` (if given) the knowledge base's files as they are embedded,
    ``on_kb`` the knowledge base before its files are indexed."""
    times: dict[str, float] = {}
    vad = stt = kb = None
    from daemon.stages.vad import load_silero

    if "vad" in stages:
        vad = _timed("vad", times, progress, lambda: load_silero(cfg.vad))
    if "stt" in stages:
        from daemon.stages.stt import WhisperTranscriber

        # Its own VAD instance: Silero carries stream state, and the live endpointer owns the other.
        stt = _timed("stt", times, progress, lambda: WhisperTranscriber(cfg.stt, vad=load_silero(cfg.vad)))
    llm = _timed("llm", times, progress, lambda: build_llm(cfg)) if "llm" in stages else None
    tts = _timed("tts", times, progress, lambda: build_tts(cfg)) if "tts" in stages else None
    if "kb" in stages:
        kb = _timed("kb", times, progress, lambda: load_knowledge_base(cfg, progress, strict_kb, indexing, on_kb))
    history = ConversationHistory(cfg.conversation.max_turns, cfg.conversation.max_tokens,
                                  path=cfg.conversation.history_file or None)
    pipe = Pipeline(cfg=cfg, llm=llm, tts=tts, history=history, stt=stt, vad_model=vad, kb=kb)  # type: ignore[arg-type]
    pipe.load_times = times
    _timed("warm-up", times, progress, pipe.warm_up)
    return pipe


def build_llm(cfg: Config) -> ChatModel:
    if cfg.llm.engine == "openai":
        from daemon.stages.llm_openai import OpenAIChatModel

        return OpenAIChatModel(cfg.llm)
    from daemon.stages.llm_llamacpp import LlamaCppChatModel

    return LlamaCppChatModel(cfg.llm, own_name=cfg.persona.name)


def build_tts(cfg: Config) -> SpeechSynthesizer:
    from daemon.stages.tts import build_tts as build

    return build(cfg.tts)
