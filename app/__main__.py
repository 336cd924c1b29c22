"""`python -m app` / `imgclass`: start the server with the Settings.

The same command is two programs in turn. First app.start: it reads and checks the settings,
then serves in this process (one worker) or, with several workers (the default on a multi-core
CPU) or TLS, binds the port and hands over by exec to app.dealer, the parent that deals the
connections out to the workers: the same process id and command line, in a fresh interpreter
that holds only what dealing needs.
"""

from __future__ import annotations

import os

from app.dealer import DEALER_ENV


def main() -> None:
    if DEALER_ENV in os.environ:
        from app.dealer import main as deal

        deal()
    else:
        from app.start import main as start

        start()


if __name__ == "__main__":
    main()
