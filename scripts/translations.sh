#!/usr/bin/env bash
# The bot's message catalogues, gettext with Babel (bot/i18n.py says how they are
# used; the README's "Translations" how to translate):
#   scripts/translations.sh              extract the messages from the code into
#                                        bot/locales/storybot.pot, bring every
#                                        language's .po up to date with it (new
#                                        messages empty, changed ones fuzzy), and
#                                        compile each .po into the .mo the bot loads
#   scripts/translations.sh compile      compile only (after translating a .po)
#   scripts/translations.sh init LANG    start the catalogue of a new language
# tests/bot/test_i18n.py fails while a catalogue misses a message, keeps one the
# code no longer has, or is not compiled.
set -euo pipefail
cd "$(dirname "$0")/.."
pybabel=.venv/bin/pybabel
locales=bot/locales
template=$locales/storybot.pot

extract() {
  # Keywords: t._("..."), t.n_("singular", "plural", n), N_("...") in the layers
  # below the bot, locale_str("...") for the slash commands' descriptions.
  "$pybabel" --quiet extract -F babel.cfg --no-default-keywords \
    -k _ -k n_:1,2 -k N_ -k locale_str \
    --add-location=file --sort-by-file --width=100 \
    --project=storybot --copyright-holder="storybot's authors" \
    -o "$template" bot stories generation
}

compile() {
  "$pybabel" --quiet compile --statistics -D storybot -d "$locales"
}

case "${1:-update}" in
  update)
    extract
    "$pybabel" --quiet update -D storybot -i "$template" -d "$locales" \
      --width=100 --ignore-obsolete --update-header-comment
    compile
    ;;
  compile)
    compile
    ;;
  init)
    "$pybabel" init -D storybot -i "$template" -d "$locales" -l "${2:?which language}" --width=100
    ;;
  *)
    echo "usage: scripts/translations.sh [update|compile|init LANG]" >&2
    exit 2
    ;;
esac
