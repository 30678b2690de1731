"""Echo cancellation: the sound server's canceller, set up once, used as ordinary devices.

The assistant must not take its own voice, coming back through the microphone, for the user.
The standard Linux answer is the sound server's WebRTC echo canceller: PulseAudio's
``module-echo-cancel`` or PipeWire's ``libpipewire-module-echo-cancel`` (which
``pipewire-pulse`` also loads under the PulseAudio name). It creates a new source (the
microphone with the speaker's echo removed) and a new sink (play here so the canceller
knows what to remove). Point ``audio.input`` and ``audio.output`` at those two names.
"""

from __future__ import annotations

import shlex
from typing import Literal

EC_SOURCE = "sottovoce_mic"        # the echo-cancelled microphone
EC_SINK = "sottovoce_speaker"      # play here: the canceller's reference signal
_PIPEWIRE_CONF = "~/.config/pipewire/pipewire.conf.d/60-sottovoce-echo-cancel.conf"
_PULSE_CONF = "~/.config/pulse/default.pa"


def echo_cancel_setup_commands(
    server: Literal["pulseaudio", "pipewire"] = "pulseaudio", *,
    mic: str | None = None, speaker: str | None = None,
    source_name: str = EC_SOURCE, sink_name: str = EC_SINK, persistent: bool = False,
) -> list[str]:
    """Shell commands that set up the canceller (``#`` lines are explanations).

    ``mic``/``speaker`` name the real devices (PulseAudio source/sink names, as
    ``pactl list short sources`` prints them); None means the current defaults. Without
    ``persistent`` the canceller lasts until the sound server restarts; with it, the
    commands write the server's own configuration so it is loaded at every login.
    """
    args = ["aec_method=webrtc", f"source_name={source_name}", f"sink_name={sink_name}"]
    if mic:
        args.append(f"source_master={mic}")
    if speaker:
        args.append(f"sink_master={speaker}")
    config = [
        "# then tell Sottovoce to use them (~/.config/sottovoce/config.yaml):",
        f"#   audio: {{input: {source_name}, output: {sink_name}}}",
    ]
    if not persistent:
        load = "pactl load-module module-echo-cancel " + " ".join(shlex.quote(a) for a in args)
        return [f"# {server}: load the WebRTC echo canceller now (until the server restarts)",
                load, *config]
    if server == "pulseaudio":
        line = "load-module module-echo-cancel " + " ".join(args)
        return [
            "# PulseAudio: load the canceller at every start",
            "mkdir -p ~/.config/pulse",
            f"test -f {_PULSE_CONF} || echo '.include /etc/pulse/default.pa' > {_PULSE_CONF}",
            f"echo {shlex.quote(line)} >> {_PULSE_CONF}",
            "pulseaudio -k  # restarts it (autospawn or the systemd user unit brings it back)",
            *config,
        ]
    return [
        "# PipeWire: load libpipewire-module-echo-cancel at every start",
        f"mkdir -p {_PIPEWIRE_CONF.rsplit('/', 1)[0]}",
        f"printf '%s\\n' {shlex.quote(_pipewire_conf(mic, speaker, source_name, sink_name))} "
        f"> {_PIPEWIRE_CONF}",
        "systemctl --user restart pipewire pipewire-pulse",
        *config,
    ]


def _pipewire_conf(mic: str | None, speaker: str | None, source: str, sink: str) -> str:
    capture = f' target.object = "{mic}"' if mic else ""
    playback = f' target.object = "{speaker}"' if speaker else ""
    return "\n".join([
        "context.modules = [",
        "  { name = libpipewire-module-echo-cancel",
        "    args = {",
        "      library.name = aec/libspa-aec-webrtc",
        f"      capture.props = {{ node.name = \"{source}_capture\"{capture} }}",
        f"      source.props = {{ node.name = \"{source}\""
        " node.description = \"Sottovoce microphone (echo-cancelled)\" }",
        f"      sink.props = {{ node.name = \"{sink}\""
        " node.description = \"Sottovoce speaker (echo reference)\" }",
        f"      playback.props = {{ node.name = \"{sink}_playback\"{playback} }}",
        "    }",
        "  }",
        "]",
    ])
