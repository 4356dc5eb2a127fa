"""ls_events.via: a CHECK that an event came by ``webhook`` or ``poll`` (every other state
column has had its CHECK since it was made)

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from tomoloop.errors import TomoloopError

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# the values of tomoloop.db.states.EventVia at this revision (a migration is a snapshot)
_VIA = ("webhook", "poll")
_CHECK = f"via IN ({', '.join(repr(v) for v in _VIA)})"


def upgrade() -> None:
    others = (
        op.get_bind()
        .execute(sa.text(f"SELECT DISTINCT via FROM ls_events WHERE NOT ({_CHECK})"))
        .scalars()
        .all()
    )
    if others:
        raise TomoloopError(
            f"ls_events holds events that came by {sorted(others)}, not {list(_VIA)}: "
            "correct those rows (tomoloop writes only these two), then upgrade again"
        )
    # batch mode copies the table on SQLite: safe here, no table refers to ls_events
    with op.batch_alter_table("ls_events") as batch:
        batch.create_check_constraint("via", _CHECK)


def downgrade() -> None:
    with op.batch_alter_table("ls_events") as batch:
        batch.drop_constraint(op.f("ck_ls_events_via"), type_="check")
