"""Small text helpers shared by the keyword index, the vocabulary and sentence selection.

Everything here is pure Python on strings: no models, no state.
"""

from __future__ import annotations

import re
from typing import Iterator

# Function words and question words: they carry no evidence about *which* document answers.
STOPWORDS = frozenset(
    """
    a about above after again against all am an and any are aren't as at be because been before
    being below between both but by can can't cannot could couldn't did didn't do does doesn't doing
    don't down during each few for from further had hadn't has hasn't have haven't having he he'd
    he'll he's her here here's hers herself him himself his how how's i i'd i'll i'm i've if in into
    is isn't it it's its itself let's me more most mustn't my myself no nor not of off on once only
    or other ought our ours ourselves out over own same shan't she she'd she'll she's should
    shouldn't so some such than that that's the their theirs them themselves then there there's
    these they they'd they'll they're they've this those through to too under until up very was
    wasn't we we'd we'll we're we've were weren't what what's when when's where where's which while
    who who's whom why why's with won't would wouldn't you you'd you'll you're you've your yours
    yourself yourselves tell know please many much also just get got say said will shall may might
    must like one us okay ok hey hi hello well really thing things
    """.split()
)

_WORD = re.compile(r"[^\W_]+(?:['’\-][^\W_]+)*")
_CODE = re.compile(r"^(?=.*\d)(?=.*[a-z])[a-z0-9]+$")


def raw_words(text: str) -> list[str]:
    """Lower-cased words as written (hyphens and apostrophes kept inside a word)."""
    return [m.group().lower().replace("’", "'") for m in _WORD.finditer(text)]


def stem(word: str) -> str:
    """A deliberately tiny stemmer: plurals only, so 'steps' finds 'step' and 'litres' 'litre'."""
    if len(word) <= 3 or not word.isalpha():
        return word
    if word.endswith("ies") and len(word) > 4:
        return word[:-3] + "y"
    if word.endswith(("sses", "shes", "ches", "xes")):
        return word[:-2]
    if word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


def _split_word(word: str) -> list[str]:
    word = word.split("'")[0]                       # "keeper's" -> "keeper"
    if "-" not in word:
        return [word] if word else []
    parts = [p for p in word.split("-") if p]
    joined = "".join(parts)
    if _CODE.match(joined):                         # "k-420" -> "k420": a product code
        return [joined]
    return parts


def index_terms(text: str) -> list[str]:
    """The terms the keyword index matches on: stemmed, stopwords dropped, codes joined.

    A letter group followed by a number ("K 420", as speech recognition writes a code) is
    also emitted joined ("k420"), so it matches the written form "K-420".
    """
    out: list[str] = []
    prev = ""
    for raw in raw_words(text):
        for word in _split_word(raw):
            if prev and prev.isalpha() and len(prev) <= 2 and word.isdigit():
                out.append(prev + word)
            prev = word
            if word in STOPWORDS or (len(word) < 2 and not word.isdigit()):
                continue
            out.append(stem(word))
    return out


# ------------------------------------------------------------------ sound-alike keys
_PHONETIC_RULES = (
    ("ph", "f"), ("ck", "k"), ("gh", ""), ("sch", "sk"), ("ch", "k"), ("qu", "kw"), ("wh", "w"),
    ("x", "ks"), ("q", "k"), ("z", "s"), ("c", "k"), ("v", "f"), ("dg", "j"),
)


def phonetic_key(text: str) -> str:
    """A consonant skeleton: how a word sounds, roughly, after a recogniser has respelt it.

    'Skerrimore' -> 'skrmr', 'scary more' -> 'skrmr', 'mascara in more' -> 'mskrnmr'.
    """
    word = "".join(ch for ch in text.lower() if ch.isalpha())
    if not word:
        return ""
    for old, new in _PHONETIC_RULES:
        word = word.replace(old, new)
    head, rest = word[0], word[1:]
    rest = "".join(ch for ch in rest if ch not in "aeiouyhw")
    key = head + rest
    collapsed = [key[0]]
    for ch in key[1:]:
        if ch != collapsed[-1]:
            collapsed.append(ch)
    return "".join(collapsed)


# ------------------------------------------------------------------ sentences
_SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]*\s+(?=[\"'(\[]?[A-Z0-9])")
_LINE_END = re.compile(r"[.!?:;\"')\]]$")


def paragraphs(text: str) -> Iterator[str]:
    """Blank-line separated blocks, with soft line breaks inside a sentence joined up."""
    for block in re.split(r"\n\s*\n", text):
        lines = [ln.strip() for ln in block.splitlines() if ln.strip()]
        if not lines:
            continue
        merged: list[str] = []
        for line in lines:
            # A line that does not end a sentence continues on the next line (hard-wrapped text),
            # unless the next line starts a list item or the current line looks like a label.
            if merged and not _LINE_END.search(merged[-1]) and not line.startswith(("-", "*", "•")):
                merged[-1] = f"{merged[-1]} {line}"
            else:
                merged.append(line)
        yield "\n".join(merged)


def split_sentences(text: str) -> list[str]:
    """Sentences of a passage, in order. Lines that end with punctuation end a sentence too."""
    out: list[str] = []
    for para in paragraphs(text):
        for line in para.split("\n"):
            out.extend(s.strip() for s in _SENTENCE_END.split(line) if s.strip())
    return out
