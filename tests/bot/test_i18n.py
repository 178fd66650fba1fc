"""The bot in its readers' language: the catalogues are complete and current,
and through the fake Discord a German member reads German while the channel
reads the server's language.

The catalogue test extracts the messages from the code as scripts/translations.sh
does (Babel, the same keywords) and holds every catalogue to them.
"""

from __future__ import annotations

import gettext
import io
import string
from pathlib import Path
from typing import Any

import discord
import pytest
from babel.messages.catalog import Catalog
from babel.messages.extract import extract_from_dir
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po

from bot.i18n import LANGUAGES, LOCALES, SOURCE, CommandTranslator, language_of, messages
from generation.messages import N_, Text
from stories.errors import InvalidSetting, OverlongPrompt
from tests.bot.conftest import BotEnv
from tests.bot.helpers import PROMPT, bot_messages, button
from tests.conftest import REPO

# As scripts/translations.sh runs pybabel: the same folders and keywords.
SOURCES = ("bot", "stories", "generation")
KEYWORDS = {"_": None, "n_": (1, 2), "N_": None, "locale_str": None}
TRANSLATED = [language for language in LANGUAGES if language != SOURCE]

Message = str | tuple[str, ...]


def in_code() -> dict[Message, set[str]]:
    """Every message the code marks, and the files it is in."""
    found: dict[Message, set[str]] = {}
    for folder in SOURCES:
        for filename, _, message, _, _ in extract_from_dir(
            REPO / folder, [("**.py", "python")], keywords=KEYWORDS
        ):
            found.setdefault(message, set()).add(f"{folder}/{filename}")
    return found


def catalogue(path: Path, locale: str | None = None) -> Catalog:
    with path.open("rb") as file:
        return read_po(file, locale=locale)


def key(message: Any) -> Message:
    return message.id if isinstance(message.id, str) else tuple(message.id)


def fields(template: str) -> list[tuple[str, str, str | None]]:
    """The placeholders of a str.format template, with their format and conversion."""
    return sorted(
        (name, spec or "", conversion)
        for _, name, spec, conversion in string.Formatter().parse(template)
        if name is not None
    )


@pytest.fixture(scope="module")
def marked() -> dict[Message, set[str]]:
    found = in_code()
    assert len(found) > 250, "the extraction found (nearly) nothing: are the keywords right?"
    return found


def test_the_template_is_the_code_s_messages(marked: dict[Message, set[str]]) -> None:
    template = {key(m) for m in catalogue(LOCALES / "storybot.pot") if m.id}
    assert sorted(map(str, set(marked) - template)) == [], "run scripts/translations.sh"
    assert sorted(map(str, template - set(marked))) == [], "run scripts/translations.sh"


@pytest.mark.parametrize("language", TRANSLATED)
def test_every_catalogue_is_complete_current_and_keeps_the_placeholders(
    language: str, marked: dict[Message, set[str]]
) -> None:
    po = catalogue(LOCALES / language / "LC_MESSAGES" / "storybot.po", language)
    entries = {key(m): m for m in po if m.id}
    missing = [m for m in marked if m not in entries]
    stale = [m for m in entries if m not in marked]
    assert missing == [], f"{language}: messages without a translation (scripts/translations.sh)"
    assert stale == [], f"{language}: messages the code no longer has"
    assert not po.obsolete, f"{language}: obsolete (#~) entries left in the catalogue"
    assert po.plural_forms == "nplurals=2; plural=(n != 1);"
    for message_id, entry in entries.items():
        assert not entry.fuzzy, f"{language}: fuzzy {message_id!r}"
        forms = [entry.string] if isinstance(entry.string, str) else list(entry.string)
        assert forms and all(form.strip() for form in forms), f"{language}: {message_id!r}"
        english = [message_id] if isinstance(message_id, str) else list(message_id)
        for number, form in enumerate(forms):
            source = english[min(number, len(english) - 1)]
            assert fields(form) == fields(source), f"{language}: {message_id!r} -> {form!r}"
            values = {name: "x" for name, _, _ in fields(source)}
            assert form.format(**values) if values else form  # formats as the English does


@pytest.mark.parametrize("language", TRANSLATED)
def test_the_compiled_catalogues_are_the_po_files(language: str) -> None:
    """The bot reads the .mo files: each holds exactly what its .po says."""
    folder = LOCALES / language / "LC_MESSAGES"
    compiled = io.BytesIO()
    write_mo(compiled, catalogue(folder / "storybot.po", language))
    compiled.seek(0)
    expected = gettext.GNUTranslations(compiled)._catalog  # type: ignore[attr-defined]
    with (folder / "storybot.mo").open("rb") as shipped:
        actual = gettext.GNUTranslations(shipped)._catalog  # type: ignore[attr-defined]
    assert actual == expected, "run scripts/translations.sh compile"


def test_discord_locales_map_to_catalogues_by_prefix() -> None:
    assert [
        language_of(locale)
        for locale in ("de", "es-ES", "es-419", "en-US", "en-GB", "pt-BR", "", None)
    ] == ["de", "es", "es", "en", "en", "en", "en", "en"]
    assert language_of(discord.Locale.german) == "de"
    assert messages("pt-BR")._("Cancelled.") == "Cancelled."
    assert messages(discord.Locale.spain_spanish)._("Cancelled.") == "Cancelado."


def test_texts_from_the_layers_below_are_translated_with_their_values() -> None:
    de = messages("de")
    error = OverlongPrompt(40)
    assert str(error) == "The prompt is too long: at most 40 characters."  # HTTP, logs: English
    assert de.error(error) == "Der Anfang ist zu lang: höchstens 40 Zeichen."
    # A Text inside a Text (a filter term's problem inside the setting's refusal).
    nested = InvalidSetting(
        N_("That term cannot be filtered: {reason}", reason=N_("The term is empty."))
    )
    assert de.error(nested) == "Dieser Begriff kann nicht gefiltert werden: Der Begriff ist leer."
    # Stored as plain English (a run's error in the database): a whole message translates.
    assert de.text("Interrupted by a restart.") == "Durch einen Neustart unterbrochen."
    assert de.text("disk I/O error") == "disk I/O error"
    assert de.n_("{count} vote", "{count} votes", 1) == "1 Stimme"
    assert messages("es").n_("{count} vote", "{count} votes", 2) == "2 votos"
    assert isinstance(Text("a {b}", b=1), str) and Text("a {b}", b=1) == "a 1"


async def test_command_descriptions_and_choices_are_localized_names_are_not() -> None:
    translator = CommandTranslator()
    context = discord.app_commands.TranslationContext(
        discord.app_commands.TranslationContextLocation.command_description, None
    )
    name = discord.app_commands.TranslationContext(
        discord.app_commands.TranslationContextLocation.command_name, None
    )
    string_ = discord.app_commands.locale_str("Your stories: read, export or delete them")
    assert await translator.translate(string_, discord.Locale.german, context) == (
        "Deine Geschichten: lesen, exportieren oder löschen"
    )
    assert await translator.translate(string_, discord.Locale.american_english, context) is None
    assert await translator.translate(string_, discord.Locale.german, name) is None


# ------------------------------------------------------------ the fake Discord
def command(env: BotEnv, name: str) -> dict[str, Any]:
    return next(c for c in env.fake.server.commands if c["name"] == name)


async def test_commands_synced_with_german_and_spanish_descriptions(env: BotEnv) -> None:
    """What Discord received: descriptions, option descriptions and choices in
    German and Spanish (every Spanish locale), names in English only."""
    story = command(env, "story")
    assert story["description"] == "Write a story with GPT-2 from your first line"
    assert story["description_localizations"]["de"] == (
        "Schreib mit GPT-2 eine Geschichte aus deiner ersten Zeile"
    )
    spanish = "Escribe una historia con GPT-2 a partir de tu primera línea"
    assert story["description_localizations"]["es-ES"] == spanish
    assert story["description_localizations"]["es-419"] == spanish
    assert "en-US" not in story["description_localizations"]
    assert not story.get("name_localizations")
    options = {o["name"]: o for o in story["options"]}
    assert options["prompt"]["description_localizations"]["de"] == (
        "Die erste(n) Zeile(n) deiner Geschichte"
    )
    assert not options["prompt"].get("name_localizations")
    short = next(c for c in options["length"]["choices"] if c["value"] == "short")
    assert short["name"] == "Short (a paragraph)"
    assert short["name_localizations"] == {
        "de": "Kurz (ein Absatz)",
        "es-ES": "Corta (un párrafo)",
        "es-419": "Corta (un párrafo)",
    }
    admin = command(env, "storyadmin")
    assert admin["description_localizations"]["de"] == (
        "Servereinstellungen für storybot (Server verwalten)"
    )
    show = next(o for o in admin["options"] if o["name"] == "show")
    assert show["description_localizations"]["es-ES"] == (
        "Lo que rige en este servidor, y las cifras de moderación"
    )

    # Every localized text is a translation (none left in English) and fits
    # Discord's 100 characters, in every command, subcommand, option and choice.
    def walk(item: dict[str, Any]) -> Any:
        yield item
        for child in item.get("options", []) + item.get("choices", []):
            yield from walk(child)

    localized = 0
    for synced in env.fake.server.commands:
        for item in walk(synced):
            assert not item.get("name_localizations") or "value" in item, item["name"]
            for field in ("description", "name"):
                for text in (item.get(f"{field}_localizations") or {}).values():
                    assert text != item[field] and len(text) <= 100, text
                    localized += 1
    assert localized > 100


async def test_a_german_member_reads_german_the_channel_reads_the_server_s_language(
    env: BotEnv,
) -> None:
    fake = env.fake
    fake.alice.locale = "de"  # Alice's Discord client is German; the server is English
    # A refused /story: the refusal is private, and German.
    handle = await fake.invoke("story", user=fake.alice, genre="nope", prompt=PROMPT)
    refused = await handle.reply(lambda m: m["content"].startswith("Unbekanntes Genre"))
    assert refused["flags"] & 64 and "'nope'. Wähle eines von: " in refused["content"]
    # Bob, English, gets the same refusal in English at the same time.
    handle = await fake.invoke("story", user=fake.bob, genre="nope", prompt=PROMPT)
    await handle.reply(lambda m: m["content"].startswith("Unknown genre 'nope'. Choose one of"))

    # A story: Alice's answer in German, the story's message in the server's English.
    handle = await fake.invoke(
        "story", user=fake.alice, genre="crime", prompt=PROMPT, length="short"
    )
    queued = await handle.reply(lambda m: "steht in der Warteschlange" in m["content"])
    assert queued["flags"] & 64 and queued["content"].startswith("Deine Geschichte (crime)")
    story = await fake.wait_for_message(lambda m: "· part 1 · seed" in m["content"])
    labels = [c["label"] for row in story["components"] for c in row["components"]]
    assert labels == ["Continue", "Vote", "Reroll", "Notes", "Report", "Share"]

    # /mystories: the listing, its buttons and menus in German.
    handle = await fake.invoke("mystories", user=fake.alice)
    listing = await handle.reply(lambda m: "Deine Geschichten" in m["content"])
    assert listing["flags"] & 64 and "**Deine Geschichten** (1–1 von 1)" in listing["content"]
    assert "0 Teil(e)" in listing["content"] or "1 Teil(e)" in listing["content"]
    button(listing, "Weiter")  # the Next button, labelled for Alice
    button(listing, "Nach Genre filtern")
    opened = await fake.select(
        listing,
        button(listing, "Eine Geschichte öffnen"),
        [str(await story_id(env))],
        user=fake.alice,
    )
    await opened.deferred()
    assert "-# Geschichte #" in listing["content"]
    button(listing, "Exportieren")

    # The server switches to Spanish: what the bot posts in the channel follows,
    # Alice's private answers stay German.
    await fake.set_guild_locale("es-ES")
    assert env.bot is not None
    guild = env.bot.get_guild(int(fake.server.guild_id))
    assert guild is not None
    await fake.wait_until(lambda: guild.preferred_locale is discord.Locale.spain_spanish)
    handle = await fake.invoke(
        "story", user=fake.alice, genre="crime", prompt="Una noche larga", length="short"
    )
    await handle.reply(lambda m: "Deine Geschichte (crime)" in m["content"])
    spanish = await fake.wait_for_message(lambda m: "· parte 1 · semilla" in m["content"])
    labels = [c["label"] for row in spanish["components"] for c in row["components"]]
    assert labels == ["Continuar", "Votar", "Otra versión", "Notas", "Reportar", "Compartir"]
    # The first story's messages are untouched: they were written in English.
    assert "· part 1 · seed" in story["content"]
    # A ballot in the channel, Spanish; the button's private answer, German.
    vote = await fake.click(spanish, button(spanish, "Votar"), user=fake.alice)
    await vote.reply(lambda m: m["content"].startswith("Der Kanal stimmt ab"))
    await fake.wait_for_message(lambda m: "versiones de lo que pasa después" in m["content"])
    assert not any("Writing" in m["content"] for m in bot_messages(fake))
    # A refused ➕ (the vote is open) has no one to answer privately: its
    # notice in the channel is in the server's language, the story layer's
    # refusal included.
    await fake.react(spanish, "➕", user=fake.bob)
    notice = await fake.wait_for_message(lambda m: m["content"].startswith(f"-# <@{fake.bob.id}>"))
    assert notice["content"].endswith(
        "El canal está votando qué pasa después: vota, y continúa la opción ganadora "
        "cuando termine la votación."
    )


async def story_id(env: BotEnv) -> int:
    assert env.store is not None
    page = await env.store.list_stories(int(env.fake.alice.id))
    return page.items[0].story.id
