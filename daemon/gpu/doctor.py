"""`sottovoce doctor`: the GPU, its driver and CUDA, and whether the profile's models fit its memory.

Units: the constants below are in GB (10^9 bytes, as file sizes and measurements were taken);
the report converts everything to GiB, the unit of card sizes (``gpu.total_vram_gb`` is GiB).

Each model the config puts on the GPU gets an estimate (weights, KV cache, workspace); vLLM
reserves its whole share (``gpu.vllm_gpu_memory_utilization`` of the card) up front. The
total is compared with the card found, or with ``gpu.total_vram_gb`` on a machine without one.
The figures are measured (CSM-1B, Phi-3-medium shapes: ``bench/gpu.py``, the README's GPU profile section) or
computed from parameter counts; they are estimates with a margin, not promises.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import asdict, dataclass, field
from typing import Callable
from urllib.parse import urlparse

from daemon.config import Config

GIB = 2**30                  # the report is in GiB: a "24 GB" RTX 4090 has 24564 MiB = 24 GiB
CUDA_CONTEXT_GB = 0.5        # one process's CUDA context (sottovoced: torch and CTranslate2 share it)
DESKTOP_GB = 1.0             # a desktop session's share of a display card, when none is measured
HEADROOM_GB = 0.5            # GiB kept free for fragmentation and activation peaks

# Whisper sizes by name fragment: parameters (billions).
WHISPER_PARAMS = (("large-v3-turbo", 0.809), ("turbo", 0.809), ("distil-large", 0.756), ("large", 1.55),
                  ("medium", 0.769), ("small", 0.244), ("base", 0.074), ("tiny", 0.039))
CT2_BYTES = {"float16": 2.0, "int8_float16": 1.05, "int8": 1.05, "int8_float32": 1.05, "float32": 4.0,
             "default": 2.0}
# Phi-3-medium (14B): 4-bit AWQ checkpoint 7.74 GB (bjaidi/Phi-3-medium-128k-instruct-awq files);
# bf16 27.9 GB (bench/gpu.py). KV: 40 layers x 2 x 10 heads x 128 dims x 2 bytes per token.
PHI3_WEIGHTS_GB = {"awq": 7.74, "gptq": 7.9, "none": 27.9}
PHI3_KV_BYTES_PER_TOKEN = 40 * 2 * 10 * 128 * 2
VLLM_WORKSPACE_GB = 1.5      # activations of the profiling run + CUDA graphs (max-num-seqs 4)
# CSM-1B in bf16 with Mimi in float32 and per-codebook heads: measured 3.7 GB; its static KV cache
# (2048 positions) 0.07 GB; peak minus those while streaming (graph pool, compile, Mimi) 1.8 GB.
CSM_GB = (3.7, 0.07, 1.8)


@dataclass(frozen=True)
class GpuInfo:
    """The first NVIDIA GPU; memory in GiB."""

    name: str
    total_gb: float
    used_gb: float
    driver: str
    cuda: str


@dataclass(frozen=True)
class Item:
    """One line of the budget, in GiB."""

    component: str
    weights_gb: float = 0.0
    kv_gb: float = 0.0
    workspace_gb: float = 0.0
    note: str = ""

    @property
    def total_gb(self) -> float:
        return self.weights_gb + self.kv_gb + self.workspace_gb


@dataclass
class Report:
    gpu: GpuInfo | None
    profile: str
    card_gb: float
    items: list[Item]
    problems: list[str] = field(default_factory=list)

    @property
    def total_gb(self) -> float:
        return sum(i.total_gb for i in self.items)

    @property
    def fits(self) -> bool:
        return not self.problems

    @property
    def needs_gpu(self) -> bool:
        return bool(self.items)

    def as_dict(self) -> dict[str, object]:
        return {
            "gpu": asdict(self.gpu) if self.gpu else None, "profile": self.profile,
            "card_gb": self.card_gb if self.needs_gpu else None,     # no card to budget for on the CPU
            "items": [{**asdict(i), "total_gb": round(i.total_gb, 2)} for i in self.items],
            "total_gb": round(self.total_gb, 2), "fits": self.fits, "problems": self.problems,
        }


# ------------------------------------------------------------------ the GPU
Runner = Callable[[list[str]], str]


def _run(cmd: list[str]) -> str:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=20, check=True).stdout


def parse_smi(query: str, header: str) -> GpuInfo | None:
    """First GPU from `nvidia-smi --query-gpu=name,memory.total,memory.used,driver_version
    --format=csv,noheader,nounits` and the CUDA version from plain `nvidia-smi`'s header."""
    lines = [ln for ln in query.strip().splitlines() if ln.strip()]
    if not lines:
        return None
    name, total, used, driver = (part.strip() for part in lines[0].split(",")[:4])
    cuda = re.search(r"CUDA Version:\s*([\d.]+)", header)
    return GpuInfo(name, float(total) / 1024, float(used) / 1024, driver,
                   cuda.group(1) if cuda else "unknown")


def probe_gpu(run: Runner = _run) -> GpuInfo | None:
    """The first NVIDIA GPU, or None when there is no driver or no device."""
    if shutil.which("nvidia-smi") is None and run is _run:
        return None
    try:
        query = run(["nvidia-smi", "--query-gpu=name,memory.total,memory.used,driver_version",
                     "--format=csv,noheader,nounits"])
        header = run(["nvidia-smi"])
    except (OSError, subprocess.SubprocessError):
        return None
    return parse_smi(query, header)


# ------------------------------------------------------------------ the budget
def _whisper_params(model: str) -> float:
    name = model.lower()
    for fragment, params in WHISPER_PARAMS:
        if fragment in name:
            return params
    return 1.55                                        # unknown: assume the largest


def _gib(gb: float) -> float:
    return gb * 1e9 / GIB


def _item(component: str, weights_gb: float, kv_gb: float, workspace_gb: float, note: str = "") -> Item:
    """An Item from figures in GB, converted to GiB."""
    return Item(component, _gib(weights_gb), _gib(kv_gb), _gib(workspace_gb), note)


def _local(url: str) -> bool:
    return (urlparse(url).hostname or "") in ("127.0.0.1", "localhost", "::1")


def _vllm_item(cfg: Config, card_gb: float, problems: list[str]) -> Item:
    gpu = cfg.gpu
    share = gpu.vllm_gpu_memory_utilization * card_gb
    weights, workspace = _gib(PHI3_WEIGHTS_GB[gpu.vllm_quantization]), _gib(VLLM_WORKSPACE_GB)
    kv_needed = PHI3_KV_BYTES_PER_TOKEN * gpu.vllm_max_model_len / GIB
    kv_gets = share - weights - workspace
    if kv_gets < kv_needed:
        problems.append(
            f"vLLM's share ({gpu.vllm_gpu_memory_utilization:g} x {card_gb:.1f} GiB = {share:.1f} GiB) cannot hold "
            f"Phi-3-medium ({gpu.vllm_quantization}: {weights:.1f} GiB) + its workspace ({workspace:.1f} GiB) + "
            f"a KV cache for gpu.vllm_max_model_len={gpu.vllm_max_model_len} tokens ({kv_needed:.2f} GiB): raise "
            f"gpu.vllm_gpu_memory_utilization or lower gpu.vllm_max_model_len")
    tokens = max(kv_gets, 0.0) * GIB / PHI3_KV_BYTES_PER_TOKEN
    return Item("LLM: vLLM, Phi-3-medium (whole share reserved)", weights, max(kv_gets, 0.0), workspace,
                f"{gpu.vllm_gpu_memory_utilization:g} of the card; KV room for {tokens:,.0f} tokens "
                f"(max-model-len {gpu.vllm_max_model_len} needs {kv_needed:.2f} GiB)")


def budget(cfg: Config, gpu: GpuInfo | None) -> Report:
    """The VRAM budget of ``cfg`` on ``gpu`` (or on a card of ``gpu.total_vram_gb``)."""
    card = gpu.total_gb if gpu else cfg.gpu.total_vram_gb
    items: list[Item] = []
    problems: list[str] = []
    if cfg.llm.engine == "openai" and _local(cfg.llm.base_url):
        items.append(_vllm_item(cfg, card, problems))
    if cfg.stt.device in ("cuda", "auto") and (gpu or cfg.stt.device == "cuda"):
        params = _whisper_params(cfg.stt.model)
        bytes_per = CT2_BYTES.get(cfg.stt.compute_type, 2.0)
        items.append(_item(f"STT: Whisper ({params:.2f} B params, {cfg.stt.compute_type})", params * bytes_per,
                           0.05, 1.0, "CTranslate2, beam 1 (faster-whisper's own benchmark: 2.95 GB peak "
                           "for int8, 4.5 GB for fp16 at beam 5)"))
    if cfg.tts.engine == "csm" and cfg.tts.device == "cuda":
        items.append(_item("TTS: CSM-1B (bf16, Mimi fp32)", *CSM_GB, "measured on an H100, bench/gpu.py"))
    if cfg.rag.device == "cuda":
        items.append(_item("RAG: MiniLM embeddings + faiss-gpu", 0.1, 0.0, 0.3, "index of a personal KB: MBs"))
    if items and (len(items) > 1 or not items[0].component.startswith("LLM")):
        items.append(_item("CUDA context of sottovoced", 0.0, 0.0, CUDA_CONTEXT_GB))
    if items:
        other = gpu.used_gb if gpu and gpu.used_gb > 0.05 else _gib(DESKTOP_GB)
        items.append(Item("desktop / other processes", 0.0, 0.0, other,
                          "measured now" if gpu and gpu.used_gb > 0.05 else "assumed for a display card"))
    report = Report(gpu, cfg.profile, card, items, problems)
    if items and report.total_gb + HEADROOM_GB > card:
        problems.append(
            f"the models need {report.total_gb:.1f} GiB (+{HEADROOM_GB:g} GiB headroom) of a {card:.1f} GiB card: "
            "lower gpu.vllm_gpu_memory_utilization, use stt.compute_type int8_float16, or move TTS/RAG to the CPU")
    return report


def torch_line() -> str:
    """What PyTorch in this environment makes of the GPU (only asked when a GPU is present)."""
    try:
        import torch
    except ImportError:
        return "PyTorch: not installed"
    seen = torch.cuda.is_available()
    return (f"PyTorch {torch.__version__}: built for CUDA {torch.version.cuda or 'none (CPU build)'}, "
            f"{'sees the GPU' if seen else 'does NOT see the GPU'}")


# ------------------------------------------------------------------ output
def render(report: Report) -> str:
    gpu = report.gpu
    if gpu:
        head = (f"GPU: {gpu.name}, {gpu.total_gb:.1f} GiB ({gpu.used_gb:.1f} GiB in use), driver {gpu.driver}, "
                f"CUDA {gpu.cuda}")
    else:
        head = "GPU: none found (no NVIDIA driver or device; nvidia-smi unavailable)"
    lines = [head]
    if not report.items:
        lines.append(f"Profile {report.profile}: every model runs on the CPU; no GPU is needed.")
        return "\n".join(lines)
    where = "this card" if gpu else f"a {report.card_gb:.1f} GiB card (gpu.total_vram_gb)"
    lines += [f"Profile {report.profile}: VRAM budget on {where}", "",
              "| component | weights GiB | KV cache GiB | workspace GiB | total GiB | notes |",
              "|---|---|---|---|---|---|"]
    for i in report.items:
        lines.append(f"| {i.component} | {i.weights_gb:.2f} | {i.kv_gb:.2f} | {i.workspace_gb:.2f} | "
                     f"{i.total_gb:.2f} | {i.note} |")
    spare = report.card_gb - report.total_gb
    lines.append(f"| **total** | | | | **{report.total_gb:.2f}** | of {report.card_gb:.1f} GiB: "
                 f"{'fits' if report.fits else 'DOES NOT FIT'}, {spare:.1f} GiB to spare |")
    lines += [f"Refused: {p}" for p in report.problems]
    return "\n".join(lines)
