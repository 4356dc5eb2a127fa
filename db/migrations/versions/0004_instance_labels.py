"""annotations.kind: semantic (a class per pixel) or instance (one mask per particle)

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from tomoloop.errors import TomoloopError

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


_CHECK = "kind IN ('semantic', 'instance')"


def upgrade() -> None:
    # Not batch mode on SQLite: copying the table would break the foreign keys of the
    # labels in dataset versions and reviews; SQLite adds a column with its CHECK in place.
    if op.get_bind().dialect.name == "sqlite":
        op.execute(
            "ALTER TABLE annotations ADD COLUMN kind VARCHAR(10) DEFAULT 'semantic' NOT NULL "
            f"CONSTRAINT ck_annotations_kind CHECK ({_CHECK})"
        )
        return
    op.add_column(
        "annotations",
        sa.Column("kind", sa.String(length=10), server_default="semantic", nullable=False),
    )
    op.create_check_constraint(op.f("ck_annotations_kind"), "annotations", _CHECK)


def downgrade() -> None:
    drawn = (
        op.get_bind()
        .execute(sa.text("SELECT count(*) FROM annotations WHERE kind = 'instance'"))
        .scalar_one()
    )
    if drawn:
        # without the column they would read as class masks and win over auto labels
        raise TomoloopError(
            f"the registry holds {drawn} instance labels, which revision 0003 cannot tell "
            "from semantic ones: downgrading would corrupt training data; stay at 0004"
        )
    if op.get_bind().dialect.name == "sqlite":
        op.execute("ALTER TABLE annotations DROP COLUMN kind")
        return
    op.drop_constraint(op.f("ck_annotations_kind"), "annotations", type_="check")
    op.drop_column("annotations", "kind")
