from __future__ import annotations

import hashlib
import os
import re
import shutil
import socket
import threading
from collections.abc import Iterator
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from csrl.data.fetch import fetch
from csrl.data.manifest import ManifestEntry, check_data_dir, default_manifest, select_entries
from csrl.errors import CsrlError

# Small real files, used when CSRL_DATA_DIR is set; otherwise fake files with a fake manifest.
REAL_SMALL = ["sts/sts13/STS.gs.FNWN.txt", "sts/sts13/STS.input.FNWN.txt", "nli/nli_for_simcse.sample.csv"]


class MirrorHandler(BaseHTTPRequestHandler):
    """Serves files under ``root``; honours ``Range: bytes=N-``; logs every request."""

    root: Path
    log: list[tuple[str, str | None]]

    def do_GET(self) -> None:  # noqa: N802 (http.server API)
        self.log.append((self.path, self.headers.get("Range")))
        target = self.root / self.path.lstrip("/")
        if not target.is_file():
            self.send_error(404)
            return
        data = target.read_bytes()
        m = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
        if m:
            start = int(m.group(1))
            if start >= len(data):
                self.send_error(416)
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            data = data[start:]
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


class Mirror:
    def __init__(self, root: Path) -> None:
        self.log: list[tuple[str, str | None]] = []
        handler = type("H", (MirrorHandler,), {"root": root, "log": self.log})
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.02,), daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def entry_for(root: Path, rel: str, group: str = "sts", task: str = "fake", required: bool = True) -> ManifestEntry:
    data = (root / rel).read_bytes()
    return ManifestEntry(rel, hashlib.sha256(data).hexdigest(), len(data), group, task, required)


@pytest.fixture
def mirror_tree(tmp_path: Path) -> tuple[Path, list[ManifestEntry]]:
    src = tmp_path / "mirror"
    real = os.environ.get("CSRL_DATA_DIR")
    if real:
        known = {e.path: e for e in default_manifest()}
        for rel in REAL_SMALL:
            (src / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(Path(real) / rel, src / rel)
        entries = [known[rel] for rel in REAL_SMALL]
    else:
        files = {
            "sts/sts13/STS.gs.FNWN.txt": b"4.0\n3.2\n",
            "sts/sts13/STS.input.FNWN.txt": "a man\tun homme\nb\tc é\n".encode() * 500,
            "nli/nli_for_simcse.sample.csv": b"sent0,sent1,hard_neg\na,b,c\n",
        }
        for rel, data in files.items():
            (src / rel).parent.mkdir(parents=True, exist_ok=True)
            (src / rel).write_bytes(data)
        entries = [
            entry_for(src, "sts/sts13/STS.gs.FNWN.txt", task="sts13"),
            entry_for(src, "sts/sts13/STS.input.FNWN.txt", task="sts13"),
            entry_for(src, "nli/nli_for_simcse.sample.csv", group="nli", task="nli-sample"),
        ]
    return src, entries


@pytest.fixture
def mirror(mirror_tree: tuple[Path, list[ManifestEntry]]) -> Iterator[Mirror]:
    m = Mirror(mirror_tree[0])
    yield m
    m.close()


def test_fetch_verifies_and_skips_present(
    tmp_path: Path, mirror: Mirror, mirror_tree: tuple[Path, list[ManifestEntry]]
) -> None:
    src, entries = mirror_tree
    dest = tmp_path / "data"
    report = fetch(dest, base_url=mirror.url, tasks=("sts", "nli"), manifest=entries)
    assert sorted(report.downloaded) == sorted(e.path for e in entries)
    assert report.bytes_downloaded == sum(e.size for e in entries)
    for e in entries:
        assert (dest / e.path).read_bytes() == (src / e.path).read_bytes()
    assert not list(dest.rglob("*.part"))
    n_requests = len(mirror.log)
    again = fetch(dest, base_url=mirror.url, tasks=("sts", "nli"), manifest=entries)
    assert sorted(again.skipped) == sorted(e.path for e in entries) and again.downloaded == []
    assert len(mirror.log) == n_requests  # nothing requested for verified files
    assert "3 already present" in again.to_text()
    only = fetch(tmp_path / "other", base_url=mirror.url, tasks=("nli",), manifest=entries)
    assert only.downloaded == ["nli/nli_for_simcse.sample.csv"]


def test_hash_mismatch_raises_and_leaves_nothing(
    tmp_path: Path, mirror: Mirror, mirror_tree: tuple[Path, list[ManifestEntry]]
) -> None:
    _, entries = mirror_tree
    bad = [replace(entries[1], sha256="0" * 64)]
    dest = tmp_path / "data"
    with pytest.raises(CsrlError) as e:
        fetch(dest, base_url=mirror.url, tasks=("sts",), manifest=bad)
    msg = str(e.value)
    assert mirror.url in msg and entries[1].path in msg and "does not match" in msg and "base_url" in msg
    assert not (dest / entries[1].path).exists()
    assert [p for p in dest.rglob("*") if p.is_file()] == []


def test_resume_partial_download(tmp_path: Path, mirror: Mirror, mirror_tree: tuple[Path, list[ManifestEntry]]) -> None:
    src, entries = mirror_tree
    e = entries[1]
    dest = tmp_path / "data"
    part = dest / (e.path + ".part")
    part.parent.mkdir(parents=True)
    half = e.size // 2
    part.write_bytes((src / e.path).read_bytes()[:half])
    report = fetch(dest, base_url=mirror.url, tasks=("sts13",), manifest=[e])
    assert report.downloaded == [e.path] and report.bytes_downloaded == e.size - half
    assert mirror.log[-1][1] == f"bytes={half}-"
    assert (dest / e.path).read_bytes() == (src / e.path).read_bytes() and not part.exists()


def test_existing_other_content_is_kept_unless_overwrite(
    tmp_path: Path, mirror: Mirror, mirror_tree: tuple[Path, list[ManifestEntry]]
) -> None:
    src, entries = mirror_tree
    e = replace(entries[0], variants={hashlib.sha256(b"variant\n").hexdigest(): "test variant"})
    dest = tmp_path / "data"
    (dest / e.path).parent.mkdir(parents=True)
    (dest / e.path).write_bytes(b"variant\n")
    report = fetch(dest, base_url=mirror.url, tasks=("sts",), manifest=[e])
    assert report.kept == [(e.path, "test variant")] and (dest / e.path).read_bytes() == b"variant\n"
    assert "overwrite=True" in report.to_text()
    report = fetch(dest, base_url=mirror.url, tasks=("sts",), manifest=[e], overwrite=True)
    assert report.downloaded == [e.path] and (dest / e.path).read_bytes() == (src / e.path).read_bytes()


def test_network_failures_name_url_and_remedies(tmp_path: Path, mirror_tree: tuple[Path, list[ManifestEntry]]) -> None:
    _, entries = mirror_tree
    with socket.socket() as s:  # a port with nobody listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    base = f"http://127.0.0.1:{port}"
    with pytest.raises(CsrlError) as e:
        fetch(tmp_path / "d", base_url=base, tasks=("sts",), manifest=entries, timeout=5)
    msg = str(e.value)
    assert f"could not download {base}/{entries[0].path}" in msg
    assert "CSRL_DATA_DIR" in msg and "--data-dir" in msg and "mirror" in msg


def test_http_404(tmp_path: Path, mirror: Mirror, mirror_tree: tuple[Path, list[ManifestEntry]]) -> None:
    _, entries = mirror_tree
    ghost = replace(entries[0], path="sts/sts13/STS.gs.none.txt")
    with pytest.raises(CsrlError, match=r"could not download .*STS.gs.none.txt: HTTP 404"):
        fetch(tmp_path / "d", base_url=mirror.url, tasks=("sts",), manifest=[ghost])


def test_check_reports_ok_missing_variant_unrecognised(
    tmp_path: Path, mirror: Mirror, mirror_tree: tuple[Path, list[ManifestEntry]]
) -> None:
    _, entries = mirror_tree
    variant = b"other tokenization\n"
    entries = [replace(entries[1], variants={hashlib.sha256(variant).hexdigest(): "alt tokenization"})] + [
        entries[0],
        entries[2],
        ManifestEntry("sts/sts13/README.txt", "f" * 64, 10, "sts", "sts13", required=False),
    ]
    dest = tmp_path / "data"
    fetch(dest, base_url=mirror.url, tasks=("all",), manifest=entries[:3])
    (dest / "unknown-extra.txt").write_text("ignored")
    report = check_data_dir(dest, manifest=entries)
    assert report.ok and report.count("ok") == 3 and report.count("missing") == 1  # only the optional readme
    assert set(report.runnable_tasks) == {entries[0].task, entries[2].task}
    assert "1 optional file(s) missing" in report.to_text()

    (dest / entries[0].path).write_bytes(variant)
    (dest / entries[2].path).write_bytes(b"edited\n")
    report = check_data_dir(dest, manifest=entries)
    assert report.ok  # a variant or an unrecognised file is a warning, not an error
    statuses = {f.entry.path: f.status for f in report.files}
    assert statuses[entries[0].path] == "variant" and statuses[entries[2].path] == "unrecognised"
    text = report.to_text()
    assert "alt tokenization variant" in text and f"warning: {entries[2].path} has unexpected content" in text

    (dest / entries[1].path).unlink()
    report = check_data_dir(dest, manifest=entries)
    assert not report.ok and report.missing_required() == {entries[1].task: [entries[1].path]}
    assert entries[1].task not in report.runnable_tasks
    assert f"NOT runnable: {entries[1].task}" in report.to_text() and "to fix:" in report.to_text()
    assert check_data_dir(dest, tasks=("nli",), manifest=entries).ok  # filtered to runnable tasks

    with pytest.raises(CsrlError, match="data directory not found"):
        check_data_dir(tmp_path / "absent")


def test_default_manifest_is_complete_and_pinned() -> None:
    m = default_manifest()
    assert len(m) == 222 and len({e.path for e in m}) == 222
    fetchable = [e for e in m if e.group != "train-extra"]
    assert all(e.url and e.url.startswith("https://raw.githubusercontent.com/") for e in fetchable)
    for e in fetchable:
        assert e.url is not None
        commit = e.url.split("/")[5]
        assert re.fullmatch(r"[0-9a-f]{40}", commit) or e.url.startswith(
            "https://raw.githubusercontent.com/brmson/dataset-sts/e1d3375/"
        ), e.url
    tasks = {e.task for e in m if e.required}
    assert {"sts12", "sts13", "sts14", "sts15", "sts16", "stsb", "sickr", "snli", "mrpc", "wiki1m-head"} <= tasks
    by_path = {e.path: e for e in m}
    assert by_path["sts/sts13/STS.input.FNWN.txt"].required and not by_path["sts/sts13/STS.gs.SMT.txt"].required
    assert by_path["sts/sts12/STS.input.MSRpar.txt"].variants  # the yan-soares tokenization is known
    assert by_path["sts/stsb/sts-dev.csv"].url == (
        "https://raw.githubusercontent.com/amao0o0/SynWMD/4ad176952dd17f66c96a206d9fdbb6ff52658380"
        "/data/downstream/STS/STSBenchmark/sts-dev.csv"
    )
    assert len(select_entries(["sts"])) == 65
    with pytest.raises(CsrlError, match="unknown data group or task: sts17"):
        select_entries(["sts17"])
    assert {e.group for e in select_entries(["train"])} == {"wiki", "train-extra"}


def test_files_without_public_url_are_reported(tmp_path: Path) -> None:
    entry = ManifestEntry("train/x/x.sent.txt", "0" * 64, 3, "train-extra", "train-extra", True)
    report = fetch(tmp_path, tasks="train-extra", manifest=[entry])
    assert report.unavailable == [entry.path] and report.downloaded == []
    assert "no public source" in report.to_text() and "base_url" in report.to_text()


def test_real_data_dir_checks_ok() -> None:
    root = os.environ.get("CSRL_DATA_DIR")
    if not root:
        pytest.skip("CSRL_DATA_DIR not set")
    report = check_data_dir(Path(root))
    assert report.ok and report.count("ok") == len(report.files) == 222, report.to_text()
