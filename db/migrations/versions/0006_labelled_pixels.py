"""annotations.labelled_px: the pixels a semantic label labels (sparse labels cover part of
a slice), filled for the labels already stored

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02
"""

import json
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from tomoloop.labels.masks import labelled_pixels

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# h × w of a slice from its volume's (z, y, x) shape: z → (y, x), y → (z, x), x → (z, y)
_DENSE = """
UPDATE annotations SET labelled_px = (
    SELECT CASE slices.axis
        WHEN 'z' THEN volumes.shape_y * volumes.shape_x
        WHEN 'y' THEN volumes.shape_z * volumes.shape_x
        ELSE volumes.shape_z * volumes.shape_y END
    FROM slices JOIN volumes ON volumes.id = slices.volume_id
    WHERE slices.id = annotations.slice_id
) WHERE kind = 'semantic'
"""

_SPARSE = (
    "SELECT id, mask_rle FROM annotations "
    "WHERE kind = 'semantic' AND CAST(mask_rle AS TEXT) LIKE '%\"labelled\"%'"
)


def upgrade() -> None:
    # nullable column: SQLite adds it in place (no table copy, foreign keys untouched)
    op.add_column("annotations", sa.Column("labelled_px", sa.Integer(), nullable=True))
    bind = op.get_bind()
    bind.execute(sa.text(_DENSE))  # every semantic label as dense, then the sparse ones
    update = sa.text("UPDATE annotations SET labelled_px = :px WHERE id = :id")
    for annotation_id, mask in bind.execute(sa.text(_SPARSE)).all():
        document = json.loads(mask) if isinstance(mask, str) else mask
        bind.execute(update, {"px": labelled_pixels(document), "id": annotation_id})


def downgrade() -> None:
    op.execute("ALTER TABLE annotations DROP COLUMN labelled_px")
