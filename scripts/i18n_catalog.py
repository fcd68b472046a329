"""Update the message catalogs: extract every `_("...")`/`N_("...")` msgid and merge it into each .po.

    python scripts/i18n_catalog.py        # then translate the empty msgstr entries it lists
    python scripts/i18n_catalog.py --merge other.po ...   # also take translations from these files

`--merge` is for a merge of two branches that both added strings: resolve the .po conflict by
taking either side, save the other side's file (`git show BRANCH:tracer/locales/zh_CN/LC_MESSAGES/stepwise.po
> other.po`), and run with `--merge other.po`: a msgid the catalog has not translated takes the
other file's translation.

Existing translations are kept; msgids no longer in the code are dropped. The test suite fails
on any msgid without a translation (tests/test_i18n.py).
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path

from babel.messages.catalog import Catalog
from babel.messages.extract import extract_from_file
from babel.messages.pofile import read_po, write_po

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tracer import i18n  # noqa: E402

# Everywhere the app's words are written: the app, the tracer (views, doctor, errors) and the model
# zoo (its load errors and the cache-bug scenarios' titles and explanations).
SOURCES = [
    "stepwise_app/*.py",
    "stepwise_app/pages/*.py",
    "tracer/*.py",
    "tracer/plots/*.py",
    "tracer/record/*.py",
    "models/*.py",
    "models/scenarios/*.py",
]
KEYWORDS = {"_": None, "N_": None}
# A fixed header date: the time of each run, written into the header, made two branches that both
# updated the catalog conflict on that line.
CREATED = datetime(2026, 11, 22, 16, 23, tzinfo=UTC)


def messages() -> list[tuple[str, str, int]]:
    """(msgid, file, line) of every marked string, in file order."""
    found = []
    for pattern in SOURCES:
        for path in sorted(ROOT.glob(pattern)):
            for lineno, msgid, _comments, _context in extract_from_file(
                "python", str(path), keywords=KEYWORDS
            ):
                found.append((msgid, str(path.relative_to(ROOT)), lineno))
    return found


def translations(path: Path) -> dict[str, str]:
    """msgid -> translation of the non-empty entries of a .po file."""
    if not path.is_file() or not path.stat().st_size:
        return {}
    with path.open("rb") as f:
        return {m.id: m.string for m in read_po(f) if m.id and m.string}


def update(lang: str, merge: tuple[Path, ...] = ()) -> list[str]:
    po = i18n.catalog_path(lang)
    old: dict[str, str] = {}
    for path in reversed(merge):  # the catalog's own translations win, then the first file given
        old.update(translations(path))
    old.update(translations(po))
    catalog = Catalog(
        locale=lang,
        domain=i18n.DOMAIN,
        project="Stepwise",
        charset="utf-8",
        fuzzy=False,
        creation_date=CREATED,
    )
    for msgid, path, lineno in messages():
        flags = ("python-brace-format",) if "{" in msgid else ()
        catalog.add(msgid, old.get(msgid, ""), locations=[(path, lineno)], flags=flags)
    po.parent.mkdir(parents=True, exist_ok=True)
    with po.open("wb") as out:
        write_po(out, catalog, width=100)
    return [m.id for m in catalog if m.id and not m.string]


if __name__ == "__main__":
    args = sys.argv[1:]
    merge = tuple(Path(a) for a in args[args.index("--merge") + 1 :]) if "--merge" in args else ()
    for code in i18n.LANGUAGES:
        if code != i18n.DEFAULT:
            untranslated = update(code, merge)
            print(f"{code}: {len(untranslated)} untranslated", *untranslated, sep="\n  ")
