"""Data: raw sources -> canonical tables -> prepared dataset directory (k-core, ids, leave-one-out)."""
