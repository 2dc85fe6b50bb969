"""``csrl encode`` as a library function: a file of sentences -> an ``.npy`` of embeddings."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from csrl.data.corpora import read_lines
from csrl.errors import CsrlError
from csrl.models.encoder import load_encoder
from csrl.utils.io import atomic_write_bytes
from csrl.utils.precision import autocast_dtype


def read_sentences(path: Path) -> list[str]:
    """One sentence per ``\\n`` line, UTF-8 (:func:`csrl.data.corpora.read_lines`: row ``k`` of the output is
    line ``k``, as ``wc -l`` and ``sed -n kp`` count); an empty line is an error naming the file and line."""
    sentences = read_lines(path, what="input file")
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
    precision: str = "auto",
    normalize: bool = False,
    device: str | None = None,
) -> np.ndarray:
    """Embed every line of ``input_path`` and write the array to ``output_path`` (``.npy``, atomically).

    ``precision``: ``auto`` (bf16 autocast where the device has native bf16, else fp32), fp32, bf16, fp16.
    """
    sentences = read_sentences(Path(input_path))
    enc = load_encoder(model, pooler=pooler, device=device)
    dtype = autocast_dtype(precision, enc.device.type, setting="--precision")
    emb = enc.encode(sentences, batch_size=batch_size, normalize=normalize, autocast_dtype=dtype)
    buf = io.BytesIO()
    np.save(buf, emb)
    atomic_write_bytes(Path(output_path), buf.getvalue())
    return emb


__all__ = ["encode_file", "read_sentences"]
