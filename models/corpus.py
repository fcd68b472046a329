"""The training data of the shipped models, generated in code from a fixed seed.

No outside data: every example is drawn from the small word lists below, so the whole corpus
(and the tokenizer's vocabulary) is reproducible from this file alone.

tiny-llama reads short stories that end with a question; the answer copies words from earlier
in the story, so the heads that find and copy those words light up in the heatmaps:

    tom has red balls . ann wants blue hats . what does ann want ?  ->  ann wants blue hats .
    mia sees three cats . leo likes five dogs . how many dogs does leo like ?  ->  leo likes five dogs .
    say : green kites sat on the boxes . say again :  ->  green kites sat on the boxes .

tiny-bart rewrites a spoken English date as year, month, day, so its cross-attention jumps
from the end of the source (the year) to the start (the month) and back to the middle (the day):

    march twenty first twenty twenty four          ->  2024 03 21
    the fifth of june nineteen ninety nine         ->  1999 06 05

Each example is an `Example(prompt, answer)`. The prompt is what a user types; the answer is
what the data determines, and it is where the evaluation measures accuracy.
"""

from __future__ import annotations

import datetime
import random
from typing import NamedTuple

LLAMA_SEED = 20240315
BART_SEED = 20240316
# Held-out examples come from another seed and are checked against the training set.
HELD_OUT_SEED_OFFSET = 1_000_003


class Example(NamedTuple):
    prompt: str  # what a user types
    answer: str  # what the data determines: the model should continue with exactly this


# --- tiny-llama: stories whose answers copy earlier words ------------------------------------

NAMES = [
    "tom",
    "ann",
    "sam",
    "mia",
    "leo",
    "zoe",
    "max",
    "eva",
    "ben",
    "lily",
    "jack",
    "emma",
    "kate",
    "paul",
    "rosa",
    "omar",
]
COLORS = ["red", "blue", "green", "black", "white", "yellow", "brown", "pink"]
OBJECTS = [
    "balls",
    "hats",
    "boxes",
    "books",
    "cups",
    "kites",
    "drums",
    "bells",
    "coats",
    "shoes",
    "keys",
    "lamps",
]
ANIMALS = [
    "cats",
    "dogs",
    "birds",
    "fish",
    "cows",
    "horses",
    "mice",
    "foxes",
    "owls",
    "bees",
    "ducks",
    "frogs",
]
COUNTS = ["two", "three", "four", "five", "six", "seven", "eight", "nine"]
# (fact verb, question verb): each fact of a story has its own verb.
VERBS = [("has", "have"), ("wants", "want"), ("sees", "see"), ("likes", "like"), ("finds", "find")]
# Words for the "say ... say again" repetitions: any content word, in any order.
FREE_WORDS = sorted(set(NAMES + COLORS + OBJECTS + ANIMALS + COUNTS + ["sat", "ran", "ate", "the", "a"]))
# The glue words of the templates.
LLAMA_GLUE = ["what", "does", "how", "many", "?", ".", ":", "say", "again"]


def llama_words() -> list[str]:
    """Every word the tiny-llama corpus can produce: the tokenizer's vocabulary."""
    words = LLAMA_GLUE + NAMES + COLORS + OBJECTS + ANIMALS + COUNTS + [w for pair in VERBS for w in pair]
    return list(dict.fromkeys(words + FREE_WORDS))  # keep order, drop repeats


# Within a story the names, verbs and colours (or counts) all differ, so after the first word
# of the answer (the name asked about) every next word follows one unique earlier word:
# "ann" -> "wants" -> "blue" -> "hats". Copying it is the job of an induction head, and the
# attention heatmap shows that head looking at exactly that earlier word.


def _story_has(rng: random.Random) -> Example:
    k = rng.randint(2, 4)
    facts = list(
        zip(
            rng.sample(NAMES, k),
            rng.sample(VERBS, k),
            rng.sample(COLORS, k),
            rng.choices(OBJECTS, k=k),
            strict=True,
        )
    )
    name, (verb, ask), color, obj = rng.choice(facts)
    story = " ".join(f"{n} {v} {c} {o} ." for n, (v, _), c, o in facts)
    return Example(f"{story} what does {name} {ask} ?", f"{name} {verb} {color} {obj} .")


def _story_count(rng: random.Random) -> Example:
    k = rng.randint(2, 4)
    facts = list(
        zip(
            rng.sample(NAMES, k),
            rng.sample(VERBS, k),
            rng.sample(COUNTS, k),
            rng.choices(ANIMALS, k=k),
            strict=True,
        )
    )
    name, (verb, ask), count, animal = rng.choice(facts)
    story = " ".join(f"{n} {v} {c} {a} ." for n, (v, _), c, a in facts)
    return Example(f"{story} how many {animal} does {name} {ask} ?", f"{name} {verb} {count} {animal} .")


def _story_repeat(rng: random.Random) -> Example:
    words = " ".join(rng.choice(FREE_WORDS) for _ in range(rng.randint(3, 8)))
    return Example(f"say : {words} . say again :", f"{words} .")


LLAMA_TASKS = (_story_has, _story_count, _story_repeat)


def llama_examples(n: int, seed: int = LLAMA_SEED) -> list[Example]:
    """`n` stories, the three kinds in turn, drawn from `seed`."""
    rng = random.Random(seed)
    return [LLAMA_TASKS[i % len(LLAMA_TASKS)](rng) for i in range(n)]


# --- tiny-bart: spoken dates -> "yyyy mm dd" ---------------------------------------------------

MONTHS = [
    "january",
    "february",
    "march",
    "april",
    "may",
    "june",
    "july",
    "august",
    "september",
    "october",
    "november",
    "december",
]
ONES = ["one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
TEENS = [
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
]
TENS = {2: "twenty", 3: "thirty", 4: "forty", 5: "fifty", 6: "sixty", 7: "seventy", 8: "eighty", 9: "ninety"}
ORDINAL_ONES = ["first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth", "ninth"]
ORDINAL_TEENS = [
    "tenth",
    "eleventh",
    "twelfth",
    "thirteenth",
    "fourteenth",
    "fifteenth",
    "sixteenth",
    "seventeenth",
    "eighteenth",
    "nineteenth",
]
FIRST_YEAR, LAST_YEAR = 1950, 2039
BART_GLUE = ["the", "of", "thousand", "twentieth", "thirtieth"]


def number_words(n: int) -> str:
    """1..99 in words: 7 -> "seven", 42 -> "forty two"."""
    if n < 10:
        return ONES[n - 1]
    if n < 20:
        return TEENS[n - 10]
    tens, ones = divmod(n, 10)
    return TENS[tens] + ("" if ones == 0 else " " + ONES[ones - 1])


def ordinal_words(n: int) -> str:
    """1..31 as an ordinal: 1 -> "first", 22 -> "twenty second", 30 -> "thirtieth"."""
    if n < 10:
        return ORDINAL_ONES[n - 1]
    if n < 20:
        return ORDINAL_TEENS[n - 10]
    tens, ones = divmod(n, 10)
    if ones == 0:
        return {2: "twentieth", 3: "thirtieth"}[tens]
    return TENS[tens] + " " + ORDINAL_ONES[ones - 1]


def year_words(year: int) -> str:
    """A year as said aloud: 1999 "nineteen ninety nine", 2005 "two thousand five",
    2024 "twenty twenty four"."""
    century, rest = divmod(year, 100)
    if century == 20 and rest < 10:
        return "two thousand" + ("" if rest == 0 else " " + ONES[rest - 1])
    if not FIRST_YEAR <= year <= LAST_YEAR:
        raise ValueError(f"year {year} is outside the corpus ({FIRST_YEAR}..{LAST_YEAR})")
    return f"{number_words(century)} {number_words(rest)}"


def date_source(date: datetime.date, style: int) -> str:
    """The spoken date: style 0 "march twenty first twenty twenty four",
    style 1 "the twenty first of march twenty twenty four"."""
    month, day, year = MONTHS[date.month - 1], ordinal_words(date.day), year_words(date.year)
    if style == 0:
        return f"{month} {day} {year}"
    return f"the {day} of {month} {year}"


def date_target(date: datetime.date) -> str:
    """The ISO order, one token per field: "2024 03 21"."""
    return f"{date.year} {date.month:02d} {date.day:02d}"


def bart_words() -> list[str]:
    """Every word of the tiny-bart corpus, source and target: the shared vocabulary."""
    words = MONTHS + ONES + TEENS + list(TENS.values()) + ORDINAL_ONES + ORDINAL_TEENS + BART_GLUE
    words += [str(y) for y in range(FIRST_YEAR, LAST_YEAR + 1)]
    words += [f"{n:02d}" for n in range(1, 32)]
    return list(dict.fromkeys(words))


def bart_examples(n: int, seed: int = BART_SEED) -> list[Example]:
    """`n` random real dates between 1950 and 2039, each in one of the two spoken styles."""
    rng = random.Random(seed)
    first = datetime.date(FIRST_YEAR, 1, 1).toordinal()
    last = datetime.date(LAST_YEAR, 12, 31).toordinal()
    out = []
    for _ in range(n):
        date = datetime.date.fromordinal(rng.randint(first, last))
        out.append(Example(date_source(date, rng.randint(0, 1)), date_target(date)))
    return out


# --- train / held-out split --------------------------------------------------------------------


def _held_out_key(model_name: str, ex: Example) -> str:
    # A held-out story must be new as a whole; a held-out date must be new in either style,
    # so the BART model cannot pass by having seen the same date said the other way.
    return ex.prompt if model_name == "tiny-llama" else ex.answer


def training_examples(model_name: str, n: int) -> list[Example]:
    """The first `n` training examples of a shipped model (always the same for the same n)."""
    if model_name == "tiny-llama":
        return llama_examples(n, LLAMA_SEED)
    if model_name == "tiny-bart":
        return bart_examples(n, BART_SEED)
    raise ValueError(f"no corpus for {model_name!r}")


def held_out_examples(model_name: str, n: int, n_train: int) -> list[Example]:
    """`n` examples that do not occur among the first `n_train` training examples."""
    seen = {_held_out_key(model_name, ex) for ex in training_examples(model_name, n_train)}
    make = llama_examples if model_name == "tiny-llama" else bart_examples
    seed = (LLAMA_SEED if model_name == "tiny-llama" else BART_SEED) + HELD_OUT_SEED_OFFSET
    out: list[Example] = []
    for ex in make(20 * n + 100, seed):
        key = _held_out_key(model_name, ex)
        if key not in seen:
            out.append(ex)
            seen.add(key)
            if len(out) == n:
                return out
    raise ValueError(f"could not find {n} held-out examples for {model_name!r}")
