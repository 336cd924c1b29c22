"""pymilvus's own log handler is taken out when the Milvus store opens: it printed every
failed call with a full traceback to stderr, past the server's log format (200,000 lines
while Milvus was down for a few minutes). No Milvus server needed."""

from __future__ import annotations

import logging

import pytest

from app.catalog.milvus_base import quiet_pymilvus


def test_pymilvus_logs_only_critical_lines_through_the_servers_handlers(
    caplog: pytest.LogCaptureFixture,
) -> None:
    pytest.importorskip("pymilvus")
    import pymilvus.decorators  # its logger writes each failed RPC

    rpc_logger = logging.getLogger(pymilvus.decorators.__name__)
    quiet_pymilvus()
    root = logging.getLogger("pymilvus")
    assert not root.handlers and root.propagate
    assert rpc_logger.getEffectiveLevel() == logging.CRITICAL and not rpc_logger.handlers
    with caplog.at_level(logging.DEBUG):
        rpc_logger.error("RPC error: [query] Traceback: ...")
        rpc_logger.critical("kept")
    assert [r.getMessage() for r in caplog.records if r.name.startswith("pymilvus")] == ["kept"]
