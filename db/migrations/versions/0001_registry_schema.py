"""registry schema

Revision ID: 0001
Revises:
Create Date: 2026-11-22
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "dataset_versions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("content_hash", sa.String(length=64), nullable=False),
        sa.Column("parent_id", sa.Integer(), nullable=True),
        sa.Column("artifacts", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["parent_id"],
            ["dataset_versions.id"],
            name=op.f("fk_dataset_versions_parent_id_dataset_versions"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_dataset_versions")),
        sa.UniqueConstraint("name", "content_hash", name="uq_dataset_versions_name_hash"),
        sa.UniqueConstraint("name", "version", name="uq_dataset_versions_name_version"),
    )
    op.create_table(
        "volumes",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("path", sa.String(length=2000), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("shape_z", sa.Integer(), nullable=False),
        sa.Column("shape_y", sa.Integer(), nullable=False),
        sa.Column("shape_x", sa.Integer(), nullable=False),
        sa.Column("dtype", sa.String(length=20), nullable=False),
        sa.Column("voxel_z_um", sa.Float(), nullable=True),
        sa.Column("voxel_y_um", sa.Float(), nullable=True),
        sa.Column("voxel_x_um", sa.Float(), nullable=True),
        sa.Column("modality", sa.String(length=40), nullable=False),
        sa.Column("material", sa.String(length=200), nullable=False),
        sa.Column("phases", sa.String(length=2000), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_volumes")),
        sa.UniqueConstraint("name", name=op.f("uq_volumes_name")),
        sa.UniqueConstraint("sha256", name=op.f("uq_volumes_sha256")),
    )
    op.create_table(
        "model_versions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("architecture", sa.String(length=100), nullable=False),
        sa.Column("backend", sa.String(length=40), nullable=False),
        sa.Column("config", sa.JSON(), nullable=False),
        sa.Column("parent_id", sa.Integer(), nullable=True),
        sa.Column("dataset_version_id", sa.Integer(), nullable=True),
        sa.Column("checkpoint_uri", sa.String(length=2000), nullable=True),
        sa.Column("checkpoint_sha256", sa.String(length=64), nullable=True),
        sa.Column("stage", sa.String(length=20), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "stage IN ('candidate', 'champion', 'retired')", name=op.f("ck_model_versions_stage")
        ),
        sa.ForeignKeyConstraint(
            ["dataset_version_id"],
            ["dataset_versions.id"],
            name=op.f("fk_model_versions_dataset_version_id_dataset_versions"),
        ),
        sa.ForeignKeyConstraint(
            ["parent_id"],
            ["model_versions.id"],
            name=op.f("fk_model_versions_parent_id_model_versions"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_model_versions")),
    )
    with op.batch_alter_table("model_versions", schema=None) as batch_op:
        batch_op.create_index(
            "uq_model_versions_one_champion",
            ["name"],
            unique=True,
            sqlite_where=sa.text("stage = 'champion'"),
            postgresql_where=sa.text("stage = 'champion'"),
        )

    op.create_table(
        "slices",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("volume_id", sa.Integer(), nullable=False),
        sa.Column("axis", sa.String(length=1), nullable=False),
        sa.Column("index", sa.Integer(), nullable=False),
        sa.CheckConstraint("axis IN ('z', 'y', 'x')", name=op.f("ck_slices_axis")),
        sa.ForeignKeyConstraint(
            ["volume_id"],
            ["volumes.id"],
            name=op.f("fk_slices_volume_id_volumes"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_slices")),
        sa.UniqueConstraint("volume_id", "axis", "index", name="uq_slices_position"),
    )
    op.create_table(
        "al_rounds",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("dataset", sa.String(length=200), nullable=False),
        sa.Column("strategy", sa.String(length=60), nullable=False),
        sa.Column("budget", sa.Integer(), nullable=False),
        sa.Column("model_version_id", sa.Integer(), nullable=True),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "status IN ('open', 'closed', 'failed')", name=op.f("ck_al_rounds_status")
        ),
        sa.ForeignKeyConstraint(
            ["model_version_id"],
            ["model_versions.id"],
            name=op.f("fk_al_rounds_model_version_id_model_versions"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_al_rounds")),
    )
    op.create_table(
        "annotations",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("slice_id", sa.Integer(), nullable=False),
        sa.Column("tier", sa.SmallInteger(), nullable=False),
        sa.Column("source", sa.String(length=500), nullable=False),
        sa.Column("model_version_id", sa.Integer(), nullable=True),
        sa.Column("ls_task_id", sa.Integer(), nullable=True),
        sa.Column("ls_annotation_id", sa.Integer(), nullable=True),
        sa.Column("author", sa.String(length=200), nullable=False),
        sa.Column("lead_time_s", sa.Float(), nullable=True),
        sa.Column("mask_uri", sa.String(length=2000), nullable=True),
        sa.Column("mask_sha256", sa.String(length=64), nullable=True),
        sa.Column("mask_rle", sa.JSON(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("tier BETWEEN 0 AND 3", name=op.f("ck_annotations_tier")),
        sa.ForeignKeyConstraint(
            ["model_version_id"],
            ["model_versions.id"],
            name=op.f("fk_annotations_model_version_id_model_versions"),
        ),
        sa.ForeignKeyConstraint(
            ["slice_id"],
            ["slices.id"],
            name=op.f("fk_annotations_slice_id_slices"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_annotations")),
        sa.UniqueConstraint("slice_id", "tier", "source", name="uq_annotations_natural_key"),
    )
    op.create_table(
        "slice_scores",
        sa.Column("model_version_id", sa.Integer(), nullable=False),
        sa.Column("slice_id", sa.Integer(), nullable=False),
        sa.Column("score", sa.Float(), nullable=False),
        sa.Column("method", sa.String(length=60), nullable=False),
        sa.ForeignKeyConstraint(
            ["model_version_id"],
            ["model_versions.id"],
            name=op.f("fk_slice_scores_model_version_id_model_versions"),
        ),
        sa.ForeignKeyConstraint(
            ["slice_id"], ["slices.id"], name=op.f("fk_slice_scores_slice_id_slices")
        ),
        sa.PrimaryKeyConstraint("model_version_id", "slice_id", name=op.f("pk_slice_scores")),
    )
    with op.batch_alter_table("slice_scores", schema=None) as batch_op:
        batch_op.create_index(
            "ix_slice_scores_model_score", ["model_version_id", "score", "slice_id"], unique=False
        )

    op.create_table(
        "training_runs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("model_version_id", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("device", sa.String(length=40), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("epochs", sa.Integer(), nullable=False),
        sa.Column("curve_uri", sa.String(length=2000), nullable=True),
        sa.CheckConstraint(
            "status IN ('running', 'finished', 'failed', 'interrupted')",
            name=op.f("ck_training_runs_status"),
        ),
        sa.ForeignKeyConstraint(
            ["model_version_id"],
            ["model_versions.id"],
            name=op.f("fk_training_runs_model_version_id_model_versions"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_training_runs")),
    )
    op.create_table(
        "dataset_members",
        sa.Column("dataset_version_id", sa.Integer(), nullable=False),
        sa.Column("annotation_id", sa.Integer(), nullable=False),
        sa.Column("split", sa.String(length=5), nullable=False),
        sa.CheckConstraint(
            "split IN ('train', 'val', 'test')", name=op.f("ck_dataset_members_split")
        ),
        sa.ForeignKeyConstraint(
            ["annotation_id"],
            ["annotations.id"],
            name=op.f("fk_dataset_members_annotation_id_annotations"),
        ),
        sa.ForeignKeyConstraint(
            ["dataset_version_id"],
            ["dataset_versions.id"],
            name=op.f("fk_dataset_members_dataset_version_id_dataset_versions"),
        ),
        sa.PrimaryKeyConstraint(
            "dataset_version_id", "annotation_id", name=op.f("pk_dataset_members")
        ),
    )
    with op.batch_alter_table("dataset_members", schema=None) as batch_op:
        batch_op.create_index("ix_dataset_members_annotation", ["annotation_id"], unique=False)

    op.create_table(
        "metrics",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("model_version_id", sa.Integer(), nullable=False),
        sa.Column("training_run_id", sa.Integer(), nullable=True),
        sa.Column("dataset_version_id", sa.Integer(), nullable=True),
        sa.Column("split", sa.String(length=5), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("class_name", sa.String(length=100), nullable=False),
        sa.Column("step", sa.Integer(), nullable=True),
        sa.Column("value", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(
            ["dataset_version_id"],
            ["dataset_versions.id"],
            name=op.f("fk_metrics_dataset_version_id_dataset_versions"),
        ),
        sa.ForeignKeyConstraint(
            ["model_version_id"],
            ["model_versions.id"],
            name=op.f("fk_metrics_model_version_id_model_versions"),
        ),
        sa.ForeignKeyConstraint(
            ["training_run_id"],
            ["training_runs.id"],
            name=op.f("fk_metrics_training_run_id_training_runs"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_metrics")),
    )
    with op.batch_alter_table("metrics", schema=None) as batch_op:
        batch_op.create_index("ix_metrics_model_name", ["model_version_id", "name"], unique=False)

    op.create_table(
        "round_items",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("round_id", sa.Integer(), nullable=False),
        sa.Column("slice_id", sa.Integer(), nullable=False),
        sa.Column("score", sa.Float(), nullable=False),
        sa.Column("rank", sa.Integer(), nullable=False),
        sa.Column("ls_task_id", sa.Integer(), nullable=True),
        sa.Column("state", sa.String(length=20), nullable=False),
        sa.Column("annotation_seconds", sa.Float(), nullable=True),
        sa.CheckConstraint(
            "state IN ('pending', 'annotated', 'skipped')", name=op.f("ck_round_items_state")
        ),
        sa.ForeignKeyConstraint(
            ["round_id"], ["al_rounds.id"], name=op.f("fk_round_items_round_id_al_rounds")
        ),
        sa.ForeignKeyConstraint(
            ["slice_id"], ["slices.id"], name=op.f("fk_round_items_slice_id_slices")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_round_items")),
        sa.UniqueConstraint("round_id", "slice_id", name="uq_round_items_round_slice"),
    )
    with op.batch_alter_table("round_items", schema=None) as batch_op:
        batch_op.create_index("ix_round_items_slice_state", ["slice_id", "state"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("round_items", schema=None) as batch_op:
        batch_op.drop_index("ix_round_items_slice_state")

    op.drop_table("round_items")
    with op.batch_alter_table("metrics", schema=None) as batch_op:
        batch_op.drop_index("ix_metrics_model_name")

    op.drop_table("metrics")
    with op.batch_alter_table("dataset_members", schema=None) as batch_op:
        batch_op.drop_index("ix_dataset_members_annotation")

    op.drop_table("dataset_members")
    op.drop_table("training_runs")
    with op.batch_alter_table("slice_scores", schema=None) as batch_op:
        batch_op.drop_index("ix_slice_scores_model_score")

    op.drop_table("slice_scores")
    op.drop_table("annotations")
    op.drop_table("al_rounds")
    op.drop_table("slices")
    with op.batch_alter_table("model_versions", schema=None) as batch_op:
        batch_op.drop_index(
            "uq_model_versions_one_champion",
            sqlite_where=sa.text("stage = 'champion'"),
            postgresql_where=sa.text("stage = 'champion'"),
        )

    op.drop_table("model_versions")
    op.drop_table("volumes")
    op.drop_table("dataset_versions")
