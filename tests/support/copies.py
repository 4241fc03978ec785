"""Tables of the test-only copy backfill `notes_copy` (tests/extra_definitions/notes_copy.py),
writers that behave like the application during a rename, and an independent oracle."""

from __future__ import annotations

import threading
import uuid
from dataclasses import dataclass, field

import sqlalchemy as sa

__all__ = ["NOTES_DDL", "NoteWriter", "create_notes", "load_notes", "assert_copy_exact", "blank_ids"]

NOTES_DDL = (
    "CREATE TABLE notes_old (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), tenant_id uuid NOT NULL, "
    "body text NOT NULL, created_at timestamptz NOT NULL DEFAULT now())",
    # the target refuses an empty body: a source body of blanks only cannot be copied
    "CREATE TABLE notes_new (id uuid PRIMARY KEY, tenant_id uuid NOT NULL, "
    "body text NOT NULL CHECK (body <> ''), created_at timestamptz NOT NULL)",
)


def create_notes(engine: sa.Engine) -> None:
    """Both tables, empty."""
    with engine.begin() as conn:
        for statement in NOTES_DDL:
            conn.execute(sa.text(statement))


def load_notes(engine: sa.Engine, rows: int, blank_every: int | None = None) -> None:
    """`rows` old notes (padded bodies); every `blank_every`-th has a body of blanks only."""
    blank = f"CASE WHEN g % {blank_every} = 0 THEN '   ' ELSE ' note ' || g || ' ' END" if blank_every else \
        "' note ' || g || ' '"
    with engine.begin() as conn:
        conn.execute(sa.text(f"INSERT INTO notes_old (tenant_id, body, created_at) "
                             f"SELECT gen_random_uuid(), {blank}, now() - g * interval '1 second' "
                             f"FROM generate_series(1, {rows}) g"))
        conn.execute(sa.text("ANALYZE notes_old"))


def blank_ids(engine: sa.Engine) -> set[str]:
    """Source notes the target refuses."""
    with engine.connect() as conn:
        return {str(r[0]) for r in conn.execute(sa.text("SELECT id FROM notes_old WHERE btrim(body) = ''"))}


@dataclass
class NoteWriter:
    """The application during the rename, in a thread: new code writes each note to both
    tables in one transaction (its own body, untrimmed: a copy would trim it); old code
    still running writes to the old table only."""

    engine: sa.Engine
    dual: dict[str, str] = field(default_factory=dict)
    old_only: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None

    def start(self) -> NoteWriter:
        """Write until `finish`."""
        self.thread = threading.Thread(target=self._write, daemon=True)
        self.thread.start()
        return self

    def finish(self) -> None:
        """Stop writing and wait for the last write to commit."""
        self.stop.set()
        if self.thread is not None:
            self.thread.join(30)

    def _write(self) -> None:
        n = 0
        while not self.stop.is_set():
            n += 1
            note_id, tenant = str(uuid.uuid4()), str(uuid.uuid4())
            body = f"  written by the application {n}  "
            with self.engine.begin() as conn:
                params = {"id": note_id, "tenant": tenant, "body": body}
                conn.execute(sa.text("INSERT INTO notes_old (id, tenant_id, body) VALUES "
                                     "(CAST(:id AS uuid), CAST(:tenant AS uuid), :body)"), params)
                if n % 3:
                    conn.execute(sa.text("INSERT INTO notes_new (id, tenant_id, body, created_at) "
                                         "SELECT id, tenant_id, body, created_at FROM notes_old "
                                         "WHERE id = CAST(:id AS uuid)"), params)
            if n % 3:
                self.dual[note_id] = body
            else:
                self.old_only.append(note_id)
            self.stop.wait(0.002)


def assert_copy_exact(engine: sa.Engine, dual: dict[str, str], refused: set[str]) -> None:
    """The target holds every source note exactly once, except the refused ones: the
    application's own rows as it wrote them, every other one copied (body trimmed)
    and nothing else; the source is unchanged by the copy."""
    with engine.connect() as conn:
        source = {str(i): (str(t), b, c) for i, t, b, c in conn.execute(sa.text(
            "SELECT id, tenant_id, body, created_at FROM notes_old"))}
        target = {str(i): (str(t), b, c) for i, t, b, c in conn.execute(sa.text(
            "SELECT id, tenant_id, body, created_at FROM notes_new"))}
    assert refused <= set(source)
    expected = {i: (t, b if i in dual else b.strip(), c) for i, (t, b, c) in source.items() if i not in refused}
    assert set(target) == set(expected), (
        f"{len(set(expected) - set(target))} notes missing, {len(set(target) - set(expected))} unexpected")
    changed = [i for i in expected if target[i] != expected[i]]
    assert not changed, f"{len(changed)} notes differ, e.g. {changed[:3]}"
    assert all(dual[i] == source[i][1] for i in dual), "the application's source rows changed"
