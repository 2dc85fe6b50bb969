"""Download the known data files (see :mod:`csrl.data.manifest`) and verify every byte by sha256.

``fetch(dest, tasks=("sts",))`` downloads each selected file from its pinned public URL, or from
``base_url + "/" + relative_path`` when a mirror is given (a copy of the data root served over HTTP(S)
or ``file://``). Per file:

* already present with the manifest's sha256: skipped;
* present with another hash: left untouched and reported (a known variant or an unrecognised file),
  unless ``overwrite=True``;
* otherwise streamed to ``<name>.part`` beside the target. An interrupted download leaves the
  ``.part`` file, and the next run resumes it with an HTTP ``Range`` request (a server that ignores
  ``Range`` restarts it). The finished file is fsync'ed, checked against the sha256, and renamed onto
  the target, so the target only ever appears complete. On a hash mismatch the ``.part`` is deleted
  and :class:`CsrlError` is raised.

Network failures raise :class:`CsrlError` naming the URL; files finished before the failure are kept.
Only the standard library (``urllib``) is used.
"""

from __future__ import annotations

import http.client
import os
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from csrl.data.manifest import ManifestEntry, select_entries, sha256_file
from csrl.errors import CsrlError
from csrl.utils.io import fsync_dir

__all__ = ["FetchReport", "fetch"]

_BLOCK = 1 << 20
_USER_AGENT = "csrl-fetch/0.1 (+urllib)"
_NETWORK_HINT = (
    "check the network and run fetch again (finished files are kept, partial ones resume); without "
    "internet, copy the data directory from a machine that has it and point --data-dir / CSRL_DATA_DIR "
    "at it, or download from a mirror with base_url="
)


@dataclass
class FetchReport:
    """What :func:`fetch` did, per relative path."""

    dest: Path
    downloaded: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # already present and verified
    kept: list[tuple[str, str]] = field(default_factory=list)  # (path, why) present with another hash
    unavailable: list[str] = field(default_factory=list)  # no public URL and no base_url
    bytes_downloaded: int = 0

    def to_text(self) -> str:
        lines = [
            f"fetch into {self.dest}: {len(self.downloaded)} downloaded ({self.bytes_downloaded:,} bytes), "
            f"{len(self.skipped)} already present, {len(self.kept)} kept with other content"
        ]
        lines += [f"kept: {p} ({why}); pass overwrite=True to replace it" for p, why in self.kept]
        if self.unavailable:
            lines.append(
                f"not downloaded: {len(self.unavailable)} file(s) with no public source (derived locally, e.g. "
                f"{self.unavailable[0]}); copy them from a mirror with base_url= / --base-url"
            )
        return "\n".join(lines)


def _url_for(entry: ManifestEntry, base_url: str | None) -> str | None:
    if base_url is not None:
        return base_url.rstrip("/") + "/" + urllib.parse.quote(entry.path)
    return entry.url


def _download(url: str, part: Path, entry: ManifestEntry, timeout: float) -> int:
    """Stream ``url`` into ``part`` (resuming it when possible); return the number of bytes received."""
    have = part.stat().st_size if part.exists() else 0
    if have >= entry.size:  # a stale or over-long partial file: start again
        part.unlink()
        have = 0
    headers = {"User-Agent": _USER_AGENT}
    if have:
        headers["Range"] = f"bytes={have}-"
    request = urllib.request.Request(url, headers=headers)
    received = 0
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            status = getattr(resp, "status", None) or 200
            content_range = resp.headers.get("Content-Range", "") if resp.headers else ""
            resumed = status == 206 and re.match(rf"bytes {have}-", content_range) is not None
            with open(part, "ab" if resumed else "wb") as out:
                total = have if resumed else 0
                while block := resp.read(_BLOCK):
                    total += len(block)
                    received += len(block)
                    if total > entry.size:
                        break  # longer than the manifest says: the hash check below fails
                    out.write(block)
                out.flush()
                os.fsync(out.fileno())
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:  # the server cannot resume this partial file: start again
            part.unlink(missing_ok=True)
            return _download(url, part, entry, timeout)
        raise CsrlError(f"could not download {url}: HTTP {e.code} {e.reason}", hint=_NETWORK_HINT) from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
        reason = e.reason if isinstance(e, urllib.error.URLError) else e
        raise CsrlError(f"could not download {url}: {reason}", hint=_NETWORK_HINT) from None
    return received


def fetch(
    dest: Path | str,
    *,
    base_url: str | None = None,
    tasks: Iterable[str] = ("sts",),
    timeout: float = 60,
    overwrite: bool = False,
    manifest: Sequence[ManifestEntry] | None = None,
    progress: Callable[[str], None] | None = None,
) -> FetchReport:
    """Download the files of ``tasks`` (groups such as ``"sts"``, ``"transfer"``, ``"nli"``, ``"wiki"``,
    ``"train"``, single tasks such as ``"stsb"``, or ``"all"``) into ``dest``. Files without a public URL
    (``train-extra``) are listed in ``FetchReport.unavailable`` unless ``base_url`` is given.

    ``manifest`` replaces the built-in list (tests, private mirrors); ``progress`` receives one line per
    file. Returns a :class:`FetchReport`; raises :class:`CsrlError` on network errors and hash
    mismatches.
    """
    dest = Path(dest)
    names = [tasks] if isinstance(tasks, str) else list(tasks)
    entries = select_entries(names, manifest)
    report = FetchReport(dest)
    for entry in entries:
        target = dest / entry.path
        if target.exists():
            digest = sha256_file(target)
            if digest == entry.sha256:
                report.skipped.append(entry.path)
                continue
            if not overwrite:
                why = entry.variants.get(digest, "unrecognised content")
                report.kept.append((entry.path, why))
                if progress:
                    progress(f"kept {entry.path} ({why})")
                continue
        url = _url_for(entry, base_url)
        if url is None:
            report.unavailable.append(entry.path)
            continue
        if progress:
            progress(f"downloading {entry.path} ({entry.size:,} bytes) from {url}")
        target.parent.mkdir(parents=True, exist_ok=True)
        part = target.with_name(target.name + ".part")
        report.bytes_downloaded += _download(url, part, entry, timeout)
        digest = sha256_file(part)
        if digest != entry.sha256:
            size = part.stat().st_size
            part.unlink()
            raise CsrlError(
                f"{url}: downloaded content does not match the manifest for {entry.path} (sha256 "
                f"{digest[:16]}..., {size} bytes; expected {entry.sha256[:16]}..., {entry.size} bytes)",
                hint="the source or mirror serves different bytes; try another mirror with base_url=, or "
                f"place a verified copy at {target}",
            )
        os.replace(part, target)
        fsync_dir(target.parent)
        report.downloaded.append(entry.path)
    return report
