"""Emoji art as drawing data: catalogue, rendering, cached backbone features, leave-one-style-out
heads (santa, bird), the products trim-policy measurement and the CI re-check (docs/drawings.md)."""
