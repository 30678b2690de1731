"""Text the TTS can read aloud: markup, emoji, URLs, code and stage directions removed
(markup in :mod:`speech_markup`); numbers written out.

A voice reads "4.5 l" as "four dot five l" and "K-420" as "K minus four hundred twenty";
listeners need "four point five litres" and "K four twenty". :func:`to_speakable` rewrites
a clause of the reply into plain words. Number words live in :mod:`speech_numbers`.
"""

from __future__ import annotations

import re
import unicodedata

from daemon.stages.speech_markup import strip_markup
from daemon.stages.speech_numbers import (
    cardinal,
    code_number,
    decade,
    decimal,
    digits,
    ordinal,
    year,
)

# ------------------------------------------------------------ emoji, symbols
_SYMBOL_WORDS = {
    "&": " and ", "+": " plus ", "=": " equals ", "@": " at ", "×": " times ",
    "→": " to ", "←": " from ", "≈": " about ", "~": " about ", "≤": " at most ",
    "≥": " at least ", "½": " one half ", "¼": " one quarter ", "¾": " three quarters ",
    "—": ", ", "–": ", ", "…": "...", "•": ", ", "/": " ",
}
_DROP = set("*_#^\\|{}[]<>`\"“”")
# "7 > 3", "x >= 2": read before the numbers are; "<" and ">" alone are dropped (tags, arrows).
_COMPARISON = re.compile(r"(?:(?<=\d)\s*|(?<=[\w)])\s+)(>=|<=|!=|>|<)\s*(?=-?\.?\d|[A-Za-z](?!\w))")
_COMPARISON_WORDS = {">": "greater than", "<": "less than", ">=": "greater than or equal to",
                     "<=": "less than or equal to", "!=": "not equal to"}


def _clean_symbols(text: str) -> str:
    out: list[str] = []
    for ch in text:
        if ch in _SYMBOL_WORDS:
            out.append(_SYMBOL_WORDS[ch])
        elif ch in _DROP:
            out.append(" ")
        elif ch in "()":
            out.append(", ")
        elif unicodedata.category(ch) in ("So", "Sk", "Cs", "Co", "Cn", "Mn", "Cf") and ch not in "'":
            out.append(" ")                            # emoji, modifiers, joiners
        else:
            out.append(ch)
    return "".join(out)


# ------------------------------------------------------------- abbreviations
_ABBREVIATIONS = [
    (r"\be\.\s?g\.(?=\W|$)", "for example"), (r"\bi\.\s?e\.(?=\W|$)", "that is"),
    (r"\betc\.", "et cetera"), (r"\bvs\.?(?=\s)", "versus"), (r"\bapprox\.", "approximately"),
    (r"\bca\.(?=\s?\d)", "about"), (r"\bincl\.", "including"), (r"\bMr\.", "Mister"),
    (r"\bMrs\.", "Missus"), (r"\bMs\.", "Miz"), (r"\bDr\.(?=\s[A-Z])", "Doctor"),
    (r"\bSt\.(?=\s[A-Z])", "Saint"), (r"\bNo\.\s?(?=\d)", "number "), (r"\bw/o\b", "without"),
    (r"\bw/(?=\s)", "with"), (r"(?<!\d)(?<!\d\s)\bmax\.", "maximum"),
    (r"(?<!\d)(?<!\d\s)\bmin\.(?!\s?\d)", "minimum"),
    (r"\bDIY\b", "D I Y"), (r"\bFAQ\b", "F A Q"), (r"\bASAP\b", "as soon as possible"),
]
_ABBREVIATIONS_RE = [(re.compile(p), r) for p, r in _ABBREVIATIONS]

# --------------------------------------------------------------- units
# token -> (singular, plural). Matched right after a number.
_UNITS: dict[str, tuple[str, str]] = {
    "l": ("litre", "litres"), "L": ("litre", "litres"), "ml": ("millilitre", "millilitres"),
    "mL": ("millilitre", "millilitres"), "cl": ("centilitre", "centilitres"),
    "kg": ("kilogram", "kilograms"), "g": ("gram", "grams"), "mg": ("milligram", "milligrams"),
    "km": ("kilometre", "kilometres"), "m": ("metre", "metres"), "cm": ("centimetre", "centimetres"),
    "mm": ("millimetre", "millimetres"), "W": ("watt", "watts"), "kW": ("kilowatt", "kilowatts"),
    "kWh": ("kilowatt hour", "kilowatt hours"), "V": ("volt", "volts"), "mA": ("milliamp", "milliamps"),
    "Hz": ("hertz", "hertz"), "kHz": ("kilohertz", "kilohertz"), "MHz": ("megahertz", "megahertz"),
    "h": ("hour", "hours"), "hr": ("hour", "hours"), "hrs": ("hours", "hours"),
    "min": ("minute", "minutes"), "mins": ("minutes", "minutes"), "s": ("second", "seconds"),
    "sec": ("second", "seconds"), "secs": ("seconds", "seconds"), "ms": ("millisecond", "milliseconds"),
    "KB": ("kilobyte", "kilobytes"), "MB": ("megabyte", "megabytes"), "GB": ("gigabyte", "gigabytes"),
    "TB": ("terabyte", "terabytes"), "mph": ("mile per hour", "miles per hour"),
    "km/h": ("kilometre per hour", "kilometres per hour"), "ft": ("foot", "feet"),
    "lb": ("pound", "pounds"), "lbs": ("pounds", "pounds"), "oz": ("ounce", "ounces"),
    "°C": ("degree Celsius", "degrees Celsius"), "°F": ("degree Fahrenheit", "degrees Fahrenheit"),
    "°": ("degree", "degrees"), "dB": ("decibel", "decibels"), "x": ("times", "times"),
    "k": ("thousand", "thousand"), "K": ("thousand", "thousand"), "M": ("million", "million"),
    "bn": ("billion", "billion"), "%": ("percent", "percent"),
    # "m²" is "m2" once NFKC-normalised
    "m2": ("square metre", "square metres"), "km2": ("square kilometre", "square kilometres"),
    "cm2": ("square centimetre", "square centimetres"), "mm2": ("square millimetre", "square millimetres"),
    "sq m": ("square metre", "square metres"), "sqm": ("square metre", "square metres"),
    "ft2": ("square foot", "square feet"), "sq ft": ("square foot", "square feet"),
    "m3": ("cubic metre", "cubic metres"), "cm3": ("cubic centimetre", "cubic centimetres"),
    # the micro sign (U+00B5) is the Greek mu (U+03BC) once NFKC-normalised
    "μs": ("microsecond", "microseconds"), "μm": ("micrometre", "micrometres"),
    "μg": ("microgram", "micrograms"), "μl": ("microlitre", "microlitres"), "μL": ("microlitre", "microlitres"),
}
_UNIT_ALT = "|".join(re.escape(u) for u in sorted(_UNITS, key=len, reverse=True))
_NUM = r"\d+(?:,\d{3})*(?:\.\d+)?"
_SIGNED = rf"(?:(?<![\w.])-)?{_NUM}"
_QUANTITY = re.compile(
    rf"(?<![\w.])(?P<a>{_SIGNED})(?:\s?(?:-|–|—|to)\s?(?P<b>{_SIGNED}))?"
    rf"\s?(?P<unit>{_UNIT_ALT})(?![\w])"
)
_CURRENCY = re.compile(r"(?P<sym>[$€£¥₹])\s?(?P<whole>\d+(?:,\d{3})*)(?:\.(?P<cents>\d{2}))?(?!\d|\.\d)")
_CURRENCY_NAMES = {"$": ("dollar", "dollars", "cent", "cents"), "€": ("euro", "euros", "cent", "cents"),
                   "£": ("pound", "pounds", "penny", "pence"), "¥": ("yen", "yen", "sen", "sen"),
                   "₹": ("rupee", "rupees", "paisa", "paise")}
# "$1.2M" is "one point two million dollars", not "one dollar.2M".
_SCALES = {"k": "thousand", "K": "thousand", "thousand": "thousand", "M": "million", "m": "million",
           "mn": "million", "million": "million", "B": "billion", "bn": "billion", "billion": "billion",
           "T": "trillion", "tn": "trillion", "trillion": "trillion"}
_SCALED_CURRENCY = re.compile(
    rf"(?P<sym>[$€£¥₹])\s?(?P<num>\d+(?:,\d{{3}})*(?:\.\d+)?)\s?"
    rf"(?P<scale>{'|'.join(sorted(_SCALES, key=len, reverse=True))})(?![\w])|"
    r"(?P<sym2>[$€£¥₹])\s?(?P<num2>\d+(?:,\d{3})*\.(?:\d|\d{3,}))(?!\d)")      # $1.2, $0.125
_EMOTICON = re.compile(r"(?<!\w)[:;=]-?[()DPp|/\\](?!\w)")
_ISO_DATE = re.compile(r"\b(\d{4})-(\d{2})-(\d{2})\b")
_MONTHS = ("January February March April May June July August September October November "
           "December").split()
# Short month names read as the month only next to a day number ("1 Jan", "Jan 1").
_MONTH_ABBR = {m[:3]: m for m in _MONTHS if m != "May"} | {"Sept": "September"}
_MONTH_NAMES = "|".join(_MONTHS) + "|" + "|".join(rf"{a}\.?" for a in sorted(_MONTH_ABBR, key=len, reverse=True))
_WEEKDAYS = {"Mon": "Monday", "Tue": "Tuesday", "Tues": "Tuesday", "Wed": "Wednesday", "Thu": "Thursday",
             "Thur": "Thursday", "Thurs": "Thursday", "Fri": "Friday", "Sat": "Saturday", "Sun": "Sunday"}
_WEEKDAY_ALT = "|".join(sorted(_WEEKDAYS, key=len, reverse=True))
# "Sun", "Sat" and "Wed" are words too: a short weekday is read out only before a date or in
# a range of weekdays ("Mon 1 Jan", "Mon-Fri", "Tue to Sat").
_WEEKDAY = re.compile(rf"\b(?P<day>{_WEEKDAY_ALT})\.?(?=,?\s(?:[0-3]?\d\b|{_MONTH_NAMES}))")
_WEEKDAY_RANGE = re.compile(rf"\b(?P<a>{_WEEKDAY_ALT})\.?\s?(?:-|–|\sto\s)\s?(?P<b>{_WEEKDAY_ALT})\b")
# "14/03/1873", "12/25/2024", "05/03/2024" (day first when both could be the month).
_NUMERIC_DATE = re.compile(r"(?<![\d/.])(\d{1,2})/(\d{1,2})/(\d{4})(?![\d/])")
_SCIENTIFIC = re.compile(r"(?<![\w.])(\d+(?:\.\d+)?)[eE]([+-]?\d{1,3})(?![\w.])")
_POWER = re.compile(r"(?<![\w.])(\d+(?:\.\d+)?|[A-Za-z])\s?\^\s?(-?\d{1,3})(?!\w|\.\d)")
_STAR_POWER = re.compile(r"(?<=[\w)])\*\*(?=-?\d)")            # "x**2" is x^2, not bold
_MUSIC_SHARP = re.compile(r"\b([A-G])#(?![\w#])")
# "14 March 1873" is read "fourteen March"; listeners expect "the fourteenth of March".
_DAY_MONTH = re.compile(rf"\b(?P<day>[0-3]?\d)(?:st|nd|rd|th)?\s(?P<month>{_MONTH_NAMES})\b(?:,?\s(?P<year>\d{{4}})\b)?")
_MONTH_DAY = re.compile(rf"\b(?P<month>{_MONTH_NAMES})\s(?P<day>[0-3]?\d)(?:st|nd|rd|th)?\b(?!:)(?:,?\s(?P<year>\d{{4}})\b)?")
_PHONE = re.compile(
    r"(?<![\w.-])(?:\+\d{1,3}[\s.-]?)?(?:\(\d{2,5}\)[\s.-]?)?\d{2,5}(?:[\s.-]\d{2,5}){1,4}(?![\w.-]*\d)"
)
_AMPM = r"(?:\s?([ap])\.?m(\.?)(?!\w))"
_TIME = re.compile(rf"(?<![\d:.])(\d{{1,2}}):(\d{{2}})(?![\d:]){_AMPM}?", re.IGNORECASE)
_COMPACT_TIME = re.compile(rf"(?<![\d:.])(\d{{1,2}})[.]?(\d{{2}}){_AMPM}", re.IGNORECASE)  # 645 PM, 6.45am
_TIME_RANGE = re.compile(r"(?<=\d:\d\d)\s?[-–]\s?(?=\d{1,2}:\d\d)")
# "7am-9pm", "9-11 am", "9:30am – 5pm": a range of hours is read "to", not "minus" or a pause.
_HOUR_RANGE = re.compile(r"(?<![\d:.])(\d{1,2}(?::\d\d)?(?:\s?[ap]\.?m\.?)?)\s?[-–—]\s?"
                         r"(?=\d{1,2}(?::\d\d)?\s?[ap]\.?m(?!\w))", re.IGNORECASE)
_HOUR_AMPM = re.compile(rf"(?<![\d:.])(\d{{1,2}}){_AMPM}", re.IGNORECASE)
# "A12-B34": a code after a code's number and a hyphen is the next part of one reference.
_CODE = re.compile(r"(?:(?<![\w-])|(?<=\d)-)(?P<letters>[A-Z]{1,4})-?(?P<num>\d{1,6})(?P<suffix>[A-Z]{0,2})(?![\w])")
_DIGIT_CODE = re.compile(r"(?<![\w.])(?P<num>\d{1,4})(?P<letters>[A-Z]{1,2})(?![\w])")
_ORDINAL = re.compile(r"\b(\d+)(st|nd|rd|th)\b", re.IGNORECASE)
_DECADE = re.compile(r"\b(1[1-9]|20)(\d)0s\b")
_VERSION = re.compile(r"(?<![\w.])(v(?=\d)|version\s)?(\d+(?:\.\d+){2,}|(?<=v)\d+(?:\.\d+)*)(?![\w.]*\d)")
_FRACTION = re.compile(r"(?<![\w/.])(\d{1,3})/(\d{1,3})(?![\w/])")
_MIXED = re.compile(r"(?<![\w/.])(\d{1,3})\s(\d)/(\d)(?![\w/])")
_RATIO = re.compile(r"(?<![\w:.])(\d{1,3}):(\d{1,3})(?![\w:])")
_FRACTIONS = {(1, 2): "one half", (1, 3): "one third", (2, 3): "two thirds", (1, 4): "one quarter",
              (3, 4): "three quarters"}
_RANGE = re.compile(rf"(?<![\w.])(?P<a>{_NUM})\s?(?:-|–|—)\s?(?P<b>{_NUM})(?![\w.]*\d)")
_NUMBER = re.compile(rf"(?<![\w.]){_SIGNED}(?![\w])")


def _number(token: str, *, allow_year: bool = True) -> str:
    """Words for a bare number token ("4.5", "1,200", "-3", "1887", "007")."""
    negative, grouped = token.startswith("-"), "," in token
    token = token.lstrip("-").replace(",", "")
    if "." in token:
        words = decimal(token)
    elif len(token) > 1 and token.startswith("0"):
        words = digits(token)                           # codes and PINs keep their zeros
    elif allow_year and not grouped and len(token) == 4 and 1100 <= int(token) <= 2099:
        words = year(int(token))
    else:
        words = cardinal(int(token))
    return f"minus {words}" if negative else words


def _is_one(token: str) -> bool:
    return token.lstrip("-").replace(",", "") in ("1", "1.0")


def _quantity(m: re.Match[str]) -> str:
    a, b, unit = m.group("a"), m.group("b"), m.group("unit")
    singular, plural = _UNITS[unit]
    # Scale words ("5k", "2x") read after the number; all others are unit nouns.
    first = _number(a, allow_year=False)
    if b is not None:
        return f"{first} to {_number(b, allow_year=False)} {plural}"
    return f"{first} {singular if _is_one(a) else plural}"


def _currency(m: re.Match[str]) -> str:
    one, many, cent, cents = _CURRENCY_NAMES[m.group("sym")]
    whole = int(m.group("whole").replace(",", ""))
    part = int(m.group("cents") or 0)
    words = f"{cardinal(whole)} {one if whole == 1 else many}" if whole or not part else ""
    if part:
        tail = f"{cardinal(part)} {cent if part == 1 else cents}"
        words = f"{words} and {tail}" if words else tail
    return words


def _iso_date(m: re.Match[str]) -> str:
    y, mo, d = (int(g) for g in m.groups())
    if not (1 <= mo <= 12 and 1 <= d <= 31):
        return m.group(0)
    return f"{_MONTHS[mo - 1]} {ordinal(d)}, {year(y)}"


def _day_month(m: re.Match[str], day_first: bool) -> str:
    day = int(m.group("day"))
    if not 1 <= day <= 31 or (not day_first and m.group("month") == "May" and not m.group("year")):
        return m.group(0)             # "May 5 people come?" is not a date
    month = m.group("month").rstrip(".")
    month = _MONTH_ABBR.get(month, month)
    words = f"the {ordinal(day)} of {month}" if day_first else f"{month} {ordinal(day)}"
    return words + (f", {year(int(m.group('year')))}" if m.group("year") else "")


def _numeric_date(m: re.Match[str]) -> str:
    """Day first, as "14 March" is written in the notes and read here, unless the second
    number cannot be a month (12/25/2024): 05/03/2024 is the fifth of March."""
    a, b, y = (int(g) for g in m.groups())
    if 12 < b <= 31 and 1 <= a <= 12:
        return f"{_MONTHS[a - 1]} {ordinal(b)}, {year(y)}"
    if 1 <= a <= 31 and 1 <= b <= 12:
        return f"the {ordinal(a)} of {_MONTHS[b - 1]}, {year(y)}"
    return m.group(0)




def _scaled_currency(m: re.Match[str]) -> str:
    number = (m.group("num") or m.group("num2")).replace(",", "")
    words = decimal(number) if "." in number else cardinal(int(number))
    scale = f" {_SCALES[m.group('scale')]}" if m.group("scale") else ""
    return f"{words}{scale} {_CURRENCY_NAMES[m.group('sym') or m.group('sym2')][1]}"


def _power(m: re.Match[str], scientific: bool) -> str:
    base, exponent = m.group(1), m.group(2).lstrip("+")
    power = ("minus " if exponent.startswith("-") else "") + cardinal(int(exponent.lstrip("-")))
    words = base if base.isalpha() else _number(base, allow_year=False)
    if scientific:
        return f"{words} times ten to the power of {power}"
    return f"{words} to the power of {power}"


def _phone(m: re.Match[str]) -> str:
    raw = m.group(0)
    count = sum(ch.isdigit() for ch in raw)
    groups = re.findall(r"\d+", raw)
    marked = raw.startswith(("+", "(")) or len(groups) >= 3
    local = [len(g) for g in groups] == [3, 4]          # 555-0134
    if count < 7 or not (marked or local):
        return raw
    spoken = ", ".join(digits(g) for g in groups)
    return ("plus " + spoken) if raw.startswith("+") else spoken


def _time(m: re.Match[str]) -> str:
    hour, minute = int(m.group(1)), int(m.group(2))
    if hour > 24 or minute > 59:
        return m.group(0)
    if minute == 0:
        words = f"{cardinal(hour)} o'clock" if not m.group(3) else cardinal(hour)
    elif minute < 10:
        words = f"{cardinal(hour)} oh {cardinal(minute)}"
    else:
        words = f"{cardinal(hour)} {cardinal(minute)}"
    return words + _ampm(m, 3)


def _ampm(m: re.Match[str], group: int) -> str:
    """" p m", keeping a sentence-ending period that "p.m." swallowed."""
    if not m.group(group):
        return ""
    end = m.end()
    period = m.group(group + 1) and (end >= len(m.string) or m.string[end:end + 2].strip()[:1].isupper())
    return f" {m.group(group).lower()} m" + ("." if period else "")


def _spell(letters: str) -> str:
    # A lone "A" is read as the article (a schwa); "eh" is what the phonemizer says as the letter.
    return " ".join("eh" if ch == "A" else ch for ch in letters)


def _code(m: re.Match[str]) -> str:
    letters = _spell(m.group("letters"))
    suffix = _spell(m.group("suffix"))
    joined = " " if m.group(0).startswith("-") else ""
    return joined + " ".join(p for p in (letters, code_number(m.group("num")), suffix) if p)


def _version(m: re.Match[str]) -> str:
    words = " point ".join(_number(part, allow_year=False) for part in m.group(2).split("."))
    return f"version {words}" if m.group(1) else words


def _mixed_fraction(m: re.Match[str]) -> str:
    words = _FRACTIONS.get((int(m.group(2)), int(m.group(3))))
    if words is None:
        return m.group(0)
    return f"{cardinal(int(m.group(1)))} and {words.replace('one ', 'a ', 1)}"


def _fraction(m: re.Match[str]) -> str:
    a, b = int(m.group(1)), int(m.group(2))
    if (a, b) in _FRACTIONS:
        return _FRACTIONS[(a, b)]
    if 0 < a < b <= 16:
        name = ordinal(b)
        return f"{cardinal(a)} {name}{'s' if a > 1 else ''}"
    return f"{cardinal(a)} {cardinal(b)}"                 # "24/7"


def _numbers(text: str) -> str:
    text = re.sub(r"(?<![\w.])\.(?=\d)", "0.", text)                # ".5" is 0.5
    text = _COMPARISON.sub(lambda m: f" {_COMPARISON_WORDS[m.group(1)]} ", text)
    text = _ISO_DATE.sub(_iso_date, text)
    text = _NUMERIC_DATE.sub(_numeric_date, text)
    text = _WEEKDAY_RANGE.sub(lambda m: f"{_WEEKDAYS[m.group('a')]} to {_WEEKDAYS[m.group('b')]}", text)
    text = _WEEKDAY.sub(lambda m: _WEEKDAYS[m.group("day")], text)
    text = _DAY_MONTH.sub(lambda m: _day_month(m, True), text)
    text = _MONTH_DAY.sub(lambda m: _day_month(m, False), text)
    text = _SCALED_CURRENCY.sub(_scaled_currency, text)
    text = _CURRENCY.sub(_currency, text)
    text = _SCIENTIFIC.sub(lambda m: _power(m, True), text)
    text = _POWER.sub(lambda m: _power(m, False), text)
    text = _HOUR_RANGE.sub(r"\1 to ", text)
    text = _TIME_RANGE.sub(" to ", text)
    text = _TIME.sub(_time, text)
    text = _COMPACT_TIME.sub(_time, text)
    text = _HOUR_AMPM.sub(lambda m: cardinal(int(m.group(1))) + _ampm(m, 2), text)
    text = _PHONE.sub(_phone, text)
    text = _DECADE.sub(lambda m: decade(int(m.group(1) + m.group(2) + "0")), text)
    text = _VERSION.sub(_version, text)
    text = _QUANTITY.sub(_quantity, text)
    text = _CODE.sub(_code, text)
    text = _DIGIT_CODE.sub(lambda m: f"{code_number(m.group('num'))} {_spell(m.group('letters'))}", text)
    text = _ORDINAL.sub(lambda m: ordinal(int(m.group(1))), text)
    text = _MIXED.sub(_mixed_fraction, text)
    text = _FRACTION.sub(_fraction, text)
    text = _RATIO.sub(lambda m: f"{_number(m.group(1))} to {_number(m.group(2))}", text)
    text = _RANGE.sub(lambda m: f"{_number(m.group('a'))} to {_number(m.group('b'))}", text)
    text = re.sub(r"#\s?(?=\d)", "number ", text)
    return _NUMBER.sub(lambda m: _number(m.group(0)), text)


# ------------------------------------------------------------------ public
def has_words(speakable: str) -> bool:
    """False when nothing of ``to_speakable``'s result would be read aloud: the text was only
    emoji, punctuation or a code block."""
    return any(ch.isalnum() for ch in speakable)


def to_speakable(text: str) -> str:
    """Plain words a TTS voice reads right: no markup, emoji, URLs or code; numbers spelled out."""
    text = unicodedata.normalize("NFKC", text).replace("\u2044", "/")   # ½ -> 1⁄2 -> 1/2
    text = _STAR_POWER.sub("^", text)
    text = strip_markup(text)
    text = re.sub(r"(?<=[A-Za-z])–(?=[A-Za-z])", " to ", text)   # Mon–Fri
    text = _EMOTICON.sub(" ", text)
    for pattern, words in _ABBREVIATIONS_RE:
        text = pattern.sub(words, text)
    text = _MUSIC_SHARP.sub(r"\1 sharp", text)                  # C#, F#
    text = re.sub(r"~(?!\s?\d)", " ", text)                        # "~5" is "about five"; "~/x" is not
    text = _numbers(text)
    text = _clean_symbols(text)
    return _tidy(text)


def _tidy(text: str) -> str:
    text = re.sub(r"\s+", " ", text)
    text = re.sub(r"\s+([,.;:!?])", r"\1", text)
    text = re.sub(r"([,;:])(?:\s*[,;:])+", r"\1", text)     # ", ," left by removed items
    text = re.sub(r"([.!?])(?:\s*[,;:])+", r"\1", text)
    text = re.sub(r"^[\s,;:.]+", "", text)
    text = re.sub(r",(?=[.!?])", "", text)
    return re.sub(r"[\s,;:]+$", "", text)
