"""The subcommand groups, in the order `sottovoce --help` lists them."""

from __future__ import annotations

from daemon.cli import local

REGISTRARS = [local.register]

# Optional groups register themselves here when present (each owned by its own module).
for _name in ("remote", "kb", "gpu", "service_install"):
    try:
        _mod = __import__(f"daemon.cli.{_name}", fromlist=["register"])
    except ModuleNotFoundError as _exc:
        if _exc.name != f"daemon.cli.{_name}":
            raise
        continue
    REGISTRARS.append(_mod.register)
