"""What a client (the browser page) must send: whether an API key is needed, and whether the
one it holds is right. Never reveals the key or anything about it."""

from __future__ import annotations

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from app.api.deps import SettingsDep, key_holder, key_required, writes_locked

router = APIRouter(prefix="/v1", tags=["health"])


class Access(BaseModel):
    key_required_for_reads: bool
    key_required_for_writes: bool
    writes_enabled: bool = Field(
        description="false when the server listens beyond loopback without a key (writes 401)"
    )
    key_accepted: bool = Field(description="the X-API-Key sent with this request is right")


@router.get("/access", response_model=Access)
async def access(request: Request, settings: SettingsDep) -> Access:
    """Whether reads and writes need the API key (send it as X-API-Key)."""
    return Access(
        key_required_for_reads=key_required(settings, write=False),
        key_required_for_writes=key_required(settings, write=True),
        writes_enabled=not writes_locked(settings, request),
        key_accepted=key_holder(request, settings),
    )
