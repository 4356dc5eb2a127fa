"""reviews and agreements; the prediction shown with each round item

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("round_items", schema=None) as batch_op:
        batch_op.add_column(sa.Column("prediction_rle", sa.JSON(), nullable=True))
    op.create_table(
        "reviews",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("annotation_id", sa.Integer(), nullable=False),
        sa.Column("slice_id", sa.Integer(), nullable=False),
        sa.Column("dataset", sa.String(length=200), nullable=False),
        sa.Column("reasons", sa.String(length=100), nullable=False),
        sa.Column("model_iou", sa.Float(), nullable=True),
        sa.Column("state", sa.String(length=20), nullable=False),
        sa.Column("ls_task_id", sa.Integer(), nullable=True),
        sa.Column("expert_annotation_id", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("resolved_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "state IN ('queued', 'pushing', 'pending', 'approved', 'corrected', 'skipped', "
            "'superseded')",
            name=op.f("ck_reviews_state"),
        ),
        sa.ForeignKeyConstraint(
            ["annotation_id"], ["annotations.id"], name=op.f("fk_reviews_annotation_id_annotations")
        ),
        sa.ForeignKeyConstraint(
            ["expert_annotation_id"],
            ["annotations.id"],
            name=op.f("fk_reviews_expert_annotation_id_annotations"),
        ),
        sa.ForeignKeyConstraint(
            ["slice_id"], ["slices.id"], name=op.f("fk_reviews_slice_id_slices")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_reviews")),
        sa.UniqueConstraint("annotation_id", name="uq_reviews_annotation_id"),
    )
    with op.batch_alter_table("reviews", schema=None) as batch_op:
        batch_op.create_index("ix_reviews_dataset_state", ["dataset", "state"], unique=False)
    op.create_table(
        "agreements",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("slice_id", sa.Integer(), nullable=False),
        sa.Column("dataset", sa.String(length=200), nullable=False),
        sa.Column("annotation_a_id", sa.Integer(), nullable=False),
        sa.Column("annotation_b_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("class_name", sa.String(length=100), nullable=False),
        sa.Column("dice", sa.Float(), nullable=False),
        sa.CheckConstraint("kind IN ('annotators', 'review')", name=op.f("ck_agreements_kind")),
        sa.ForeignKeyConstraint(
            ["annotation_a_id"],
            ["annotations.id"],
            name=op.f("fk_agreements_annotation_a_id_annotations"),
        ),
        sa.ForeignKeyConstraint(
            ["annotation_b_id"],
            ["annotations.id"],
            name=op.f("fk_agreements_annotation_b_id_annotations"),
        ),
        sa.ForeignKeyConstraint(
            ["slice_id"], ["slices.id"], name=op.f("fk_agreements_slice_id_slices")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_agreements")),
        sa.UniqueConstraint(
            "annotation_a_id", "annotation_b_id", "class_name", name="uq_agreements_pair"
        ),
    )


def downgrade() -> None:
    op.drop_table("agreements")
    with op.batch_alter_table("reviews", schema=None) as batch_op:
        batch_op.drop_index("ix_reviews_dataset_state")
    op.drop_table("reviews")
    with op.batch_alter_table("round_items", schema=None) as batch_op:
        batch_op.drop_column("prediction_rle")
