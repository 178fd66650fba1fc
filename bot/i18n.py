"""The bot in its readers' language: English, German and Spanish.

Every text the bot shows goes through one `Messages` object, the bot's texts in
one language: `t._("Cancelled.")`, `t.n_("{count} vote", "{count} votes", n)`.
Which language: a private answer follows the person's Discord client
(`interaction.locale`), a message in the channel the server's language (its
`preferred_locale`, which interactions carry as `guild_locale`), and a locale
without a catalogue gets English. Stories themselves stay English (GPT-2).

The messages are English `str.format` templates, the keys of gettext message
catalogues in `bot/locales/` (German and Spanish; English is the source, the
template `storybot.pot`). Babel extracts them from the code and keeps the
catalogues (`scripts/translations.sh`); a test fails when a catalogue misses a
message, has one the code no longer uses, or changes a placeholder. The
compiled `.mo` files, next to their `.po`, are what the bot loads, with the
standard library's gettext.

What the layers below say to people (an error's message, a length's label)
arrives as `generation.messages.Text`: the English sentence with its template
and values, which `Messages.text` translates. A text stored as plain English
(a run's error in the database) is translated when it is a whole message.

Slash command descriptions, option descriptions and choices are translated by
`CommandTranslator`, which discord.py asks for each of Discord's locales when it
syncs the commands; command and option names stay English.
"""

from __future__ import annotations

import functools
import gettext
import logging
from pathlib import Path
from typing import Any

import discord
from discord import app_commands

from generation.messages import Text

log = logging.getLogger(__name__)

DOMAIN = "storybot"
LOCALES = Path(__file__).parent / "locales"
SOURCE = "en"  # the language the messages are written in
LANGUAGES = (SOURCE, "de", "es")


def language_of(locale: discord.Locale | str | None) -> str:
    """A catalogue's language for a Discord locale ("de", "es-ES", "es-419",
    "en-US", "pt-BR"...), by its prefix; English when there is none for it."""
    code = locale.value if isinstance(locale, discord.Locale) else str(locale or "")
    prefix = code.split("-")[0].strip().lower()
    return prefix if prefix in LANGUAGES else SOURCE


class Messages:
    """The bot's texts in one language."""

    def __init__(self, language: str, translations: gettext.NullTranslations) -> None:
        self.language = language
        self._translations = translations

    def _(self, message: str, /, **params: Any) -> str:
        """`message` (an English template) in this language, filled with `params`."""
        return self._fill(message, self._translations.gettext(message), params)

    def n_(self, singular: str, plural: str, count: int, /, **params: Any) -> str:
        """The form for `count` ({count} in the templates): "1 vote", "2 votes"."""
        params = {"count": count, **params}
        english = singular if count == 1 else plural
        return self._fill(english, self._translations.ngettext(singular, plural, count), params)

    def text(self, text: str) -> str:
        """A text from the layers below in this language: a `Text` by its template
        (and its values that are `Text` too); a plain string when it is a whole
        message of the catalogues (an English message stored as such), else as it is."""
        if isinstance(text, Text):
            params = {
                key: self.text(value) if isinstance(value, Text) else value
                for key, value in text.params.items()
            }
            return self._(text.message, **params) if params else self._(text.message)
        return self._translations.gettext(text) if text else text

    def error(self, error: BaseException) -> str:
        """An error's message in this language (its `Text`, or `str(error)`)."""
        message = error.args[0] if len(error.args) == 1 else None
        return self.text(message) if isinstance(message, Text) else str(error)

    def _fill(self, english: str, translated: str, params: dict[str, Any]) -> str:
        if not params:
            return translated
        try:
            return translated.format(**params)
        except (KeyError, IndexError, ValueError):  # a broken translation: English, not a crash
            log.error("the %s translation of %r does not fit its values", self.language, english)
            return english.format(**params)


@functools.cache
def _messages(language: str) -> Messages:
    if language == SOURCE:
        return Messages(SOURCE, gettext.NullTranslations())
    path = LOCALES / language / "LC_MESSAGES" / f"{DOMAIN}.mo"
    try:
        with path.open("rb") as catalogue:
            return Messages(language, gettext.GNUTranslations(catalogue))
    except OSError as error:  # a broken install: English rather than no answer at all
        log.error("no %s message catalogue (%s): answering in English", language, error)
        return Messages(SOURCE, gettext.NullTranslations())


def messages(locale: discord.Locale | str | None = None) -> Messages:
    """The bot's texts for a Discord locale (or a language); English by default."""
    return _messages(language_of(locale))


def for_person(interaction: discord.Interaction) -> Messages:
    """For a private answer: the language of the person's Discord client."""
    return messages(interaction.locale)


def for_channel(channel: Any) -> Messages:
    """For a message in a channel: the server's language; English outside one."""
    guild = getattr(channel, "guild", None)
    return messages(getattr(guild, "preferred_locale", None))


def for_server(interaction: discord.Interaction) -> Messages:
    """For a message an interaction posts or edits in the channel: the server's
    language (Discord sends it with the interaction)."""
    return messages(interaction.guild_locale if interaction.guild_id else None)


class CommandTranslator(app_commands.Translator):
    """Slash command descriptions, option descriptions and choice names in
    German and Spanish, for every Discord locale of those languages. Names of
    commands, groups and options stay English (None: no localization)."""

    KEEP = frozenset(
        {
            app_commands.TranslationContextLocation.command_name,
            app_commands.TranslationContextLocation.group_name,
            app_commands.TranslationContextLocation.parameter_name,
        }
    )

    async def translate(
        self,
        string: app_commands.locale_str,
        locale: discord.Locale,
        context: app_commands.TranslationContextTypes,
    ) -> str | None:
        if context.location in self.KEEP:
            return None
        language = language_of(locale)
        if language == SOURCE:
            return None
        translated = messages(language)._(string.message)
        return translated if translated != string.message else None
