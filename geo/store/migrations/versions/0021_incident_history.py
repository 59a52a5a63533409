"""Incidents with history: a class's handling department, trusted API keys, imported incidents' source ids.

- ``incident_classes.department`` (处置部门): the department a class's cases go to by default (a city's own table).
- ``api_keys.trusted``: an integration whose stated report times are kept (Open311 ``requested_datetime``);
  other keys' reports are recorded at the server's time.
- an index on the source id an imported incident keeps in its first event (``detail->>'external_id'``), so an
  import finds incidents it already holds instead of adding them twice.

Revision ID: 0021_incident_history
Revises: 0020_wider_codes
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0021_incident_history"
down_revision = "0020_wider_codes"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("incident_classes", sa.Column("department", sa.String(100), nullable=True))
    op.add_column("api_keys", sa.Column("trusted", sa.Boolean(), nullable=False, server_default=sa.false()))
    op.create_index("ix_incident_events_external_id", "incident_events", [sa.text("(detail ->> 'external_id')")],
                    postgresql_where=sa.text("detail ? 'external_id'"))


def downgrade() -> None:
    op.drop_index("ix_incident_events_external_id", table_name="incident_events")
    op.drop_column("api_keys", "trusted")
    op.drop_column("incident_classes", "department")
