"""Speakable text: markup, emoji, URLs and code removed; numbers, units and codes written out,
and checked by ear: piper speaks them and Whisper hears them back."""

from __future__ import annotations

import re

import numpy as np
import pytest

from daemon.stages.speech_numbers import cardinal, code_number, ordinal, year
from daemon.stages.speech_text import to_speakable
from tests.fixtures_audio import to_16k

CASES = [
    ("Fill the kettle with 4.5 l of water.", "Fill the kettle with four point five litres of water."),
    ("Error E7 means the filter is blocked.", "Error E seven means the filter is blocked."),
    ("The K-420 draws 1500 W.", "The K four twenty draws one thousand five hundred watts."),
    ("Built in 1887, automated in the 1990s.", "Built in eighteen eighty-seven, automated in the nineteen nineties."),
    ("Open 9:05-17:00 daily.", "Open nine oh five to seventeen o'clock daily."),
    ("Call 555-0134 after 6:45 pm. Thanks", "Call five five five, zero one three four after six forty-five p m. Thanks"),
    ("Bake at 220 °C for 25-30 min.", "Bake at two hundred twenty degrees Celsius for twenty-five to thirty minutes."),
    ("It costs $4.50, 45% more.", "It costs four dollars and fifty cents, forty-five percent more."),
    ("Use 1 l, e.g. for tea; i.e. one cup.", "Use one litre, for example for tea; that is one cup."),
    ("Ask Mr. Smith, Dr. Jones etc.", "Ask Mister Smith, Doctor Jones et cetera"),
    ("The 3rd and 21st steps, 1,200 loaves.", "The third and twenty-first steps, one thousand two hundred loaves."),
    ("Add 2 ½ cups and 3/4 tsp.", "Add two and a half cups and three quarters tsp."),
    ("Firmware v2.1 on the A4 page, -5 °C.", "Firmware version two point one on the eh four page, minus five degrees Celsius."),
    ("On 2024-05-03 at 6am.", "On May third, twenty twenty-four at six a m."),
    ("Rinse the ZK-3000 filter every 2 weeks.", "Rinse the Z K three thousand filter every two weeks."),
    ("Rest 1 h 30 min, then 4 x 4.", "Rest one hour thirty minutes, then four times four."),
    ("It raised $1.2M; revenue hit $1.04B.",
     "It raised one point two million dollars; revenue hit one point zero four billion dollars."),
    ("Born 14/03/1873, due 12/25/2024, not 1/2/2024.",   # day first unless it cannot be
     "Born the fourteenth of March, eighteen seventy-three, due December twenty-fifth, twenty twenty-four, "
     "not the first of February, twenty twenty-four."),
    ("On 05/03/2024 or 2024-03-05.", "On the fifth of March, twenty twenty-four or March fifth, twenty twenty-four."),
    ("It costs ¥100 or ₹250.50.", "It costs one hundred yen or two hundred fifty rupees and fifty paise."),
    ("I code in C# and C++ in ~/src.", "I code in C sharp and C plus plus in src."),
    ("Grow 10^6 cells at 1e-5 molar.",
     "Grow ten to the power of six cells at one times ten to the power of minus five molar."),
    ("Open Mon-Fri; closed Sun 3 May.", "Open Monday to Friday; closed Sunday the third of May."),
    ("I sat - Sun was out.", "I sat - Sun was out."),                  # words, not weekdays
    ("Open Mon–Fri 9am–5pm, Sat 9-11 am.",
     "Open Monday to Friday nine a m to five p m, Saturday nine to eleven a m."),
    ("A 120 m² flat, 2,000 sq ft, 5 m³ of soil, 3 km2.",
     "A one hundred twenty square metres flat, two thousand square feet, five cubic metres of soil, "
     "three square kilometres."),
    ("#3 on the list", "number three on the list"),                  # not a heading: no space after #
    ("Use 0.001, .5 or -.25 of it.",
     "Use zero point zero zero one, zero point five or minus zero point two five of it."),
    ("See ref #A12-B34 and part ZK-3000.", "See ref eh twelve B thirty-four and part Z K three thousand."),
    ("7 > 3, 3 < 7, x >= 2, 2 <= 5, 4 = 4, 1 != 2.",
     "seven greater than three, three less than seven, x greater than or equal to two, "
     "two less than or equal to five, four equals four, one not equal to two."),
    ("Compute x**2 + 2**10, **not** bold x^3.",
     "Compute x to the power of two plus two to the power of ten, not bold x to the power of three."),
    ("Wait 10 µs, 1 μs; cut 5 µm, weigh 3 µg, add 2 µl and 20 μL.",      # micro sign and Greek mu
     "Wait ten microseconds, one microsecond; cut five micrometres, weigh three micrograms, "
     "add two microlitres and twenty microlitres."),
]


@pytest.mark.parametrize("text,expected", CASES)
def test_numbers_units_codes_and_abbreviations(text: str, expected: str) -> None:
    assert to_speakable(text) == expected


def test_markup_emoji_urls_and_code_are_not_read() -> None:
    reply = (
        "## Kettle care 😀\n"
        "**Descale** it _monthly_, see [the manual](https://zephyr.example.com/manual) "
        "or https://example.org/x?y=1 🚀.\n"
        "- Rinse the filter\n"
        "* Dry the lid\n"
        "> Tip: use `vinegar` sparingly\n"
        "```bash\nrm -rf /tmp/x && echo done\n```\n"
        "| Part | Code |\n|---|---|\n| Lid | L2 |\n"
    )
    out = to_speakable(reply)
    for bad in ("http", "://", "*", "#", "`", "rm -rf", "|", "---", "😀", "🚀", "](", ">"):
        assert bad not in out, (bad, out)
    for kept in ("Kettle care.", "Descale it monthly", "the manual", "Rinse the filter", "Dry the lid",
                 "vinegar", "Lid", "L two"):
        assert kept in out, (kept, out)
    assert out == to_speakable(out), "cleaning twice must change nothing"


@pytest.mark.parametrize("text,expected", [
    ("- item one\n- item two\n1. first\n2. second", "item one, item two, first, second."),
    ("Steps:\n- Rinse the filter\n* Dry the lid\nThen boil.", "Steps: Rinse the filter. Dry the lid. Then boil."),
    ("- a long item\n  wrapped here\n- Next", "a long item wrapped here. Next."),
])
def test_every_list_item_ends_with_a_pause(text: str, expected: str) -> None:
    """Piper pauses at a comma or a full stop, not at a line break."""
    assert to_speakable(text) == expected


@pytest.mark.parametrize("text,expected", [
    # what SmolLM2 wrote in chat replies: acted, not read out
    ("Aw, shucks! I'm a little... (laughs)\nI've got to be careful.", "Aw, shucks! I'm a little... I've got to be careful."),
    ("*smiles* Sure thing! *winks* See you.", "Sure thing! See you."),
    ("(clears throat) Ladies and gentlemen [pause] welcome.", "Ladies and gentlemen welcome."),
    # not stage directions: emphasis inside a sentence, asides that are content
    ("He *nodded* slowly.", "He nodded slowly."),
    ("A (small) museum, the cries (of gulls).", "A, small, museum, the cries, of gulls."),
    # the prompt's style line, copied into a reply: a note about it, not part of it
    ("Call me Sotto. (Tone: polite and gentle.) Bye!", "Call me Sotto. Bye!"),
    ("I also love cooking! (Tone: happy)", "I also love cooking!"),
])
def test_stage_directions_are_not_read(text: str, expected: str) -> None:
    assert to_speakable(text) == expected


def test_no_digits_survive_in_number_heavy_text() -> None:
    text = ("Model X-12 uses 0.75 kg at 180–200 °C for 1 h 30 min; ring +44 131 496 0000, "
            "room 4B, #3, 007, 10,000,000 people, 3.14159, ratio 1:2, 24/7.")
    out = to_speakable(text)
    assert not re.search(r"\d", out), out


def test_number_words() -> None:
    assert cardinal(0) == "zero"
    assert cardinal(115) == "one hundred fifteen"
    assert cardinal(2_000_001) == "two million one"
    assert ordinal(12) == "twelfth" and ordinal(40) == "fortieth" and ordinal(101) == "one hundred first"
    assert year(1905) == "nineteen oh five" and year(2005) == "two thousand five" and year(2019) == "twenty nineteen"
    assert code_number("420") == "four twenty" and code_number("405") == "four oh five"
    assert code_number("0042") == "zero zero four two"


def _normal(text: str) -> set[str]:
    """Words of a text after writing its numbers out (Whisper writes "4.5" where piper said the words)."""
    return set(re.findall(r"[a-z]+", to_speakable(text).lower().replace("-", " ")))


@pytest.mark.parametrize(
    "text,must_hear",
    [
        ("Fill the kettle with 4.5 l of water.", "four point five"),
        ("Error code E7 means the filter is blocked.", "e seven"),
        ("The lighthouse was built in 1887.", "eighteen eighty seven"),
        ("It costs $4.50, about 45% more.", "four dollars fifty forty five percent"),
        ("Call 555-0134 tonight.", "five zero one three four"),
        ("Use the A4 paper.", "eh four"),
    ],
)
def test_piper_says_them_so_whisper_hears_them(piper_tts, transcriber, text: str, must_hear: str) -> None:
    """Round trip: speakable text -> piper -> Whisper; the key words come back."""
    audio = np.concatenate(list(piper_tts.synthesize(to_speakable(text))))
    heard, _ = transcriber.transcribe(to_16k(audio, piper_tts.sample_rate))
    missing = set(must_hear.split()) - _normal(heard)
    assert not missing, (text, heard, missing)
