"""Generated instance ids: 32 lowercase hex characters, unique, in creation order.

The first 12 are the creation time in milliseconds, the other 20 are random (80 bits from
the OS). Ids that sort by time are inserted next to each other in the store's id indexes; a
random id (uuid4) lands on a random index page, and on a large store every insert then
touches, and rewrites, a page of its own.
"""

from __future__ import annotations

import os
import time


def new_instance_id() -> str:
    return f"{time.time_ns() // 1_000_000:012x}{os.urandom(10).hex()}"
