"""round_items.region_y0 / region_x0 / region_size: the tile of its slice a region round
asks people to label (its plane and index are the slice's); NULL for a whole slice, which
every item stored before was

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from tomoloop.errors import TomoloopError

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_COLUMNS = ("region_y0", "region_x0", "region_size")
# the CHECK at this revision (a migration is a snapshot): a region is whole or absent
_CHECK = (
    "(region_y0 IS NULL AND region_x0 IS NULL AND region_size IS NULL) OR "
    "(region_y0 IS NOT NULL AND region_x0 IS NOT NULL AND region_size IS NOT NULL "
    "AND region_y0 >= 0 AND region_x0 >= 0 AND region_size >= 1)"
)


def upgrade() -> None:
    # batch mode copies the table on SQLite: safe here, no table refers to round_items
    with op.batch_alter_table("round_items") as batch:
        for name in _COLUMNS:
            batch.add_column(sa.Column(name, sa.Integer(), nullable=True))
        batch.create_check_constraint("region", _CHECK)


def downgrade() -> None:
    regional = (
        op.get_bind()
        .execute(sa.text("SELECT count(*) FROM round_items WHERE region_size IS NOT NULL"))
        .scalar_one()
    )
    if regional:
        raise TomoloopError(
            f"round_items holds {regional} region items, which revision 0007 cannot hold: "
            "stay at 0008 (downgrading would turn them into whole-slice items)"
        )
    with op.batch_alter_table("round_items") as batch:
        batch.drop_constraint(op.f("ck_round_items_region"), type_="check")
        for name in _COLUMNS:
            batch.drop_column(name)
