"""Translations for the app and the lesson: gettext message catalogs, one per language.

The English text is the msgid, written in the code as `_("...")`; each other language has a .po
catalog under tracer/locales/<lang>/LC_MESSAGES/stepwise.po, compiled with Babel when first used.
There is no process-global language (Streamlit serves many sessions in threads): a caller asks
for `translator(lang)` and passes its `gettext` along.

A builder in tracer.plots that writes text takes it as a keyword, `_: Gettext = untranslated`;
ui.view passes the session's and keys its cache by language.

`N_("...")` marks a string for extraction without translating it (for tables built at import).
Words that leave the tracer in English and are shown in the app in the user's language:
- an error raised with `templated(Error, N_("... {field} ..."), field=...)`: str() is the English
  message, `error_message(exc, _)` the translated one; a field that is words itself (not data) is
  given as `phrase(N_("..."), ...)`, and said in the same language;
- a text a record keeps in English, written from known templates (a run's stop reason, what the
  doctor compared): `reword(text, templates, _)`.
`python scripts/i18n_catalog.py` extracts new strings and merges them into every .po.
"""

from __future__ import annotations

import gettext
import io
import re
import string
from collections.abc import Callable, Iterable
from functools import lru_cache
from pathlib import Path

from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po

LOCALES = Path(__file__).resolve().parent / "locales"
DOMAIN = "stepwise"
DEFAULT = "en"
LANGUAGES = {"en": "English", "zh_CN": "简体中文"}

Gettext = Callable[[str], str]
_FORMATTER = string.Formatter()


def N_(message: str) -> str:
    """Mark `message` for the catalog; translate it later with a session's gettext."""
    return message


def templated(error_type: type[Exception], template: str, /, **fields: object) -> Exception:
    """`error_type(template.format(**fields))`, keeping the template and fields so an app can say it in
    its user's language (`error_message`); str() of it stays the English text. `template` is marked
    with N_ where it is written."""
    exc = error_type(template.format(**fields))
    exc.template, exc.fields = template, fields  # type: ignore[attr-defined]
    return exc


class Phrase(str):
    """English words written from a template (`phrase`): a str, which keeps its template and fields."""

    template: str
    fields: dict[str, object]


def phrase(template: str, /, **fields: object) -> Phrase:
    """`template.format(**fields)`, the words of an error's field (a feature's name, where a setting
    came from) that `error_message` says in its user's language too. `template` is marked with N_."""
    words = Phrase(template.format(**fields))
    words.template, words.fields = template, fields
    return words


def _in_language(value: object, _: Gettext) -> object:
    """A field in the language of `_`: a Phrase translated (its own fields too), data as it is."""
    if not isinstance(value, Phrase):
        return value
    return _(value.template).format(**{name: _in_language(v, _) for name, v in value.fields.items()})


def error_message(exc: BaseException, _: Gettext | None = None) -> str:
    """The message of `exc` in the language of `_`: its template (and the fields that are phrases)
    translated when it was raised with `templated`, else its English text as it is."""
    template = getattr(exc, "template", None)
    if template is None or _ is None:
        return str(exc)
    return _in_language(phrase(template, **exc.fields), _)  # type: ignore[attr-defined]


def reword(
    text: str, templates: Iterable[str], _: Gettext, fields: dict[str, Iterable[str]] | None = None
) -> str:
    """`text`, written in English from one of `templates` (msgids with {fields}), in the language of
    `_`: for words a record keeps as text (a run's stop reason, what the doctor compared). A field
    named in `fields` is itself reworded from the templates given there. Text from no template stays
    as it is."""
    for template in templates:
        pattern = "".join(
            f"(?P<{field}>.*?)" if field else re.escape(literal)
            for literal, field, _spec, _conv in _FORMATTER.parse(template)
            for literal, field in ((literal, None), (None, field))
            if (literal if field is None else field)
        )
        found = re.fullmatch(pattern, text, flags=re.S)
        if found:
            values = {
                name: reword(value, fields[name], _, fields) if fields and name in fields and value else value
                for name, value in found.groupdict().items()
            }
            return _(template).format(**values)
    return text


def untranslated(message: str) -> str:
    """The English msgid as it is: the default `_` of a builder called outside the app."""
    return message


def catalog_path(lang: str) -> Path:
    return LOCALES / lang / "LC_MESSAGES" / f"{DOMAIN}.po"


@lru_cache(maxsize=len(LANGUAGES))
def translator(lang: str) -> gettext.NullTranslations:
    """The translations of `lang` (English, or an unknown code: the msgids themselves)."""
    if lang not in LANGUAGES or lang == DEFAULT:
        return gettext.NullTranslations()
    with catalog_path(lang).open("rb") as po:
        catalog = read_po(po, locale=lang, domain=DOMAIN)
    compiled = io.BytesIO()
    write_mo(compiled, catalog)
    compiled.seek(0)
    return gettext.GNUTranslations(compiled)


def gettext_for(lang: str) -> Gettext:
    """`_` for one session's language."""
    return translator(lang).gettext


def language(code: str | None) -> str:
    """A known language code for `code` (from a link or a widget), else English."""
    return code if code in LANGUAGES else DEFAULT
