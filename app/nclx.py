"""The colour codes an AVIF states for its picture (`colr` property of type `nclx`: colour
primaries and transfer, ITU-T H.273), read from its boxes (app/isobmff.py).

Pillow's AVIF plugin hands over an embedded ICC profile (`icc_profile`) but not these codes, so
a Display P3 or BT.2020 AVIF that says so by its codes alone was read as sRGB (app/colour.py
makes a profile from them). Only the primary item's own properties are read, as libavif reads
them; a file whose boxes cannot be read states nothing (its decode reports the damage).
"""

from __future__ import annotations

from app.isobmff import meta_children, primary_item, properties, property_links, uint


def nclx_codes(data: bytes) -> tuple[int, int] | None:
    """(colour_primaries, transfer_characteristics) of the primary image's `nclx` colour
    property; None when it has none or the boxes do not add up."""
    try:
        _, children = meta_children(data)
        if not children:
            return None
        primary = primary_item(data, children)
        props = properties(data, children)
        for index in property_links(data, children).get(primary, []):
            kind, start, end = props[index] if index < len(props) else (b"", 0, 0)
            # colour_type, then colour_primaries, transfer_characteristics, matrix_coefficients
            if kind == b"colr" and end - start >= 11 and data[start : start + 4] == b"nclx":
                return uint(data, start + 4, 2)[0], uint(data, start + 6, 2)[0]
    except (ValueError, IndexError):  # Unreadable is a ValueError
        return None
    return None
