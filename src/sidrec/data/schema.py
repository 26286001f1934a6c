"""The canonical schema every source is read into, and the prepared dataset's files.

Raw tables (what a source reader returns):
  interactions: ``user`` (str), ``item`` (str), ``time`` (float: timestamp, or position in the
  user's sequence when the source only gives an order);
  items: ``item`` (str) and text fields (``title``, ``description``, ``brand``, ``categories`` ...).

Prepared dataset directory (what ``sidrec data prepare`` writes, every later stage reads):
  interactions.parquet  user_idx, item_idx, time, position, split ('train'|'valid'|'test')
  items.parquet         item_idx (1..n_items), item_id (raw), text, and the raw text fields
  users.parquet         user_idx (1..n_users), user_id (raw)
  stats.json            counts after filtering, what was filtered and why, config, fingerprint
Index 0 is padding for users and items everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

TEXT_FIELDS_DEFAULT = ("title", "brand", "categories", "description")


@dataclass
class RawData:
    """What a source reader returns, before filtering and remapping."""

    interactions: pd.DataFrame  # user, item, time
    items: pd.DataFrame | None = None  # item, text fields
    dedup: bool = False  # whether (user, item) repeats should be collapsed (raw review dumps)
    filtered: dict[str, int] = field(default_factory=dict)  # reason -> rows dropped by the reader
    source_files: list[str] = field(default_factory=list)
