"""A Megatron-LM indexed dataset (``<prefix>.bin`` and ``<prefix>.idx``), written document by document.

The format is megatron-core's (``megatron/core/datasets/indexed_dataset.py``,
what ``IndexedDatasetBuilder`` writes and ``IndexedDataset`` reads): the
``.bin`` holds every document's token ids back to back; the ``.idx`` holds a
header (``MMIDIDX\\x00\\x00``, version 1, the token dtype's code), the number
of sequences and of document boundaries, then each sequence's length
(int32), its byte offset in the ``.bin`` (int64) and the document
boundaries (int64, ``0..n``: one document is one sequence).

The ``.bin`` streams to a local temporary file, so memory holds one
document, not the file (the ``.idx`` arrays cost 4 bytes a document until
:meth:`MegatronWriter.close`). ``close`` publishes the ``.bin`` whole (one
rename on a local disk, one upload on an object store), then the ``.idx``:
a reader that finds the ``.idx`` finds the ``.bin`` it describes. A writer
that fails publishes nothing.
"""

from __future__ import annotations

import contextlib
import os
import struct
import tempfile
from array import array
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np

from thresher.io.fs import Location
from thresher.io.sink import PublishedWhole

#: The first bytes of every ``.idx`` file.
INDEX_HEADER = b"MMIDIDX\x00\x00"
#: The only ``.idx`` version megatron-core reads.
INDEX_VERSION = 1
#: megatron-core's ``DType`` codes (the byte after the version in the ``.idx``).
DTYPE_CODES = {
    "uint8": 1,
    "int8": 2,
    "int16": 3,
    "int32": 4,
    "int64": 5,
    "float64": 6,
    "float32": 7,
    "uint16": 8,
}
#: Vocabularies smaller than this store tokens as uint16 (megatron's ``DType.optimal_dtype``).
UINT16_VOCAB_LIMIT = 65500
_COPY_CHUNK = 16 << 20


def megatron_dtype(vocab_size: int) -> np.dtype:
    """The token dtype megatron-core picks for a vocabulary: uint16 below 65,500 ids, else int32."""
    if vocab_size < 1:
        raise ValueError(f"vocab_size must be positive, got {vocab_size}")
    return np.dtype("<u2") if vocab_size < UINT16_VOCAB_LIMIT else np.dtype("<i4")


@dataclass(frozen=True)
class MegatronFiles:
    """What :meth:`MegatronWriter.close` published."""

    bin: Location
    idx: Location
    documents: int
    tokens: int
    bin_bytes: int
    idx_bytes: int


class MegatronWriter(PublishedWhole):
    """Writes one Megatron indexed dataset at ``prefix`` (see module docstring).

    Parameters
    ----------
    prefix : Location
        The dataset's path without extension (any store): the files are
        ``<prefix>.bin`` and ``<prefix>.idx``, the path megatron's
        ``IndexedDataset(prefix)`` opens.
    vocab_size : int
        The tokenizer's vocabulary size: it picks the token dtype, and every
        token id must be below it.
    """

    def __init__(self, prefix: Location, vocab_size: int) -> None:
        self.dtype = megatron_dtype(vocab_size)
        self.vocab_size = vocab_size
        self.bin = Location(prefix.uri + ".bin", prefix.options)
        self.idx = Location(prefix.uri + ".idx", prefix.options)
        self.documents = 0
        self.tokens = 0
        self._lengths = array("i")  # int32, as the .idx stores them
        #: What :meth:`close` published (set by it: a ``with`` block's result).
        self.files: MegatronFiles | None = None
        self._scratch, self._file = self._open_scratch()
        self._closed = False

    def _open_scratch(self) -> tuple[str, BinaryIO]:
        if self.bin.is_local:  # beside the target: publishing is one rename
            self.bin.parent.mkdir()
            path = self.bin.temporary_sibling().uri
            return path, open(path, "wb")  # closed by close() or abort()
        handle, path = tempfile.mkstemp(prefix="thresher-megatron-", suffix=".bin")
        return path, os.fdopen(handle, "wb")

    # -- writing ---------------------------------------------------------------------------
    def add_document(self, tokens: np.ndarray) -> None:
        """Append one document: its token ids, end-of-document token included (the caller's)."""
        if self._closed:
            raise ValueError("add_document on a closed MegatronWriter")
        ids = np.asarray(tokens)
        if ids.ndim != 1:
            raise ValueError(f"a document is a 1-d array of token ids, got shape {ids.shape}")
        if ids.size and ids.dtype.kind not in "iu":
            raise ValueError(f"token ids must be integers, got dtype {ids.dtype}")
        if ids.size and (int(ids.min()) < 0 or int(ids.max()) >= self.vocab_size):
            raise ValueError(
                f"token ids must lie in [0, {self.vocab_size}), "
                f"got [{int(ids.min())}, {int(ids.max())}]"
            )
        if ids.size > np.iinfo(np.int32).max:
            raise ValueError(f"a document of {ids.size} tokens exceeds the int32 length field")
        self._file.write(np.ascontiguousarray(ids, dtype=self.dtype).tobytes())
        self._lengths.append(ids.size)
        self.documents += 1
        self.tokens += ids.size

    # -- publishing ------------------------------------------------------------------------
    def index_bytes(self) -> bytes:
        """The ``.idx`` file describing the documents added so far."""
        lengths = np.frombuffer(self._lengths, dtype=np.int32) if self._lengths else np.zeros(0)
        lengths = lengths.astype("<i4", copy=False)
        pointers = np.zeros(len(lengths), dtype="<i8")
        if len(lengths) > 1:
            np.cumsum(lengths[:-1].astype("<i8") * self.dtype.itemsize, out=pointers[1:])
        documents = np.arange(len(lengths) + 1, dtype="<i8")
        header = (
            INDEX_HEADER
            + struct.pack("<Q", INDEX_VERSION)
            + struct.pack("<B", DTYPE_CODES[self.dtype.name])
            + struct.pack("<Q", len(lengths))
            + struct.pack("<Q", len(documents))
        )
        return header + lengths.tobytes() + pointers.tobytes() + documents.tobytes()

    def close(self) -> MegatronFiles:
        """Publish the ``.bin``, then the ``.idx`` (see module docstring)."""
        if self._closed:
            raise ValueError("MegatronWriter is already closed")
        try:
            self._file.close()
            bin_bytes = os.path.getsize(self._scratch)
            self._publish_bin()
            index = self.index_bytes()
            self.idx.write_bytes(index)
        finally:
            self._discard()
        self.files = MegatronFiles(
            bin=self.bin,
            idx=self.idx,
            documents=self.documents,
            tokens=self.tokens,
            bin_bytes=bin_bytes,
            idx_bytes=len(index),
        )
        return self.files

    def _publish_bin(self) -> None:
        if self.bin.is_local:
            os.replace(self._scratch, self.bin.uri)
            return
        target = self.bin
        with (
            open(self._scratch, "rb") as source,
            target.store.guard(
                target, lambda: target.fs.open_output_stream(target.path, compression=None)
            ) as stream,
        ):
            while chunk := source.read(_COPY_CHUNK):
                stream.write(chunk)

    # -- clean-up --------------------------------------------------------------------------
    def abort(self) -> None:
        """Forget everything written (nothing is published)."""
        with contextlib.suppress(Exception):
            self._file.close()
        self._discard()

    def _discard(self) -> None:
        self._closed = True
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._scratch)
