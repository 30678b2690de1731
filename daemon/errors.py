"""Typed errors and the process exit codes they map to (one place for both)."""

from __future__ import annotations

# Exit codes of the `sottovoce` CLI and `sottovoced`.
EXIT_OK = 0
EXIT_FAILURE = 1          # unexpected failure
EXIT_CONFIG = 2           # bad config or bad command-line usage
EXIT_NO_SERVICE = 3       # the service is not on the bus
EXIT_BAD_AUDIO = 4        # input is not audio / cannot be decoded
EXIT_NO_SPEECH = 5        # audio held no speech
EXIT_MODEL = 6            # a model is missing or failed to load
EXIT_KB = 7               # knowledge-base folder missing or unusable
EXIT_BAD_ARG = 8          # a value the user gave is not acceptable (e.g. unknown emotion)
EXIT_ALREADY_RUNNING = 9  # a second instance of the service
EXIT_KB_EMPTY = 10        # knowledge-base folder holds no documents
EXIT_NO_DEVICE = 11       # no usable audio device
EXIT_NETWORK = 12         # a download could not reach its server (offline, proxy, DNS)
EXIT_INTERRUPTED = 13     # the reply was cut short (barge-in, Interrupt(), a newer question)


class SottovoceError(Exception):
    """Base of every error meant to be shown to a person as one line."""

    exit_code = EXIT_FAILURE
    code = "Failed"       # D-Bus error suffix: org.sottovoce.Assistant1.Error.<code>


class ConfigError(SottovoceError):
    exit_code = EXIT_CONFIG
    code = "Config"


class BadAudioError(SottovoceError):
    exit_code = EXIT_BAD_AUDIO
    code = "BadAudio"


class NoSpeechError(SottovoceError):
    exit_code = EXIT_NO_SPEECH
    code = "NoSpeech"


class ModelError(SottovoceError):
    exit_code = EXIT_MODEL
    code = "Model"


class KnowledgeBaseError(SottovoceError):
    exit_code = EXIT_KB
    code = "KnowledgeBase"


class BadArgumentError(SottovoceError):
    exit_code = EXIT_BAD_ARG
    code = "InvalidArgument"


class UnknownEmotionError(BadArgumentError):
    code = "UnknownEmotion"


class NotReadyError(SottovoceError):
    """The service is on the bus but still loading its models."""
    exit_code = EXIT_NO_SERVICE
    code = "NotReady"


class AlreadyRunningError(SottovoceError):
    exit_code = EXIT_ALREADY_RUNNING
    code = "AlreadyRunning"


class NetworkError(SottovoceError):
    exit_code = EXIT_NETWORK
    code = "Network"


class InterruptedTurn(Exception):
    """Raised inside a turn when barge-in (or Interrupt()) cancelled it."""


class KnowledgeBaseEmptyError(KnowledgeBaseError):
    exit_code = EXIT_KB_EMPTY
    code = "KnowledgeBaseEmpty"


class NoDeviceError(SottovoceError):
    exit_code = EXIT_NO_DEVICE
    code = "NoDevice"


class ReplyNotSpokenError(NoDeviceError):
    """A question was answered but not heard (the service has no speaker): the reply and its
    sources come with the error, for the caller to show before it says so."""

    def __init__(self, message: str, reply: str, sources: list[str]) -> None:
        super().__init__(message)
        self.reply = reply
        self.sources = sources


class ReplyInterruptedError(SottovoceError):
    """The reply was cut short before it was complete (what the service calls Interrupted)."""
    exit_code = EXIT_INTERRUPTED
    code = "Interrupted"
