"""What the vendor delivered for an order: links and photos (table order_deliverable, 0013).

Written by the apply step (`service.vendor_news`) inside its transaction, read by `orders show`,
`explain` and the console (`deliverables_for`). A link is (kind 'link', name = its key such as
photo_manage_link, sequence 0); a photo is (kind 'photo', name 'photo', sequence = the photo's
sequence, else its place in the delivery).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from propready.adapters.store.schema import order_deliverable
from propready.core.vendor_news import Photo

_table = order_deliverable
LINK = "link"
PHOTO = "photo"


@dataclass(frozen=True, slots=True)
class Deliverable:
    """One link or photo the vendor delivered for an order."""

    kind: str  # link | photo
    name: str  # the link's key (photo_manage_link, zillow_3d_link, ...) or "photo"
    url: str
    sequence: int
    caption: str | None
    uploaded_at: datetime | None = None
    modified_at: datetime | None = None

    @classmethod
    def from_row(cls, row: Mapping[str, Any] | sa.RowMapping) -> Deliverable:
        return cls(
            kind=str(row["kind"]),
            name=str(row["name"]),
            url=str(row["url"]),
            sequence=int(row["sequence"]),
            caption=row["caption"],
            uploaded_at=row["uploaded_at"],
            modified_at=row["modified_at"],
        )


def deliverables_for(connection: sa.Connection, order_id: int) -> list[Deliverable]:
    """The order's links (by name) then its photos (by sequence)."""
    rows = connection.execute(
        sa.select(_table)
        .where(_table.c.order_id == order_id)
        .order_by(sa.case((_table.c.kind == LINK, 0), else_=1), _table.c.name, _table.c.sequence)
    ).mappings()
    return [Deliverable.from_row(row) for row in rows]


def counts_for(connection: sa.Connection, order_id: int) -> dict[str, int]:
    """{'link': n, 'photo': m} for one order."""
    rows = connection.execute(
        sa.select(_table.c.kind, sa.func.count())
        .where(_table.c.order_id == order_id)
        .group_by(_table.c.kind)
    ).all()
    counts = {LINK: 0, PHOTO: 0}
    counts.update({str(kind): int(count) for kind, count in rows})
    return counts


def photo_rows(photos: tuple[Photo, ...]) -> list[dict[str, Any]]:
    """The photos as rows: sequence from the photo, else its place; photos without a URL are
    left out (nothing to show)."""
    rows = []
    seen: set[int] = set()
    for position, photo in enumerate(photos, start=1):
        url = (
            photo.full_size_url
            or photo.full_size_watermarked_url
            or next(iter(photo.urls.values()), None)
        )
        if url is None:
            continue
        sequence = photo.sequence if photo.sequence is not None else position
        if sequence in seen:  # two photos claiming one place: the later one keeps its position
            sequence = 100_000 + position
        seen.add(sequence)
        rows.append(
            {
                "kind": PHOTO,
                "name": PHOTO,
                "sequence": sequence,
                "url": url,
                "caption": photo.caption,
                "urls": dict(photo.urls),
                "uploaded_at": photo.uploaded_at,
                "modified_at": photo.modified_at,
            }
        )
    return rows


def link_rows(links: Mapping[str, str]) -> list[dict[str, Any]]:
    return [
        {
            "kind": LINK,
            "name": name[:100],
            "sequence": 0,
            "url": url,
            "caption": None,
            "urls": None,
            "uploaded_at": None,
            "modified_at": None,
        }
        for name, url in sorted(links.items())
    ]


def upsert(
    connection: sa.Connection,
    order_id: int,
    rows: list[dict[str, Any]],
    now: datetime,
    *,
    overwrite: bool,
) -> int:
    """Insert the rows; existing ones (same order, kind, name, sequence) are replaced when
    `overwrite` (the news is not older than what the order holds), else kept. Returns how many
    rows were written (an unchanged row counts when overwritten)."""
    if not rows:
        return 0
    insert = pg_insert if connection.dialect.name == "postgresql" else sqlite_insert
    keys = ["order_id", "kind", "name", "sequence"]
    written = 0
    for start in range(0, len(rows), _CHUNK):  # SQLite limits the parameters of a statement
        values = [{**row, "order_id": order_id, "stored_at": now} for row in rows[start:][:_CHUNK]]
        statement = insert(_table).values(values)
        if overwrite:
            excluded = statement.excluded
            statement = statement.on_conflict_do_update(
                index_elements=keys,
                set_={name: excluded[name] for name in _REPLACED},
            )
        else:
            statement = statement.on_conflict_do_nothing(index_elements=keys)
        written += int(connection.execute(statement).rowcount or 0)
    return written


_CHUNK = 500
_REPLACED = ("url", "caption", "urls", "uploaded_at", "modified_at", "stored_at")
