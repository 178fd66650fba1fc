"""Sentences for people, in English, that a front-end can say in another language.

The layers below the front-ends write what they tell people (an error's
message, a length's label) in English. A front-end that speaks other languages
(the Discord bot) needs more than the finished sentence: the template it was
made from, which is the key of its message catalogues, and the values that
fill it. `Text` carries both and still is the English sentence, a `str`, so the
HTTP interface and the logs use it unchanged.

`N_` is the name the catalogue tools look for (`pybabel extract -k N_`, see
babel.cfg): a message written `N_("Try again in {seconds} s.", seconds=5)` is
extracted into the catalogues as "Try again in {seconds} s.". It lives at the
bottom layer so that every layer can mark its messages; nothing here
translates anything.
"""

from __future__ import annotations

from typing import Any


class Text(str):
    """An English sentence (a `str`) that remembers its template and values."""

    message: str  # the template: a `str.format` string, the catalogues' msgid
    params: dict[str, Any]  # what fills its {placeholders}

    def __new__(cls, message: str, /, **params: Any) -> Text:
        text = super().__new__(cls, message.format(**params) if params else message)
        text.message = message
        text.params = params
        return text

    def __reduce__(self) -> tuple[Any, ...]:  # copy and pickle as what it is
        return (_rebuild, (self.message, self.params))


def _rebuild(message: str, params: dict[str, Any]) -> Text:
    return Text(message, **params)


N_ = Text
