"""The GPU profile's tooling: the VRAM budget check (`sottovoce doctor`) and model downloads."""
