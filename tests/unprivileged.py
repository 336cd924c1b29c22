"""Run a command held to file modes even when the tests run as root (as in CI): root reads and
writes through any mode, so a test of "a folder this user cannot read/write" would pass
vacuously or be skipped. setpriv drops CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH from the
bounding set, so the command's root has only the modes' owner rights."""

from __future__ import annotations

import os
import shutil

import pytest


def held_to_file_modes() -> list[str]:
    """The prefix for a subprocess argv (empty for an ordinary user)."""
    if os.geteuid() != 0:
        return []
    if shutil.which("setpriv") is None:
        pytest.skip("needs setpriv (util-linux) to run without root's permission override")
    return ["setpriv", "--bounding-set=-dac_override,-dac_read_search", "--"]
