"""`sottovoce models download`: offline, gated and unknown-profile failures are one clear line."""

from __future__ import annotations

import http.server
import os
import subprocess
import threading
from pathlib import Path
from typing import Iterator

import pytest

from daemon.config import PROJECT_ROOT, load_config
from daemon.errors import EXIT_BAD_ARG, EXIT_MODEL, EXIT_NETWORK, ModelError
from daemon.gpu.download import download, specs_for, write_llm_env
from daemon.stages.llm_openai import served_model_name
from tests.fixtures_core import sottovoce
from tests.fixtures_gpu import free_port


def _sottovoce(*args: str, home: Path, cli_env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """The CLI with ``home`` as HOME and no Hugging Face token."""
    env = {k: v for k, v in cli_env.items() if k != "HF_TOKEN"}
    return sottovoce(*args, env={**env, "HOME": str(home)})


def test_offline_is_one_clear_line_with_its_own_exit_code(tmp_path: Path, cli_env: dict[str, str]):
    unreachable = f"http://127.0.0.1:{free_port()}"           # nothing listens: connection refused
    done = _sottovoce("models", "download", "--profile", "rtx4090", "--only", "stt", "--dest",
                      str(tmp_path / "models"), "--endpoint", unreachable, home=tmp_path, cli_env=cli_env)
    assert done.returncode == EXIT_NETWORK, done.stderr
    errors = [ln for ln in done.stderr.splitlines() if ln.startswith("sottovoce:")]
    assert len(errors) == 1 and "Traceback" not in done.stderr
    assert errors[0].startswith(f"sottovoce: cannot reach {unreachable} to download Systran/faster-whisper-large-v3")
    assert f"copy the model folder to {tmp_path / 'models' / 'faster-whisper-large-v3'} by hand" in errors[0]


def test_a_long_failure_is_cut_at_a_word() -> None:
    from daemon.gpu.download import _short

    text = "An error happened while trying to locate the files on the Hub, and we cannot find the snapshot"
    assert _short(text, 60) == "An error happened while trying to locate the files on the..."
    assert _short("  short\n text ", 60) == "short text"


class _GatedHub(http.server.BaseHTTPRequestHandler):
    """The Hub's answer for a gated repo the caller has no access to (status and error headers)."""

    def _refuse(self) -> None:
        self.send_response(401)
        self.send_header("X-Error-Code", "GatedRepo")
        self.send_header("X-Error-Message", "Access to model sesame/csm-1b is restricted.")
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_GET = do_HEAD = _refuse

    def log_message(self, *args: object) -> None:  # quiet
        pass


@pytest.fixture()
def gated_hub() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _GatedHub)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_gated_repo_names_the_access_to_request_and_the_token(tmp_path: Path, gated_hub: str):
    with pytest.raises(ModelError) as err:
        download(specs_for("rtx4090", only="tts"), tmp_path, endpoint=gated_hub, say=lambda _line: None)
    message = str(err.value)
    assert err.value.exit_code == EXIT_MODEL and "\n" not in message
    assert message.startswith(f"sesame/csm-1b is gated: sign in at {gated_hub}/sesame/csm-1b, accept its terms")
    assert "HF_TOKEN=hf_... sottovoce models download --profile rtx4090" in message


def test_unknown_profile_and_embedded_profile(tmp_path: Path, cli_env: dict[str, str]):
    bad = _sottovoce("models", "download", "--profile", "nosuch", home=tmp_path, cli_env=cli_env)
    assert bad.returncode == EXIT_BAD_ARG and "unknown profile 'nosuch'" in bad.stderr
    embedded = _sottovoce("models", "download", "--profile", "embedded", home=tmp_path, cli_env=cli_env)
    assert embedded.returncode == 0 and "ship inside PyPI packages" in embedded.stdout


def test_vllm_unit_settings_come_from_the_profile(tmp_path: Path):
    cfg = load_config(PROJECT_ROOT / "config" / "rtx4090.yaml", use_user_file=False)
    name = served_model_name(cfg.llm)
    assert name == "phi-3-medium"          # the served name, not the path the loader made of it
    env = write_llm_env(cfg.gpu, tmp_path / "phi3", name, 8000, tmp_path / "llm.env").read_text()
    assert f"SOTTOVOCE_LLM_MODEL={tmp_path / 'phi3'}\n" in env
    assert "SOTTOVOCE_LLM_GPU_MEMORY_UTILIZATION=0.55\n" in env and "SOTTOVOCE_LLM_MAX_MODEL_LEN=8192\n" in env
    assert "SOTTOVOCE_VLLM_ARGS=--quantization awq\n" in env and "SOTTOVOCE_LLM_NAME=phi-3-medium\n" in env


def test_llm_unit_verifies(tmp_path: Path):
    """systemd/sottovoce-llm.service is a valid user unit once its vLLM program exists."""
    home, runtime = tmp_path / "home", tmp_path / "run"
    vllm = home / ".local/share/sottovoce/vllm/bin/vllm"
    vllm.parent.mkdir(parents=True)
    vllm.write_text("#!/bin/sh\n")
    vllm.chmod(0o755)
    runtime.mkdir(mode=0o700)
    unit = PROJECT_ROOT / "systemd" / "sottovoce-llm.service"
    done = subprocess.run(["systemd-analyze", "--user", "verify", str(unit)], capture_output=True, text=True,
                          timeout=60, env={**os.environ, "HOME": str(home), "XDG_RUNTIME_DIR": str(runtime)})
    assert done.returncode == 0 and "sottovoce-llm" not in done.stderr, done.stderr
    text = unit.read_text()
    assert "--host 127.0.0.1" in text and "--gpu-memory-utilization ${SOTTOVOCE_LLM_GPU_MEMORY_UTILIZATION}" in text
    assert "--max-model-len ${SOTTOVOCE_LLM_MAX_MODEL_LEN}" in text
