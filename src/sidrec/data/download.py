"""Fetch public datasets for users with internet: one URL table, a cache, sha256, resume, progress bar."""

from __future__ import annotations

import urllib.request
from dataclasses import dataclass
from pathlib import Path

from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

from sidrec.errors import SidrecError
from sidrec.utils.artifacts import sha256_file  # noqa: F401 (the download API's name too)
from sidrec.utils.cache import cache_dir


@dataclass(frozen=True)
class Remote:
    url: str
    sha256: str | None = None  # None where upstream publishes no checksum
    source: str = ""  # the `sidrec data prepare` source that reads it


_UCSD14 = "https://snap.stanford.edu/data/amazon/productGraph/categoryFiles"
_UCSD18 = "https://datarepo.eng.ucsd.edu/mcauley_group/data/amazon_v2"
_UCSD23 = "https://datarepo.eng.ucsd.edu/mcauley_group/data/amazon_2023/raw"

DATASETS: dict[str, list[Remote]] = {
    "amazon2014-beauty": [Remote(f"{_UCSD14}/reviews_Beauty_5.json.gz", source="amazon2014"),
                          Remote(f"{_UCSD14}/meta_Beauty.json.gz", source="amazon2014")],
    "amazon2014-sports": [Remote(f"{_UCSD14}/reviews_Sports_and_Outdoors_5.json.gz", source="amazon2014"),
                          Remote(f"{_UCSD14}/meta_Sports_and_Outdoors.json.gz", source="amazon2014")],
    "amazon2014-toys": [Remote(f"{_UCSD14}/reviews_Toys_and_Games_5.json.gz", source="amazon2014"),
                        Remote(f"{_UCSD14}/meta_Toys_and_Games.json.gz", source="amazon2014")],
    "amazon2018-instruments": [
        Remote(f"{_UCSD18}/categoryFilesSmall/Musical_Instruments_5.json.gz", source="amazon2018"),
        Remote(f"{_UCSD18}/metaFiles2/meta_Musical_Instruments.json.gz", source="amazon2018")],
    "amazon2018-scientific": [
        Remote(f"{_UCSD18}/categoryFilesSmall/Industrial_and_Scientific_5.json.gz", source="amazon2018"),
        Remote(f"{_UCSD18}/metaFiles2/meta_Industrial_and_Scientific.json.gz", source="amazon2018")],
    "amazon2023-all-beauty": [Remote(f"{_UCSD23}/review_categories/All_Beauty.jsonl.gz", source="amazon2023"),
                              Remote(f"{_UCSD23}/meta_categories/meta_All_Beauty.jsonl.gz", source="amazon2023")],
    "ml-100k": [Remote("https://files.grouplens.org/datasets/movielens/ml-100k.zip", None, "movielens")],
    "ml-1m": [Remote("https://files.grouplens.org/datasets/movielens/ml-1m.zip", None, "movielens")],
    "online-retail": [Remote("https://archive.ics.uci.edu/static/public/352/online+retail.zip", None,
                             "online-retail")],
}


def fetch(remote: Remote, dest_dir: Path, *, show_progress: bool = True, timeout: float = 60) -> Path:
    """Download ``remote`` into ``dest_dir`` (resuming a partial ``.part`` file), verify sha256."""
    dest_dir.mkdir(parents=True, exist_ok=True)
    dest = dest_dir / remote.url.rsplit("/", 1)[-1]
    if dest.exists() and (remote.sha256 is None or sha256_file(dest) == remote.sha256):
        return dest
    part = dest.with_name(dest.name + ".part")
    have = part.stat().st_size if part.exists() else 0
    req = urllib.request.Request(remote.url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        resp = urllib.request.urlopen(req, timeout=timeout)
    except Exception as e:
        raise SidrecError(f"{remote.url}: download failed ({e})") from None
    with resp:
        if have and resp.status != 206:  # server ignored the range: start over
            have = 0
        total = int(resp.headers.get("Content-Length") or 0) + have
        with part.open("ab" if have else "wb") as f, Progress(
                "{task.description}", BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                disable=not show_progress, transient=True) as bar:
            task = bar.add_task(dest.name, total=total or None, completed=have)
            for chunk in iter(lambda: resp.read(1 << 16), b""):
                f.write(chunk)
                bar.advance(task, len(chunk))
    if remote.sha256 is not None:
        got = sha256_file(part)
        if got != remote.sha256:
            part.unlink()
            raise SidrecError(f"{remote.url}: sha256 mismatch (expected {remote.sha256[:12]}…, got {got[:12]}…)")
    part.rename(dest)
    return dest


def download(name: str, dest: Path | None = None, *, show_progress: bool = True) -> list[Path]:
    if name not in DATASETS:
        raise SidrecError(f"unknown dataset {name!r}; available: {', '.join(sorted(DATASETS))}")
    target = (dest or cache_dir()) / name
    return [fetch(r, target, show_progress=show_progress) for r in DATASETS[name]]
