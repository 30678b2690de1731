"""Speakable answers from the sample knowledge base: the numbers, dates, codes and units its
facts hold, written out as a listener expects them (and heard back right through piper + Whisper)."""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import pytest

from daemon.stages.speech_text import to_speakable
from tests.fixtures_audio import to_16k

CASES = [
    ("It was first lit on 14 March 1873.", "It was first lit on the fourteenth of March, eighteen seventy-three."),
    ("It opened on March 14, 1873.", "It opened on March fourteenth, eighteen seventy-three."),
    ("May 5 people come?", "May five people come?"),
    ("Capacity: the Zephyr K-420 holds 1.7 litres of water.",
     "Capacity: the Zephyr K four twenty holds one point seven litres of water."),
    ("Register at the desk, phone 0800 555 0142.",
     "Register at the desk, phone zero eight zero zero, five five five, zero one four two."),
    ("The bakery opens at 6:45 and closes at 3.", "The bakery opens at six forty-five and closes at three."),
    ("E7 means the scale sensor is blocked.", "E seven means the scale sensor is blocked."),
    ("Employees get 30% off.", "Employees get thirty percent off."),
]


@pytest.mark.parametrize("text,expected", CASES)
def test_knowledge_base_facts_are_written_out(text: str, expected: str) -> None:
    assert to_speakable(text) == expected


def test_a_spoken_fact_is_heard_back(piper_tts: Any, transcriber: Any) -> None:
    """Piper samples its voice afresh each time (and Whisper tiny.en now and then hears
    "eighteen seventy-three" as "aging 73"): most of five renderings must be heard right."""
    speakable = to_speakable("The Zephyr K-420 holds 1.7 litres and was first sold on 14 March 1873.")
    heard_right, misheard = 0, []
    for _ in range(5):
        audio = np.concatenate([np.asarray(c, np.float32) for c in piper_tts.synthesize(speakable)])
        heard, _ = transcriber.transcribe(to_16k(audio, piper_tts.sample_rate))
        plain = re.sub(r"[^a-z0-9. ]+", " ", heard.lower())
        if (("1.7" in plain or "one point seven" in plain)
                and ("1873" in plain or "eighteen seventy three" in plain)):
            heard_right += 1
        else:
            misheard.append(heard)
    assert heard_right >= 3, misheard
