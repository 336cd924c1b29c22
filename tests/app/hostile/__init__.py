"""Hostile and odd-but-valid inputs driven through the real app (issue #11)."""
