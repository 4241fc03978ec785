"""copilot_threads -> ai_assistant_threads: the rename's sync step (expand 002, contract 003)."""

from backfills.definition import Backfill, CopyInto

_COLUMNS = ("id", "tenant_id", "aoi_id", "title", "status", "created_at", "updated_at")

BACKFILL = Backfill(
    name="ai_assistant_threads_copy",
    table="copilot_threads",
    description="Copy the threads of copilot_threads that ai_assistant_threads lacks, before 003 drops copilot_threads.",
    key=("id",),
    into=CopyInto(table="ai_assistant_threads", columns={c: f"s.{c}" for c in _COLUMNS}),
    tenant_column="tenant_id",
)
