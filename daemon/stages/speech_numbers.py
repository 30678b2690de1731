"""Number words in English: cardinals, ordinals, decimals, years, digit strings and codes."""

from __future__ import annotations

_ONES = ("zero one two three four five six seven eight nine ten eleven twelve thirteen "
         "fourteen fifteen sixteen seventeen eighteen nineteen").split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
_SCALES = ((10**12, "trillion"), (10**9, "billion"), (10**6, "million"), (1000, "thousand"))
_ORDINAL_WORDS = {
    "one": "first", "two": "second", "three": "third", "five": "fifth", "eight": "eighth",
    "nine": "ninth", "twelve": "twelfth",
}


def _below_hundred(n: int) -> str:
    if n < 20:
        return _ONES[n]
    tens, ones = divmod(n, 10)
    return _TENS[tens] + (f"-{_ONES[ones]}" if ones else "")


def _below_thousand(n: int) -> str:
    hundreds, rest = divmod(n, 100)
    parts = [f"{_ONES[hundreds]} hundred"] if hundreds else []
    if rest or not parts:
        parts.append(_below_hundred(rest))
    return " ".join(parts)


def cardinal(n: int) -> str:
    """1234 -> "one thousand two hundred thirty-four"; negatives get "minus"."""
    if n < 0:
        return "minus " + cardinal(-n)
    if n < 1000:
        return _below_thousand(n)
    if n >= 10**15:
        return digits(str(n))
    parts: list[str] = []
    for scale, name in _SCALES:
        count, n = divmod(n, scale)
        if count:
            parts.append(f"{_below_thousand(count)} {name}")
    if n:
        parts.append(_below_thousand(n))
    return " ".join(parts)


def ordinal(n: int) -> str:
    """21 -> "twenty-first"."""
    words = cardinal(n)
    head, sep, last = words.rpartition("-") if "-" in words.split(" ")[-1] else words.rpartition(" ")
    if last in _ORDINAL_WORDS:
        last = _ORDINAL_WORDS[last]
    elif last.endswith("y"):
        last = last[:-1] + "ieth"
    else:
        last += "th"
    return f"{head}{sep}{last}"


def digits(text: str) -> str:
    """"0042" -> "zero zero four two" (every digit on its own)."""
    return " ".join(_ONES[int(ch)] for ch in text if ch.isdigit())


def decimal(token: str) -> str:
    """"4.5" -> "four point five"; "0.75" -> "zero point seven five"."""
    whole, _, frac = token.partition(".")
    head = cardinal(int(whole)) if whole else "zero"
    return f"{head} point {digits(frac)}" if frac else head


def year(n: int) -> str:
    """1887 -> "eighteen eighty-seven", 2005 -> "two thousand five", 1900 -> "nineteen hundred"."""
    if not 1000 <= n <= 9999 or 2000 <= n < 2010:
        return cardinal(n)
    high, low = divmod(n, 100)
    if low == 0:
        return f"{_below_hundred(high)} hundred"
    if low < 10:
        return f"{_below_hundred(high)} oh {_ONES[low]}"
    return f"{_below_hundred(high)} {_below_hundred(low)}"


def decade(n: int) -> str:
    """1990 -> "nineteen nineties"."""
    words = year(n)
    return words[:-1] + "ies" if words.endswith("y") else words + "s"


def code_number(text: str) -> str:
    """The number part of a product code, read the way people say model numbers.

    "7" -> "seven", "42" -> "forty-two", "420" -> "four twenty", "405" -> "four oh five",
    "3000" -> "three thousand", "1234" -> "twelve thirty-four"; leading zeros and long runs
    are read digit by digit.
    """
    n = int(text)
    if text.startswith("0") and len(text) > 1 or len(text) > 4:
        return digits(text)
    if len(text) <= 2 or n % 100 == 0 and len(text) == 3 or n % 1000 == 0:
        return cardinal(n)
    if len(text) == 3:
        head, rest = divmod(n, 100)
        tail = f"oh {_ONES[rest]}" if rest < 10 else _below_hundred(rest)
        return f"{_ONES[head]} {tail}"
    high, low = divmod(n, 100)
    if low == 0:
        return f"{_below_hundred(high)} hundred"
    tail = f"oh {_ONES[low]}" if low < 10 else _below_hundred(low)
    return f"{_below_hundred(high)} {tail}"
