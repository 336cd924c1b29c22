"""`python -m app` / `imgclass`: start the server with uvicorn using the Settings."""

from __future__ import annotations

import uvicorn

from app.settings import Settings


def main() -> None:
    settings = Settings()
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
