"""Spoken questions over the sample knowledge base, with the fact each answer must hold.

A fact is a tuple of acceptable spellings (the reply may write numbers as digits or words;
Whisper may hear a spoken number back either way). ``QUESTIONS`` is the short list the
latency benchmark asks; ``QUALITY`` is the answer-quality set (``bench.quality``), including
questions the knowledge base cannot answer (no facts, no source).
"""

from __future__ import annotations

from dataclasses import dataclass

LIGHTHOUSE = "skerrimore_lighthouse.md"
KETTLE = "zephyr_kettle_manual.txt"
BAKERY = "quillfeather_bakery_handbook.pdf"


@dataclass(frozen=True)
class QualityQuestion:
    """One question: what is said, the spellings of the fact, and the document that holds it."""

    text: str
    facts: tuple[str, ...] = ()      # empty: the knowledge base holds no answer
    source: str = ""

    @property
    def answerable(self) -> bool:
        return bool(self.facts)


def _q(text: str, source: str, *facts: str) -> QualityQuestion:
    return QualityQuestion(text, tuple(facts), source)


QUALITY: list[QualityQuestion] = [
    _q("When was Skerrimore Lighthouse first lit?", LIGHTHOUSE, "1873", "eighteen seventy"),
    _q("How tall is the Skerrimore lighthouse tower?", LIGHTHOUSE, "38", "thirty eight"),
    _q("How many steps does Skerrimore lighthouse have?", LIGHTHOUSE, "212", "two hundred and twelve",
       "two hundred twelve"),
    _q("How often does the Skerrimore light flash?", LIGHTHOUSE, "7 seconds", "seven seconds"),
    _q("What colour is the light at Skerrimore?", LIGHTHOUSE, "green"),
    _q("How far out to sea can the Skerrimore light be seen?", LIGHTHOUSE, "19", "nineteen"),
    _q("Who was the last keeper of Skerrimore lighthouse?", LIGHTHOUSE, "Dorrity", "Dority", "Dorrety"),
    _q("Who designed Skerrimore Lighthouse?", LIGHTHOUSE, "Tullach", "Tulloch", "Tullock"),
    _q("Since when has the Skerrimore light been automatic?", LIGHTHOUSE, "1994", "nineteen ninety four"),
    _q("On which island does Skerrimore Lighthouse stand?", LIGHTHOUSE, "Hallow"),
    _q("When do the lighthouse tours run?", LIGHTHOUSE, "April", "October"),
    _q("What is the foghorn in the lighthouse museum nicknamed?", LIGHTHOUSE, "Grumble"),
    _q("What is the old keeper's cottage used for now?", LIGHTHOUSE, "museum"),
    _q("What does error E7 mean on the Zephyr kettle?", KETTLE, "scale"),
    _q("What does error code E4 mean on the kettle?", KETTLE, "empty"),
    _q("How much water does the Zephyr K-420 kettle hold?", KETTLE, "1.7", "one point seven"),
    _q("How many watts is the Zephyr kettle?", KETTLE, "2200", "two thousand two hundred",
       "twenty two hundred"),
    _q("How long does a full Zephyr kettle take to boil?", KETTLE, "4 minutes", "four minutes"),
    _q("How often should I descale the Zephyr kettle?", KETTLE, "6 weeks", "six weeks"),
    _q("How much citric acid do I use to descale the kettle?", KETTLE, "2 tablespoons", "two tablespoons"),
    _q("How long should the descaling solution stand in the kettle?", KETTLE, "20 minutes", "twenty minutes"),
    _q("How long is the warranty on the Zephyr kettle?", KETTLE, "3 years", "three years"),
    _q("What is the phone number of the Zephyr service desk?", KETTLE, "555 0142", "5550142",
       "five five five"),
    _q("Who is the head baker at Quillfeather Bakery?", BAKERY, "Praske", "Ottoline"),
    _q("What is the sourdough starter at Quillfeather Bakery called?", BAKERY, "Gertrude"),
    _q("On which day is Quillfeather Bakery closed?", BAKERY, "Tuesday"),
    _q("What time does Quillfeather Bakery open in the morning?", BAKERY, "6:45", "6.45", "645",
       "six forty five", "quarter to seven"),
    _q("When does Quillfeather Bakery close in the afternoon?", BAKERY, "3", "three"),
    _q("How much staff discount do Quillfeather employees get?", BAKERY, "30", "thirty"),
    _q("What is the signature loaf at Quillfeather Bakery?", BAKERY, "Marrowdown", "Marrow down"),
    _q("Which farm does the rye flour for the Marrowdown sourdough come from?", BAKERY, "Fenwick"),
    _q("When is the sourdough starter Gertrude fed?", BAKERY, "noon", "12", "twelve"),
    # No answer in the knowledge base: chat, no sources, no claimed document.
    QualityQuestion("Tell me a joke about penguins."),
    QualityQuestion("How are you today?"),
    QualityQuestion("What is the capital of France?"),
    QualityQuestion("Can you recommend a good book for the weekend?"),
    QualityQuestion("How tall is Mount Everest?"),
    QualityQuestion("What should I cook for dinner tonight?"),
    QualityQuestion("Who painted the Mona Lisa?"),
    QualityQuestion("What's your favourite colour?"),
]

# The latency benchmark's short list (kept as it was, so its timings stay comparable).
QUESTIONS: list[tuple[str, tuple[str, ...]]] = [
    ("When was Skerrimore Lighthouse first lit?", ("1873", "eighteen seventy")),
    ("How tall is the Skerrimore lighthouse tower?", ("38", "thirty-eight", "thirty eight")),
    ("How often does the Skerrimore light flash green?", ("7 seconds", "seven seconds")),
    ("How many steps does Skerrimore lighthouse have?", ("212", "two hundred and twelve", "two hundred twelve")),
    ("Who was the last keeper of Skerrimore lighthouse?", ("Dorrity",)),
    ("What does error E7 mean on the Zephyr kettle?", ("scale",)),
    ("How much water does the Zephyr K-420 kettle hold?", ("1.7", "one point seven")),
    ("How often should I descale the Zephyr kettle?", ("6 weeks", "six weeks")),
    ("How long is the warranty on the Zephyr kettle?", ("3 years", "three years")),
    ("Who is the head baker at Quillfeather Bakery?", ("Praske", "Ottoline")),
    ("What is the sourdough starter at Quillfeather Bakery called?", ("Gertrude",)),
    ("On which day is Quillfeather Bakery closed?", ("Tuesday",)),
]

# Requests the knowledge base has no answer for, whose replies run to several sentences: where
# streaming has something to overlap (reported beside the main table, not in it).
LONG_REPLIES: list[str] = [
    "Tell me a story about a dragon.",
    "Tell me a joke about cats.",
    "What is your favourite season, and why?",
    "Describe a perfect lazy Sunday.",
]
