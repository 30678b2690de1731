"""`sottovoce doctor` on this CPU-only machine, and the VRAM budget of the GPU profile."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from daemon.config import PROJECT_ROOT, load_config
from daemon.errors import EXIT_CONFIG, EXIT_MODEL
from daemon.gpu.doctor import budget, parse_smi, render
from tests.fixtures_core import sottovoce

RTX4090 = PROJECT_ROOT / "config" / "rtx4090.yaml"
# Captured from the H100 machine this project's benchmark ran on (nvidia-smi 580.159.04).
H100_QUERY = "NVIDIA H100 80GB HBM3, 81559, 0, 580.159.04\n"
H100_HEADER = ("| NVIDIA-SMI 580.159.04             Driver Version: 580.159.04     CUDA Version: 13.0     |\n")


def test_cpu_machine_says_there_is_no_gpu_and_embedded_needs_none(cli_env: dict[str, str]):
    done = sottovoce("--config", str(PROJECT_ROOT / "config" / "default.yaml"), "doctor", env=cli_env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("GPU: none found")
    assert "every model runs on the CPU; no GPU is needed" in done.stdout
    report = json.loads(sottovoce("--config", str(PROJECT_ROOT / "config" / "default.yaml"), "doctor", "--json",
                                  env=cli_env).stdout)
    assert report["card_gb"] is None and not report["needs_gpu"], report


def test_rtx4090_profile_fits_24_gib_and_says_a_gpu_is_missing(cli_env: dict[str, str]):
    done = sottovoce("doctor", "--profile", "rtx4090", "--json", env=cli_env)
    report = json.loads(done.stdout)
    assert done.returncode == EXIT_MODEL                     # the profile needs CUDA; this machine has none
    assert report["gpu"] is None and report["needs_gpu"] and report["fits"] and not report["problems"]
    assert report["card_gb"] == 24.0
    names = " ".join(item["component"] for item in report["items"])
    assert "vLLM" in names and "Whisper" in names and "CSM" in names
    assert report["total_gb"] <= 24.0 - 0.5                  # room left for activation peaks
    vllm = report["items"][0]
    assert vllm["total_gb"] == pytest.approx(0.55 * 24.0, abs=0.01)   # vLLM reserves its whole share
    text = sottovoce("doctor", "--profile", "rtx4090", env=cli_env).stdout
    assert "GPU: none found" in text and "| **total** |" in text and "fits" in text


def test_too_small_a_vllm_share_is_refused_with_the_fix(tmp_path: Path, cli_env: dict[str, str]):
    cfg_file = tmp_path / "small.yaml"
    cfg_file.write_text(RTX4090.read_text().replace("vllm_gpu_memory_utilization: 0.55",
                                                    "vllm_gpu_memory_utilization: 0.35"))
    done = sottovoce("--config", str(cfg_file), "doctor", env=cli_env)
    assert done.returncode == EXIT_CONFIG
    assert "Refused: vLLM's share (0.35 x 24.0 GiB" in done.stdout
    assert "raise gpu.vllm_gpu_memory_utilization or lower gpu.vllm_max_model_len" in done.stdout


def test_a_card_too_small_for_everything_is_refused():
    cfg = load_config(RTX4090, use_user_file=False).replace("gpu", total_vram_gb=16.0)
    report = budget(cfg, None)
    assert not report.fits
    assert any(p.startswith("the models need") and "of a 16.0 GiB card" in p for p in report.problems)
    assert "DOES NOT FIT" in render(report)


def test_a_real_gpu_is_read_from_nvidia_smi():
    gpu = parse_smi(H100_QUERY, H100_HEADER)
    assert gpu is not None
    assert (gpu.name, gpu.driver, gpu.cuda) == ("NVIDIA H100 80GB HBM3", "580.159.04", "13.0")
    assert gpu.total_gb == pytest.approx(79.65, abs=0.01) and gpu.used_gb == 0.0
    report = budget(load_config(RTX4090, use_user_file=False), gpu)
    assert report.fits and report.card_gb == gpu.total_gb
    assert render(report).startswith("GPU: NVIDIA H100 80GB HBM3, 79.6 GiB (0.0 GiB in use), driver 580.159.04")
    assert parse_smi("", H100_HEADER) is None
