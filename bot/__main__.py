"""`python -m bot`: the bot and the HTTP service (the HTTP service alone without a token)."""

import sys

from app.runtime import main

if __name__ == "__main__":
    sys.exit(main())
