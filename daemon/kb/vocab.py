"""The knowledge base's own vocabulary: names, product codes and rare words.

Collected per document at index time. Speech recognition is biased toward these terms
(faster-whisper ``hotwords``), because they are what a small recogniser gets wrong and what
people ask their documents about. "Rare" means: not a whole word of the embedding model's
WordPiece vocabulary (about 20,000 common English words), so no word list is downloaded.

Measured (docs/quality.md): a long list of terms makes Whisper tiny.en write names nobody
said, so a second recognition pass gets only a few: the terms the first, unbiased transcript
seems to say (sound-alike matches), then the subjects (title names) of the documents that
transcript retrieves. Titles did most of the good: questions about a document name its subject.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from pathlib import Path
from typing import Iterable, Sequence

from daemon.kb.textutil import STOPWORDS, split_sentences, stem

# Weights by kind of term: what a recogniser is most likely to miss ranks first.
CODE, NAME, RARE, CAPITALISED = 3.0, 2.5, 1.0, 0.5

_TITLE_TAIL = re.compile(r"\s*(?::|\s[-\u2013\u2014|]\s).*$")      # "Zephyr K-420 Kettle: Quick Manual"
_TITLE_WORDS = 5
_TOKEN = re.compile(r"[^\W_]+(?:[-'’.][^\W_]+)*")
_CODE = re.compile(r"^[A-Za-z]{1,4}-?\d{1,6}[A-Za-z]?$")


def load_common_words(vocab_file: Path | None) -> frozenset[str]:
    """Whole words of a WordPiece ``vocab.txt`` (empty when there is none)."""
    if vocab_file is None or not vocab_file.is_file():
        return frozenset()
    words = vocab_file.read_text(encoding="utf-8", errors="replace").split()
    return frozenset(w for w in words if w.isalpha() and len(w) > 1 and not w.startswith("##"))


def _is_rare(word: str, common: frozenset[str]) -> bool:
    low = word.lower().replace("’", "'").split("'")[0]
    if not common or not low.isalpha() or len(low) < 4 or low in STOPWORDS:
        return False
    variants = {low, stem(low), low.rstrip("s"), re.sub(r"(ing|ed|er|ly)$", "", low)}
    return not variants & common


def extract_terms(text: str, headings: Iterable[str], common: frozenset[str]) -> dict[str, list[float]]:
    """Distinctive terms of one document: ``{term: [count, kind weight]}``."""
    found: dict[str, list[float]] = {}

    def add(term: str, kind: float) -> None:
        entry = found.setdefault(term, [0.0, kind])
        entry[0] += 1
        entry[1] = max(entry[1], kind)

    parts = dict.fromkeys(part for heading in headings for part in heading.split(" > ") if part)
    lines = [(s, False) for s in split_sentences(text)] + [(part, True) for part in parts]
    for sentence, is_heading in lines:
        matches = list(_TOKEN.finditer(sentence))
        tokens = [m.group().rstrip(".") for m in matches]
        run: list[str] = []
        for i, token in enumerate(tokens + [""]):
            # A name continues only across a single space ("Hallow Island", not "Bakery - Staff").
            joined = i > 0 and i < len(tokens) and sentence[matches[i - 1].end():matches[i].start()] == " "
            if token and token[0].isupper() and not _CODE.match(token) and (not run or joined):
                run.append(token)
                continue
            if token and token[0].isupper() and not _CODE.match(token):
                _add_run(run, initial=(i - len(run) == 0) or is_heading, common=common, add=add)
                run = [token]
                continue
            _add_run(run, initial=(i - len(run) == 0) or is_heading, common=common, add=add)
            run = []
            if _CODE.match(token) and any(ch.isdigit() for ch in token):
                add(token.upper() if len(token) <= 3 else token, CODE)
            elif token and _is_rare(token, common):
                add(token.lower(), RARE)
    return found


def _add_run(run: list[str], initial: bool, common: frozenset[str], add) -> None:  # type: ignore[no-untyped-def]
    """A run of capitalised words: a name when it has a rare word or stands mid-sentence."""
    while run and run[0].lower() in STOPWORDS:
        run = run[1:]
        initial = False
    while run and run[-1].lower() in STOPWORDS:
        run = run[:-1]
    if not run:
        return
    rare = [w for w in run if _is_rare(w, common)]
    for word in rare:
        add(word, NAME)
    if len(run) >= 2 and (rare or not initial):
        add(" ".join(run), NAME)
    elif len(run) == 1 and not rare and not initial and run[0].isalpha() and len(run[0]) > 2:
        add(run[0], CAPITALISED)


def _index_forms(terms: Iterable[str]) -> set[str]:
    out: set[str] = set()
    for term in terms:
        for word in re.split(r"[\s\-]+", term.lower()):
            if word.isalpha() and len(word) >= 4 and word not in STOPWORDS:
                out.add(stem(word))
    return out


class Vocabulary:
    """Distinctive terms of every document, ranked across the knowledge base."""

    def __init__(self) -> None:
        self._docs: dict[str, dict[str, list[float]]] = {}
        self._ranked: list[tuple[str, float]] | None = None
        self._form_refs: Counter[str] = Counter()      # index-form word -> documents using it

    def set_document(self, source: str, terms: dict[str, list[float]]) -> None:
        self.remove_document(source)
        self._docs[source] = terms
        self._form_refs.update(_index_forms(terms))
        self._ranked = None

    def remove_document(self, source: str) -> None:
        terms = self._docs.pop(source, None)
        if terms is not None:
            self._form_refs.subtract(_index_forms(terms))
            for form in [f for f, n in self._form_refs.items() if n <= 0]:
                del self._form_refs[form]
            self._ranked = None

    def rename_document(self, old: str, new: str) -> None:
        if old in self._docs:
            self._docs[new] = self._docs.pop(old)

    def ranked(self) -> list[tuple[str, float]]:
        """(term, score), most distinctive first: kind x frequency x rarity across documents.

        Case variants are one term ("Descale" and "descale"), shown in their most used form.
        """
        if self._ranked is None:
            totals: dict[str, list[float]] = {}
            forms: dict[str, dict[str, float]] = {}
            for terms in self._docs.values():
                for key in {t.lower() for t in terms}:
                    totals.setdefault(key, [0.0, 0.0, 0.0])[2] += 1
                for term, (count, kind) in terms.items():
                    entry = totals[term.lower()]
                    entry[0] += count
                    entry[1] = max(entry[1], kind)
                    variants = forms.setdefault(term.lower(), {})
                    variants[term] = variants.get(term, 0.0) + count
            n = max(1, len(self._docs))
            scored = [(max(forms[key], key=lambda f: (forms[key][f], f)),
                       kind * (1 + math.log(count)) * (1 + math.log(n / df)))
                      for key, (count, kind, df) in totals.items()]
            self._ranked = sorted(scored, key=lambda item: (-item[1], item[0].lower()))
        return self._ranked

    def terms(self) -> list[str]:
        return [t for t, _ in self.ranked()]

    def index_forms(self) -> set[str]:
        """Every single word of the terms, lower-cased and stemmed (for sound-alike matching)."""
        return set(self._form_refs)

    def known_words(self) -> set[str]:
        """Every word of every term, lower-cased, as written and stemmed ("k-420", "skerrimore")."""
        out: set[str] = set()
        for term in self._docs_terms():
            for word in re.split(r"\s+", term.lower()):
                out.update((word, stem(word), word.replace("-", "")))
        return out

    def _docs_terms(self) -> set[str]:
        return {term for terms in self._docs.values() for term in terms}

    def heard_alike(self, related: dict[str, float], limit: int, floor: float = 0.3) -> list[str]:
        """Terms whose words a transcript seems to say (``related``: index form -> match weight)."""
        scored: dict[str, float] = {}
        for term, _ in self.ranked():
            weight = max((related.get(stem(w), 0.0) for w in re.split(r"[\s\-]+", term.lower())), default=0.0)
            if weight >= floor:
                scored[term] = weight
        return sorted(scored, key=lambda t: -scored[t])[:limit]

    def hotwords(self, related: dict[str, float], sources: list[str], limit: int) -> list[str]:
        """Terms for a question: heard-alike terms first, then its documents', then the rest."""
        chosen: list[str] = []
        seen: set[str] = set()

        def take(term: str) -> None:
            key = term.lower()
            if key not in seen and len(chosen) < limit:
                seen.add(key)
                chosen.append(term)

        ranked = self.ranked()
        for term, _ in ranked:
            words = {stem(w) for w in re.split(r"[\s\-]+", term.lower())}
            if any(related.get(w, 0.0) >= 0.3 for w in words):
                take(term)
        for source in sources:
            doc = self._docs.get(source, {})
            for term in sorted(doc, key=lambda t: -doc[t][1] * (1 + math.log(doc[t][0]))):
                take(term)
        for term, _ in ranked:
            take(term)
        return chosen


def subject_of(title: str) -> str:
    """The name part of a document title: "Quillfeather Bakery - Staff Handbook" -> "Quillfeather Bakery"."""
    subject = _TITLE_TAIL.sub("", title.strip()).strip()
    words = subject.split()
    return " ".join(words[:_TITLE_WORDS]) if len(words) > 1 or (words and words[0][:1].isupper()) else ""


def speech_terms(heard: Sequence[str], titles: Sequence[str], limit: int) -> list[str]:
    """Hotwords for a second recognition pass: sound-alike terms, then document subjects.

    A term contained in another chosen one ("Skerrimore" in "Skerrimore Lighthouse") is left
    out: every extra token is one more chance for the recogniser to write what was not said.
    """
    candidates = list(dict.fromkeys([t for t in heard if t] + [s for s in map(subject_of, titles) if s]))
    lowered = [c.lower() for c in candidates]
    kept = [c for c, low in zip(candidates, lowered)
            if not any(low != other and re.search(rf"\b{re.escape(low)}\b", other) for other in lowered)]
    return kept[:limit]


_NAME_WORD = re.compile(r"[A-Z][\w'’-]*")


def names_outside(text: str, known: set[str]) -> list[str]:
    """Names the text mentions (capitalised runs not at a sentence start) of which no word is
    one of the knowledge base's ``known`` words: "How tall is Mount Everest?" -> ["Mount Everest"]."""
    names: list[str] = []
    run: list[str] = []
    words = re.findall(r"[\w'’-]+|[.!?]", text)
    for i, word in enumerate(words + ["."]):
        starts = i == 0 or words[i - 1] in ".!?"
        if _NAME_WORD.fullmatch(word) and not starts and word != "I" and not word.startswith("I'"):
            run.append(word)
            continue
        if run and not any(w.lower() in known or stem(w.lower()) in known for w in run):
            names.append(" ".join(run))
        run = []
    return [n for n in names if n.lower() not in STOPWORDS]


def unknown_words(text: str, known: set[str], common: frozenset[str]) -> list[str]:
    """Words of the text that are neither ``known`` (found in the knowledge base) nor common
    English (``common``: the embedding model's whole words), lower case or not: a recogniser
    writes a name it does not know as such a word ("Mount Everest" -> "my turver").
    Empty when there is no word list to judge by."""
    if not common:
        return []
    out = []
    for word in re.findall(r"[\w'’-]+", text):
        low = word.lower().replace("’", "'").split("'")[0]
        # A hyphenated run ("never-sermish") is how the recogniser spells what it half heard.
        if len(low) < 4 or not low.isalpha() or low in STOPWORDS or low in known:
            continue
        if _is_rare(low, common):
            out.append(low)
    return out
