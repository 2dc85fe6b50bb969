"""``csrl encode`` as a library function: a file of sentences -> an ``.npy`` of embeddings."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from csrl.errors import CsrlError
from csrl.models.encoder import load_encoder
from csrl.utils.io import atomic_write_bytes
from csrl.utils.precision import autocast_dtype


def read_sentences(path: Path) -> list[str]:
    """One sentence per line, UTF-8; an empty line is an error naming the file and line."""
    if not path.is_file():
        raise CsrlError(f"input file {path} not found", hint="pass a text file with one sentence per line")
    try:
        sentences = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise CsrlError(f"{path}: not UTF-8 at byte {exc.start}", hint="re-encode it, e.g. iconv -t utf-8") from None
    for k, s in enumerate(sentences, start=1):
        if not s.strip():
            raise CsrlError(f"{path}:{k}: empty line", hint="remove blank lines: every line must hold one sentence")
    return sentences


def encode_file(
    model: str,
    input_path: Path | str,
    output_path: Path | str,
    *,
    pooler: str | None = None,
    batch_size: int = 128,
    precision: str = "fp32",
    normalize: bool = False,
    device: str | None = None,
) -> np.ndarray:
    """Embed every line of ``input_path`` and write the array to ``output_path`` (``.npy``, atomically)."""
    sentences = read_sentences(Path(input_path))
    enc = load_encoder(model, pooler=pooler, device=device)
    dtype = autocast_dtype(precision, enc.device.type, setting="--precision")
    emb = enc.encode(sentences, batch_size=batch_size, normalize=normalize, autocast_dtype=dtype)
    buf = io.BytesIO()
    np.save(buf, emb)
    atomic_write_bytes(Path(output_path), buf.getvalue())
    return emb


__all__ = ["encode_file", "read_sentences"]
