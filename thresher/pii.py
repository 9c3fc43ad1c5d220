"""Personal data in published text: e-mail addresses, IP addresses and phone numbers.

:func:`redact` replaces each address or number found in a column of
documents by a placeholder (:data:`PLACEHOLDERS`) and counts, per document,
how many of each kind it replaced. The materialise stage calls it on the
text it publishes when the config asks (``materialize.redact``); nothing
else of a run (scores, decisions, the audit of drops) sees redacted text.

Everything runs as Arrow compute functions on whole arrays (RE2 regular
expressions: ``match_substring_regex`` finds the documents that hold a
candidate, ``replace_substring_regex`` rewrites only those), so both
engines redact in vectorised code where the data is, and give the same
bytes. The patterns follow the e-mail and IPv4 patterns of datatrove's
``PIIFormatter`` (themselves from the BigScience and Dolma pipelines),
with guards against what merely looks like an address:

- **e-mail** (``<EMAIL>``): ``local@domain.tld``; the local part is
  words of letters, digits and ``_%+-`` (plus-addressing), each starting
  with a letter, digit or ``_``, with single dots between them (RFC 5322's
  rarer ``/=?{}'`` are left out, so the quote, brace, dash or URL around an
  address stays), the domain has at least two
  labels of letters, digits and inner hyphens, and its last label is 2 to
  63 letters. Not an address: ``user@`` and ``user@localhost`` (no
  domain), ``@handle``, an image's size suffix (``logo@2x.png``: a first
  label of digits and ``x``), and text after the TLD that continues the
  word (``a@b.com2``). ASCII addresses only.
- **IP** (``<IP>``): IPv4 in dotted-quad form (each octet 0 to 255, no
  leading zeros) and IPv6 in full form (eight groups) or compressed with
  ``::`` naming at least three groups (``2001:db8::7334``; an IPv4 tail,
  ``::ffff:192.0.2.1``, counts for two), optionally with a ``%zone``
  left in place. Not an address: a run of four numbers that is part of a
  longer dotted run (``1.2.3.4.5``, a version ``10.0.0.1.2``, a file
  ``1.2.3.4.txt``) or glued to a letter (``v10.0.0.1``: a version);
  ``::1``, ``fe80::1`` and other forms of fewer than three groups (the
  loopback and link-local addresses, which name no one, and Python slices
  such as ``a[1::2]``); names such as ``std::vector``; times
  (``12:30:45``) and MAC addresses (six groups). A version written as four
  numbers after a space (``version 10.0.0.1``) has an address's form and is
  redacted. Every valid address is redacted, private and loopback IPv4
  addresses included (datatrove redacts public addresses only by default).
- **phone** (``<PHONE>``): numbers with a plausible structure, in four
  families: international (``+`` and 7 to 15 digits, at most one space,
  dot or hyphen between two of them: ``+44 20 7946 0958``,
  ``+15551234567``; or a country code, an area code in parentheses or a
  ``(0)`` trunk, and 5 to 12 more digits: ``+1 (555) 123-4567``,
  ``+33 (0)1 23 45 67 89``);
  North American (``(555) 123-4567``, ``555-123-4567``, ``555.123.4567``,
  ``1-800-555-0199``; the area code does not start with 0 or 1); national
  with a trunk ``0`` and an area code (``020 7946 0958``,
  ``(020) 7946 0958``, ``01632 960123``: 9 to 13 digits); French
  (``01 23 45 67 89``, ``06.12.34.56.78``). Not a phone: digits without
  separators unless after ``+`` (ids, ``5551234567``), dates
  (``2024-01-15``, ``15/01/2024``, ``01.02.2024``), times, prices
  (``$1,234.56``), versions (``3.10.12``), ISBNs (``978-0-306-40615-7``)
  and numbers in text (``1 234 567``).

The kinds run in the order e-mail, IPv6, IPv4, phone: the IPv4 tail of an
IPv6 address goes with it, and the digits of an address are never taken
for a phone. A placeholder is never longer than what it replaces, and the
text around each match is kept byte for byte.

Not found: names, postal addresses, spelled-out addresses (``john at
example dot com``), addresses with non-ASCII characters, phone numbers
without separators or ``+`` and national formats outside the families
above. Only the text column is redacted, not other published columns.

References
----------
Penedo et al. 2024, "The FineWeb Datasets" (datatrove's ``PIIFormatter``);
Soldaini et al. 2024, "Dolma" (its PII regular expressions); Laurençon et
al. 2022, "The BigScience ROOTS Corpus" (e-mail and IP redaction).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

#: What a trainer finds where each kind of personal data was.
PLACEHOLDERS = {"email": "<EMAIL>", "ip": "<IP>", "phone": "<PHONE>"}
#: The kinds :func:`redact` knows, in the order it looks for them.
KINDS = tuple(PLACEHOLDERS)

# -- e-mail ------------------------------------------------------------------------------------
#: A part of the local name: a letter, digit or ``_``, then also ``%+-`` (plus-addressing).
#: RFC 5322 allows more (``/=?{}'``...), rare in addresses and common around them.
_ATOM = r"[A-Za-z0-9_][A-Za-z0-9_%+-]*"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
#: The domain's first label: any label but digits followed by ``x`` (``logo@2x.png``).
_FIRST_LABEL = (
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-WYZa-wyz0-9])?"  # not ending in x
    r"|(?:[A-Za-z]|[0-9]+[A-Za-z-])[A-Za-z0-9-]{0,60}[xX]"  # a non-digit before the final x
    r")"
)
_EMAIL = rf"{_ATOM}(?:\.{_ATOM})*@{_FIRST_LABEL}\.(?:{_LABEL}\.)*[A-Za-z]{{2,63}}\b"

# -- IP ----------------------------------------------------------------------------------------
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_IPV4 = rf"{_OCTET}(?:\.{_OCTET}){{3}}"
_HEX = r"[0-9A-Fa-f]{1,4}"


def _ipv6() -> str:
    """IPv6: eight groups, or ``::`` with three to seven groups around it (an IPv4 tail: two)."""
    forms = [rf"(?:{_HEX}:){{7}}{_HEX}", rf"(?:{_HEX}:){{6}}{_IPV4}"]
    for tail, width in ((_HEX, 1), (_IPV4, 2)):
        for left in range(8):
            for right in range(width, 8 - left):
                if left + right < 3:
                    continue
                head = rf"{_HEX}(?::{_HEX}){{{left - 1}}}" if left else ""
                middle = rf"(?:{_HEX}:){{{right - width}}}" if right > width else ""
                forms.append(f"{head}::{middle}{tail}")
            if width == 1 and left >= 3:
                forms.append(rf"{_HEX}(?::{_HEX}){{{left - 1}}}::")  # nothing after ``::``
    return "(?:" + "|".join(forms) + ")"


_IPV6 = _ipv6()

# -- phone -------------------------------------------------------------------------------------
_PHONE = "|".join(
    [
        r"\B\+[1-9](?:[ .-]?[0-9]){6,14}\b",  # international: 7 to 15 digits
        r"\B\+[1-9][0-9]{0,2} ?\(0\) ?[1-9](?:[ .-]?[0-9]){5,11}\b",  # +33 (0)1 23 45 67 89
        r"\B\+[1-9][0-9]{0,2}[ .-]?\([0-9]{1,4}\) ?[0-9](?:[ .-]?[0-9]){4,10}\b",  # +1 (555) ...
        r"(?:\b1[ .-]?\(|\B\()[2-9][0-9]{2}\) ?[0-9]{3}[ .-][0-9]{4}\b",  # (555) 123-4567
        r"\b(?:1[ .-])?[2-9][0-9]{2}[ .-][0-9]{3}[ .-][0-9]{4}\b",  # 555-123-4567
        r"(?:\b0[1-9][0-9]{1,3}|\B\(0[1-9][0-9]{1,3}\))[ -][0-9]{3,4}[ -]?[0-9]{3,4}\b",  # trunk 0
        r"\b0[1-9](?:[ .-][0-9]{2}){4}\b",  # French
    ]
)

#: Characters that continue a number or a name: an address next to one is part of something else.
_WORD = "0-9A-Za-z_"


@dataclass(frozen=True)
class _Rule:
    """One RE2 rewrite: ``find`` picks the rows that hold a candidate, ``pattern`` rewrites them.

    A ``pattern`` made by :func:`_guarded` keeps the characters around a
    match (groups 1 and 2, written back by ``rewrite``), since RE2 has no
    look-around; a match then holds the character before the next candidate,
    which the next of ``passes`` rewrites finds.
    """

    find: str
    pattern: str
    rewrite: str
    passes: int = 1

    def apply(self, texts: pa.Array, placeholder: str) -> tuple[pa.Array, pa.Array]:
        """``texts`` rewritten where ``find`` matches, and the replacements per row (int32).

        Placeholders are only ever added (no pattern matches inside one, nor
        across its edges), so a row's count is the placeholders it gained.
        """
        counts = pa.nulls(len(texts), pa.int32()).fill_null(0)
        hit = pc.fill_null(pc.match_substring_regex(texts, self.find), False)
        if not pc.any(hit).as_py():
            return texts, counts
        rows = texts.filter(hit)
        before = pc.count_substring(rows, placeholder)
        for _ in range(self.passes):
            rows = pc.replace_substring_regex(rows, self.pattern, self.rewrite)
        gained = pc.subtract(pc.count_substring(rows, placeholder), before).cast(pa.int32())
        return pc.replace_with_mask(texts, hit, rows), pc.replace_with_mask(counts, hit, gained)


def _guarded(core: str, before: str, after: str) -> str:
    """``core`` not preceded by a character of ``before`` nor followed by one of ``after``.

    Nor followed by a dot and one of ``after`` (``1.2.3.4.5``), while a dot
    that ends a sentence may follow. Used for the IP patterns, whose inner
    characters (hex digits, dots, colons) all belong to ``before``: a
    candidate skipped because the previous match took its first neighbour
    cannot match in part, and the second pass finds it whole.
    """
    return rf"(^|[^{before}])(?:{core})($|[^{after}.]|\.$|\.[^{after}])"


_RULES = {
    "email": (_Rule(_EMAIL, _EMAIL, PLACEHOLDERS["email"]),),
    "ip": (
        _Rule(_IPV6, _guarded(_IPV6, _WORD + ":.", _WORD + ":"), r"\1<IP>\2", passes=2),
        _Rule(_IPV4, _guarded(_IPV4, _WORD + ".", _WORD), r"\1<IP>\2", passes=2),
    ),
    "phone": (_Rule(_PHONE, _PHONE, PLACEHOLDERS["phone"]),),
}


def check_kinds(kinds: Sequence[str]) -> tuple[str, ...]:
    """``kinds`` in :data:`KINDS` order; ValueError naming an unknown or repeated kind."""
    unknown = [kind for kind in kinds if kind not in PLACEHOLDERS]
    if unknown:
        raise ValueError(f"unknown kind(s) {unknown}; known: {', '.join(KINDS)}")
    repeated = sorted({kind for kind in kinds if list(kinds).count(kind) > 1})
    if repeated:
        raise ValueError(f"kind(s) {repeated} listed twice")
    return tuple(kind for kind in KINDS if kind in kinds)


def counts_type(kinds: Sequence[str]) -> pa.StructType:
    """The per-document counts column: one int32 field per kind, in :data:`KINDS` order."""
    return pa.struct([pa.field(kind, pa.int32(), nullable=False) for kind in check_kinds(kinds)])


def redact(texts: pa.Array | pa.ChunkedArray, kinds: Sequence[str]) -> tuple[pa.Array, pa.Array]:
    """``texts`` with every address or number of ``kinds`` replaced, and the counts per row.

    Parameters
    ----------
    texts : pa.Array or pa.ChunkedArray of string or large_string, shape (n,)
        The documents; a null stays null (and counts nothing).
    kinds : sequence of str
        Which kinds to replace, any of :data:`KINDS`.

    Returns
    -------
    redacted : pa.Array, same type and length as ``texts``
        Each match replaced by its kind's placeholder (:data:`PLACEHOLDERS`),
        every other byte as it was.
    counts : pa.StructArray of :func:`counts_type`, shape (n,)
        How many matches of each kind each document had.
    """
    ordered = check_kinds(kinds)
    if isinstance(texts, pa.ChunkedArray):
        texts = texts.combine_chunks()
    fields = []
    for kind in ordered:
        total = pa.nulls(len(texts), pa.int32()).fill_null(0)
        for rule in _RULES[kind]:
            texts, found = rule.apply(texts, PLACEHOLDERS[kind])
            total = pc.add(total, found)
        fields.append(total)
    counts = pa.StructArray.from_arrays(fields, fields=list(counts_type(ordered)))
    return texts, counts


def redact_text(text: str, kinds: Sequence[str] = KINDS) -> tuple[str, dict[str, int]]:
    """One document redacted (:func:`redact`), and its counts per kind."""
    redacted, counts = redact(pa.array([text], pa.string()), kinds)
    return redacted[0].as_py(), counts[0].as_py()
