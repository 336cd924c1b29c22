"""What a zip upload declares, read before any image in it is decoded: its entry count (before
zipfile builds an object per entry) and the pixels each image's header declares (app/teach/
folder.py checks both against the upload's limits)."""

from __future__ import annotations

import io
import struct
import warnings
import zipfile
from typing import Final

from PIL import Image

from app.image_limits import ImageLimits
from app.imaging import check_structure, sniff_format

# the default checks (an entry the operator's limits allow but these do not is only counted as
# 0 pixels here: its decode applies the operator's)
_HEADER_LIMITS: Final = ImageLimits()


def declared_entries(data: bytes) -> int | None:
    """The entry count from the end-of-central-directory record (zip64 included), read before
    zipfile builds one object per entry (2.2 s and +233 MB for 400,000 empty entries), or the
    number of central-directory signatures in the file when that is more: zipfile parses the
    whole directory whatever the record says (a record saying 1 over 4 M entries: 17 s and
    +1.9 GB, round 17). A chance signature inside compressed data only makes it stricter."""
    end = data.rfind(b"PK\x05\x06", max(0, len(data) - 65_557))
    if end < 0 or end + 22 > len(data):
        return None
    found = data.count(b"PK\x01\x02")
    (entries,) = struct.unpack_from("<H", data, end + 10)
    locator = end - 20
    if entries == 0xFFFF and locator >= 0 and data[locator : locator + 4] == b"PK\x06\x07":
        (record,) = struct.unpack_from("<Q", data, locator + 8)
        if data[record : record + 4] == b"PK\x06\x06" and record + 40 <= len(data):
            (entries,) = struct.unpack_from("<Q", data, record + 32)
    return max(int(entries), found)


def header_pixels(zf: zipfile.ZipFile, info: zipfile.ZipInfo, max_bytes: int) -> int:
    """Pixels an entry's image header declares, from its first 64 KB (the whole entry when
    the header lies further in); 0 when it is no image we read or one whose structure
    `decode` refuses (skipped later, undecoded, with decode's reason)."""
    for size in (min(64 * 1024, max_bytes), max_bytes):
        try:
            with zf.open(info) as f:
                head = f.read(size)
            fmt = sniff_format(head)
            if fmt is None:
                return 0
            # round 43: a 1.4 MB zip of six files predict refuses from their structure (3.5
            # million JPEG segments, 1.6 million PNG chunks) took 19 s of CPU and +400 MiB here
            check_structure(head, fmt, _HEADER_LIMITS)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                with Image.open(io.BytesIO(head), formats=[fmt]) as img:
                    w, h = img.size
            return max(0, w) * max(0, h)
        except Exception:  # a header past the prefix, or a damaged file: try once more, whole
            if size >= max_bytes or info.file_size <= size:
                return 0
    return 0
