"""Spoken questions over the sample knowledge base, with the fact each answer must hold.

A fact is a tuple of acceptable spellings (the reply may write numbers as digits or words).
"""

from __future__ import annotations

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
