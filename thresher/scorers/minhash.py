"""MinHash signatures for near-duplicate detection (the ``minhash`` scorer).

The scorer writes three columns per document, under its column name ``c``
(default ``minhash``):

- ``c``: the signature, ``num_perm`` uint32 values, little-endian, in
  ``4 * num_perm`` bytes (``binary``: Spark has no unsigned types, and one
  byte string per row is far cheaper to move through Spark and Arrow than a
  list). ``numpy.frombuffer(value, "<u4")`` reads it;
  :func:`thresher.dedup.shingles.to_lean_minhash` turns it into a
  ``datasketch.LeanMinHash``. Null when the document has no shingle after
  normalisation (it then takes part only in exact dedup).
- ``c_exact``: xxh3-128 digest (16 bytes) of the document's raw UTF-8 text,
  the key of the exact-duplicate pass.
- ``c_length``: number of characters of the raw text (the default keeper
  rule keeps the longest document of a duplicate cluster).

The dedup stage (``thresher.dedup``) reads these columns; see
``thresher.dedup.shingles`` for the normalisation, the shingles and how a
signature matches datasketch's.

References
----------
Broder, "On the resemblance and containment of documents", 1997.
Lee et al., "Deduplicating Training Data Makes Language Models Better", 2022.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import pyarrow as pa
import pyarrow.compute as pc

from thresher._params import Bool, Constraints, Integral, Interval, Options
from thresher.scorers.base import Scorer

_MAX_PERMUTATIONS = 1024


class MinHashScorer(Scorer):
    """MinHash signature, content hash and length of each document.

    Parameters
    ----------
    num_perm : int
        Number of permutations (signature length), 1 to 1024. Default 128.
    seed : int
        Seed of the permutations (datasketch's ``seed``; default 1, as there).
        Signatures made with different seeds or ``num_perm`` do not compare.
    ngram : int
        Shingle size in units. Default 5.
    unit : {"word", "char"}
        Word n-grams (default) or character n-grams.
    lowercase, punctuation, whitespace : bool
        Normalisation steps: lowercase, remove Unicode punctuation, collapse
        whitespace runs (character shingles only; words always split on
        whitespace). All on by default.
    """

    name: ClassVar[str] = "minhash"
    input_columns: ClassVar[tuple[str, ...]] = ("text",)
    output_type: ClassVar[pa.DataType] = pa.struct(
        [
            pa.field("signature", pa.binary()),
            pa.field("exact", pa.binary()),
            pa.field("length", pa.int64()),
        ]
    )
    _parameter_constraints: ClassVar[dict[str, Constraints]] = {
        "num_perm": [Interval(Integral, 1, _MAX_PERMUTATIONS)],
        "seed": [Interval(Integral, 0, 2**32, closed="left")],
        "ngram": [Interval(Integral, 1, None)],
        "unit": [Options("word", "char")],
        "lowercase": [Bool()],
        "punctuation": [Bool()],
        "whitespace": [Bool()],
    }

    def __init__(
        self,
        num_perm: int = 128,
        seed: int = 1,
        ngram: int = 5,
        unit: Literal["word", "char"] = "word",
        lowercase: bool = True,
        punctuation: bool = True,
        whitespace: bool = True,
    ) -> None:
        self.num_perm = num_perm
        self.seed = seed
        self.ngram = ngram
        self.unit = unit
        self.lowercase = lowercase
        self.punctuation = punctuation
        self.whitespace = whitespace

    def output_fields(self, column: str) -> list[pa.Field]:
        return [
            pa.field(column, pa.binary()),
            pa.field(f"{column}_exact", pa.binary()),
            pa.field(f"{column}_length", pa.int64()),
        ]

    def setup(self) -> None:
        from thresher.dedup.shingles import signature_matrix  # numba: imported where used

        self.validate_params()
        # Compile (or load from numba's cache) once per worker, not on the first batch.
        signature_matrix(pa.array(["warm up"]), num_perm=self.num_perm, seed=self.seed)

    def score(self, batch: pa.RecordBatch) -> pa.Array:
        from thresher.dedup.columns import signature_column
        from thresher.dedup.shingles import content_hashes, signature_matrix

        text = batch.column(batch.schema.get_field_index("text"))
        signatures, counts = signature_matrix(
            text,
            num_perm=self.num_perm,
            seed=self.seed,
            ngram=self.ngram,
            unit=self.unit,
            lowercase=self.lowercase,
            punctuation=self.punctuation,
            whitespace=self.whitespace,
        )
        signature = signature_column(signatures, counts > 0)
        exact = pa.array(content_hashes(text), pa.binary())
        length = pc.utf8_length(text).cast(pa.int64())
        return pa.StructArray.from_arrays([signature, exact, length], fields=list(self.output_type))
