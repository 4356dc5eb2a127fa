"""training_runs: the process that runs it (host, pid, its start time), a heartbeat, and
why a run failed — so a killed run can be told from a running one

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_COLUMNS = (
    ("host", sa.String(length=255)),
    ("pid", sa.Integer()),
    ("process_started", sa.Float()),
    ("heartbeat_at", sa.DateTime(timezone=True)),
    ("failure", sa.String(length=1000)),
)


def upgrade() -> None:
    # nullable columns: SQLite adds them in place (no table copy, foreign keys untouched)
    for name, type_ in _COLUMNS:
        op.add_column("training_runs", sa.Column(name, type_, nullable=True))


def downgrade() -> None:
    for name, _ in reversed(_COLUMNS):
        op.execute(f"ALTER TABLE training_runs DROP COLUMN {name}")
