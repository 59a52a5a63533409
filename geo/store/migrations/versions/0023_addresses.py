"""Addresses (地址/门牌) of compounds and buildings, and the search key the phone's place search matches on.

`address` is free text as the source gives it ("巴陵东路 128号", "巴陵东路128号3栋"). `place_search_key(text)` is
the one normalisation the search compares (geo/features/places.py and maps/static/mobile/places.js repeat it):
NFKC (full-width digits and spaces), lower case, "3号楼"/"3幢"/"3座"/"3 栋" → "3栋", "128号" → "128" (a "#" keeps
two numbers apart: "128号3栋" → "128#3栋"), no spaces. The keys of name and address are stored generated columns
(`name_key`, `address_key`: five regular expressions per row are paid once on write, not on every search), with
trigram (pg_trgm, in postgresql-contrib) GIN indexes that serve ``LIKE '%…%'`` over a whole district; pg_trgm is a
trusted extension, so the schema owner creates it without superuser rights. The downgrade leaves the extension
installed (other objects may use it).

Revision ID: 0023_addresses
Revises: 0022_incident_partitions
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0023_addresses"
down_revision = "0022_incident_partitions"
branch_labels = None
depends_on = None

_SPACE = r"[ \t\n\r\f\v]"
#: Same steps, same order as geo.features.places.search_key.
KEY_FUNCTION = rf"""
CREATE FUNCTION place_search_key(s text) RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
RETURN regexp_replace(regexp_replace(regexp_replace(regexp_replace(regexp_replace(
    lower(normalize(s, NFKC)),
    '([0-9]){_SPACE}*(号楼|幢|座|栋)', '\1栋', 'g'),
    '([0-9]){_SPACE}*号{_SPACE}*', '\1#', 'g'),
    '([0-9]){_SPACE}+(?=[0-9])', '\1#', 'g'),
    '{_SPACE}+', '', 'g'),
    '#(?![0-9])', '', 'g')
"""

TABLES = ("compounds", "buildings")


def upgrade() -> None:
    op.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
    op.execute(KEY_FUNCTION)
    for table in TABLES:
        op.add_column(table, sa.Column("address", sa.Text(), nullable=True))
        op.add_column(table, sa.Column("name_key", sa.Text(), sa.Computed("place_search_key((name)::text)",
                                                                          persisted=True), nullable=True))
        op.add_column(table, sa.Column("address_key", sa.Text(), sa.Computed("place_search_key(address)",
                                                                             persisted=True), nullable=True))
        for column in ("name_key", "address_key"):
            op.execute(f"CREATE INDEX ix_{table}_{column} ON {table} USING gin ({column} gin_trgm_ops)")


def downgrade() -> None:
    for table in TABLES:
        for column in ("name_key", "address_key"):
            op.execute(f"DROP INDEX ix_{table}_{column}")
        op.drop_column(table, "address_key")
        op.drop_column(table, "name_key")
        op.drop_column(table, "address")
    op.execute("DROP FUNCTION place_search_key(text)")
