"""`python -m app` / `imgclass`: start the server with uvicorn using the Settings."""

from __future__ import annotations

import uvicorn

from app.multiproc import prepare_multiprocess_dir
from app.settings import Settings


def main() -> None:
    settings = Settings()
    # Several workers share their Prometheus metrics through files; set up before they start.
    prepare_multiprocess_dir(settings.workers)
    uvicorn.run(
        "app.main:create_app",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        log_level=settings.log_level.lower(),
        access_log=False,  # the app logs each request itself
    )


if __name__ == "__main__":
    main()
