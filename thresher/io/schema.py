"""Column names thresher uses internally, and the fixed schemas of its tables.

Ingest renames the configured id/text/label/features columns to ``id``,
``text``, ``label`` and ``features`` (list<float32>) and adds
``thresher_shard``/``thresher_row`` (the position of the record in the
input, a key that stays unique even when ids do not).
Materialisation renames them back, so the pruned dataset keeps the user's
column names. Which input columns play which role is a :class:`Roles`
(the run config's ``schema`` section is one), so that reading needs no
configuration module.
"""

from __future__ import annotations

from typing import Literal, Protocol

import pyarrow as pa

ID = "id"
TEXT = "text"
LABEL = "label"
FEATURES = "features"
SHARD = "thresher_shard"
ROW = "thresher_row"
#: The row's place in input order (shard rank, then row): see ``thresher.keys.order_key``.
ORDER = "thresher_order"
POSITION_COLUMNS = (SHARD, ROW)
IMPORTANCE_WEIGHT = "importance_weight"
#: How many times a kept row is used in training (upsampling), an int >= 1: the one
#: field every upsampling selector shares. The final selector sets it when it defines
#: repeat counts (``Selector.defines_repeats``, each kept row's count from its
#: ``Marks.repeats``); it is 1 for every other selector. Where it goes: the decisions'
#: ``repeat`` column (``versions/<v>/selection/``: the row's copies in the dataset, 0 for
#: a dropped row), the published dataset's ``repeat`` column when the selector repeats
#: (a trainer upsamples by it), and the manifest (``counts.kept_repeated``: kept rows
#: times their repeat). Budgets count a kept row ``repeat`` times, and its size ``repeat``
#: times for a sum budget (:mod:`thresher.budget`); every kept token sum (statistics,
#: manifest ``counts.tokens.kept``) is a sum of ``repeat x size``.
REPEAT = "repeat"
#: The column a ``{tokens: N}`` budget sums: the ``token_count`` scorer's default output.
TOKEN_COLUMN = "token_count"


class Roles(Protocol):
    """Which input columns play which role, and the limits ingest applies to them.

    What ingest reads from the run config's ``schema`` section
    (:class:`thresher.config.SchemaConfig`, which documents each field):
    ``None`` for a role no column plays, ``passthrough`` the other columns
    copied through (``"all"``: every one).
    """

    @property
    def id(self) -> str | None: ...

    @property
    def text(self) -> str | None: ...

    @property
    def label(self) -> str | None: ...

    @property
    def features(self) -> str | None: ...

    @property
    def passthrough(self) -> list[str] | Literal["all"]: ...

    @property
    def max_text_bytes(self) -> int | None: ...

    @property
    def max_passthrough_columns(self) -> int | None: ...


QUARANTINE_SCHEMA = pa.schema(
    [
        pa.field("shard", pa.string(), nullable=False),
        pa.field("row", pa.int64(), nullable=False),
        pa.field("id", pa.string()),
        pa.field("reason", pa.string(), nullable=False),
        pa.field("detail", pa.string()),
        pa.field("raw", pa.string()),
    ]
)

SELECTION_SCHEMA = pa.schema(
    [
        pa.field(ID, pa.string(), nullable=False),
        pa.field(SHARD, pa.int32(), nullable=False),
        pa.field(ROW, pa.int64(), nullable=False),
        pa.field("keep", pa.bool_(), nullable=False),
        pa.field("weight", pa.float64(), nullable=False),
        pa.field("reason", pa.string()),
        pa.field("detail", pa.string()),
        pa.field("group", pa.int64()),
        pa.field(REPEAT, pa.int64(), nullable=False),
    ]
)

DROPPED_SCHEMA = pa.schema(
    [
        pa.field(ID, pa.string(), nullable=False),
        pa.field("reason", pa.string(), nullable=False),
        pa.field("detail", pa.string()),
    ]
)
