"""Unit tests for migrations.lint: every rule, its safe counterpart, waivers."""

from __future__ import annotations

import pytest

from migrations.lint import RULES, Finding, lint_sql

RULE_IDS = {
    "create-index-concurrently",
    "add-column-not-null",
    "alter-column-type",
    "set-not-null",
    "constraint-not-valid",
    "bulk-data-change",
    "rename",
    "bad-waiver",
}


def rules_and_lines(sql: str) -> list[tuple[str, int]]:
    """The (rule, line) pairs of the findings for ``sql``."""
    return [(f.rule, f.line) for f in lint_sql(sql)]


# (id, sql, expected [(rule, line)]) — each unsafe example and its safe counterpart.
UNSAFE: list[tuple[str, str, list[tuple[str, int]]]] = [
    ("index", "CREATE INDEX idx ON t (a);", [("create-index-concurrently", 1)]),
    ("unique index", "\nCREATE UNIQUE INDEX idx ON public.t (a);", [("create-index-concurrently", 2)]),
    ("unnamed index", "create index on t using btree (a)", [("create-index-concurrently", 1)]),
    (
        "index if not exists on only",
        'CREATE INDEX IF NOT EXISTS "Idx" ON ONLY "public"."T" (a);',
        [("create-index-concurrently", 1)],
    ),
    ("add not null", "ALTER TABLE t ADD COLUMN c int NOT NULL;", [("add-column-not-null", 1)]),
    (
        "add not null without COLUMN, qualified",
        'ALTER TABLE IF EXISTS ONLY public."aois"\n  ADD c text\n  NOT NULL;',
        [("add-column-not-null", 1)],
    ),
    (
        "add not null as second action",
        "ALTER TABLE t ADD COLUMN a int, ADD COLUMN b int NOT NULL;",
        [("add-column-not-null", 1)],
    ),
    ("alter type", "ALTER TABLE t ALTER COLUMN c TYPE bigint;", [("alter-column-type", 1)]),
    (
        "set data type without COLUMN",
        "ALTER TABLE t ALTER c SET DATA TYPE numeric(10, 2) USING round(c, 2);",
        [("alter-column-type", 1)],
    ),
    ("alter type quoted table named type", 'ALTER TABLE "type" ALTER "c" TYPE text', [("alter-column-type", 1)]),
    ("set not null", "ALTER TABLE t ALTER COLUMN c SET NOT NULL;", [("set-not-null", 1)]),
    (
        "set not null with check but no validate",
        "ALTER TABLE t ADD CONSTRAINT c_nn CHECK (c IS NOT NULL) NOT VALID;\n"
        "ALTER TABLE t ALTER COLUMN c SET NOT NULL;",
        [("set-not-null", 2)],
    ),
    (
        "set not null with validated check on another column",
        "ALTER TABLE t ADD CONSTRAINT d_nn CHECK (d IS NOT NULL) NOT VALID;\n"
        "ALTER TABLE t VALIDATE CONSTRAINT d_nn;\n"
        "ALTER TABLE t ALTER COLUMN c SET NOT NULL;",
        [("set-not-null", 3)],
    ),
    (
        "set not null with validated check on another table",
        "ALTER TABLE u ADD CONSTRAINT c_nn CHECK (c IS NOT NULL) NOT VALID;\n"
        "ALTER TABLE u VALIDATE CONSTRAINT c_nn;\n"
        "ALTER TABLE t ALTER COLUMN c SET NOT NULL;",
        [("set-not-null", 3)],
    ),
    (
        "set not null with validate of a different constraint",
        "ALTER TABLE t ADD CONSTRAINT c_nn CHECK (c IS NOT NULL) NOT VALID;\n"
        "ALTER TABLE t VALIDATE CONSTRAINT other;\n"
        "ALTER TABLE t ALTER COLUMN c SET NOT NULL;",
        [("set-not-null", 3)],
    ),
    (
        "foreign key",
        "ALTER TABLE t ADD CONSTRAINT fk FOREIGN KEY (u_id) REFERENCES u (id);",
        [("constraint-not-valid", 1)],
    ),
    ("unnamed check", "ALTER TABLE t ADD CHECK (a > 0);", [("constraint-not-valid", 1)]),
    (
        "named check",
        "ALTER TABLE t ADD CONSTRAINT a_pos CHECK (a > 0 AND b IN (1, 2));",
        [("constraint-not-valid", 1)],
    ),
    ("inline references", "ALTER TABLE t ADD COLUMN u_id int REFERENCES u (id);", [("constraint-not-valid", 1)]),
    (
        "foreign key inside DO block",
        "DO $$\nBEGIN\n  ALTER TABLE t ADD CONSTRAINT fk FOREIGN KEY (u_id) REFERENCES u (id);\n"
        "EXCEPTION WHEN duplicate_object THEN NULL;\nEND\n$$;",
        [("constraint-not-valid", 1)],
    ),
    ("add column if not exists", "ALTER TABLE t ADD COLUMN IF NOT EXISTS c int NOT NULL", [("add-column-not-null", 1)]),
    ("add quoted column named check", 'ALTER TABLE t ADD "check" int NOT NULL', [("add-column-not-null", 1)]),
    ("insert parenthesised select", "INSERT INTO t (SELECT 1);", [("bulk-data-change", 1)]),
    ("update", "UPDATE t SET a = 1 WHERE b IS NULL;", [("bulk-data-change", 1)]),
    ("update only with alias", "UPDATE ONLY public.t AS x SET a = 1", [("bulk-data-change", 1)]),
    ("delete", "DELETE FROM t WHERE a < 0;", [("bulk-data-change", 1)]),
    ("insert select", "INSERT INTO t (a) SELECT a FROM u;", [("bulk-data-change", 1)]),
    ("insert with cte", "INSERT INTO t WITH x AS (SELECT 1) SELECT * FROM x;", [("bulk-data-change", 1)]),
    ("update inside DO block", "DO $body$ BEGIN UPDATE t SET a = 1; END $body$;", [("bulk-data-change", 1)]),
    ("rename column", "ALTER TABLE t RENAME COLUMN a TO b;", [("rename", 1)]),
    ("rename table", "ALTER TABLE IF EXISTS t RENAME TO u;", [("rename", 1)]),
    ("rename constraint", "ALTER TABLE t RENAME CONSTRAINT a TO b;", [("rename", 1)]),
    ("rename without COLUMN", "ALTER TABLE t RENAME a TO b;", [("rename", 1)]),
    ("rename index", "ALTER INDEX IF EXISTS public.idx RENAME TO idx2;", [("rename", 1)]),
    (
        "several rules, one finding each",
        "ALTER TABLE t ADD COLUMN a int NOT NULL REFERENCES u (id), ADD COLUMN b int NOT NULL;",
        [("add-column-not-null", 1), ("constraint-not-valid", 1)],
    ),
    (
        "mixed case and arbitrary whitespace",
        "AlTeR\tTaBlE\n\nT\n  aLtEr   CoLuMn\nC\n  TyPe   BIGINT",
        [("alter-column-type", 1)],
    ),
]

SAFE: list[tuple[str, str]] = [
    ("index concurrently", "CREATE INDEX CONCURRENTLY idx ON t (a);"),
    ("unique index concurrently", "CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS idx ON t (a);"),
    ("add not null with default", "ALTER TABLE t ADD COLUMN c int NOT NULL DEFAULT 0;"),
    ("add not null with string default", "ALTER TABLE t ADD COLUMN c text DEFAULT 'x' NOT NULL;"),
    ("add nullable column", "ALTER TABLE t ADD COLUMN c int;"),
    ("inline check mentioning is not null", "ALTER TABLE t ADD COLUMN c int CHECK (c IS NOT NULL OR d > 0);"),
    ("alter column default", "ALTER TABLE t ALTER COLUMN c SET DEFAULT 0;"),
    ("set statistics on column named type", "ALTER TABLE t ALTER COLUMN type SET STATISTICS 100;"),
    (
        "set not null after validated check",
        "ALTER TABLE t ADD CONSTRAINT c_nn CHECK (c IS NOT NULL) NOT VALID;\n"
        "ALTER TABLE t VALIDATE CONSTRAINT c_nn;\n"
        "ALTER TABLE t ALTER COLUMN c SET NOT NULL;",
    ),
    (
        "set not null after validated check, quotes and case ignored",
        'ALTER TABLE public."T" ADD CONSTRAINT "C_NN" CHECK ((("C") IS NOT NULL)) NOT VALID;\n'
        "ALTER TABLE ONLY t VALIDATE CONSTRAINT c_nn;\n"
        'ALTER TABLE t ALTER COLUMN "c" SET NOT NULL;',
    ),
    (
        "set not null after check added in a DO block and validated",
        "DO $$ BEGIN\n  IF NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conname = 'c_nn') THEN\n"
        "    ALTER TABLE t ADD CONSTRAINT c_nn CHECK (c IS NOT NULL) NOT VALID;\n  END IF;\nEND $$;\n"
        "ALTER TABLE t VALIDATE CONSTRAINT c_nn;\n"
        "ALTER TABLE t ALTER c SET NOT NULL;",
    ),
    ("drop not null", "ALTER TABLE t ALTER COLUMN c DROP NOT NULL;"),
    ("foreign key not valid", "ALTER TABLE t ADD CONSTRAINT fk FOREIGN KEY (u_id) REFERENCES u (id) NOT VALID;"),
    ("check not valid", "ALTER TABLE t ADD CONSTRAINT a_pos CHECK (a > 0) NOT VALID;"),
    ("validate constraint", "ALTER TABLE t VALIDATE CONSTRAINT fk;"),
    (
        "foreign key not valid inside DO block",
        "DO $$ BEGIN ALTER TABLE t ADD CONSTRAINT fk FOREIGN KEY (u_id) REFERENCES u (id) NOT VALID;"
        " EXCEPTION WHEN duplicate_object THEN NULL; END $$;",
    ),
    ("dynamic SQL in a DO block is a string", "DO $$ BEGIN EXECUTE 'UPDATE t SET a = 1'; END $$;"),
    ("E string default", "ALTER TABLE t ADD COLUMN c text NOT NULL DEFAULT E'it\\'s';"),
    ("insert values", "INSERT INTO t (a, b) VALUES (1, (SELECT 2)), (3, 4);"),
    ("insert default values", "INSERT INTO t DEFAULT VALUES;"),
    ("insert values with on conflict update", "INSERT INTO t (a) VALUES (1) ON CONFLICT (a) DO UPDATE SET a = 2;"),
    (
        "update inside function body is opaque",
        "CREATE OR REPLACE FUNCTION f() RETURNS trigger LANGUAGE plpgsql AS $$\n"
        "BEGIN UPDATE audit SET n = n + 1; DELETE FROM q; NEW.x := 1; RETURN NEW; END\n$$;",
    ),
    (
        "procedure body is opaque",
        "CREATE PROCEDURE p() LANGUAGE sql AS $p$ INSERT INTO t SELECT 1; $p$;",
    ),
    (
        "on update/delete actions of a foreign key",
        "ALTER TABLE t ADD CONSTRAINT fk FOREIGN KEY (a) REFERENCES u (id)"
        " ON UPDATE SET NULL ON DELETE CASCADE NOT VALID;",
    ),
    ("trigger on update", "CREATE TRIGGER trg BEFORE INSERT OR UPDATE ON t FOR EACH ROW EXECUTE FUNCTION f();"),
    ("select for update", "SELECT 1 FROM t FOR UPDATE;"),
    ("grant update delete", "GRANT SELECT, UPDATE, DELETE ON t TO app;"),
    ("keywords inside string literals", "COMMENT ON TABLE t IS 'UPDATE t SET a = 1; CREATE INDEX i ON t (a)';"),
    ("keywords inside comments", "-- UPDATE t SET a = 1\nSELECT 1 /* DELETE FROM t */;"),
    ("keywords in a non-DO dollar quote", "COMMENT ON TABLE t IS $$ALTER TABLE t RENAME TO u$$;"),
    ("rename a view", "ALTER VIEW v RENAME TO w;"),
    ("drop column", "ALTER TABLE t DROP COLUMN IF EXISTS c;"),
]


@pytest.mark.parametrize(("sql", "expected"), [c[1:] for c in UNSAFE], ids=[c[0] for c in UNSAFE])
def test_unsafe_statements_are_flagged(sql: str, expected: list[tuple[str, int]]) -> None:
    assert rules_and_lines(sql) == expected


@pytest.mark.parametrize("sql", [c[1] for c in SAFE], ids=[c[0] for c in SAFE])
def test_safe_statements_pass(sql: str) -> None:
    assert lint_sql(sql) == []


def test_every_rule_has_an_unsafe_example() -> None:
    flagged = {rule for _, sql, expected in UNSAFE for rule, _ in expected}
    assert flagged == RULE_IDS - {"bad-waiver"}


def test_rules_table() -> None:
    assert set(RULES) == RULE_IDS
    assert all(advice and "\n" not in advice for advice in RULES.values())


NEW_TABLE = "CREATE TABLE IF NOT EXISTS app.widgets (id bigint PRIMARY KEY);\n"

EXEMPT_FOR_NEW_TABLE = [
    ("create-index-concurrently", "CREATE INDEX widgets_id ON widgets (id);"),
    ("create-index-concurrently", 'CREATE UNIQUE INDEX widgets_id ON app."widgets" (id);'),
    ("add-column-not-null", "ALTER TABLE widgets ADD COLUMN name text NOT NULL;"),
    ("constraint-not-valid", "ALTER TABLE ONLY app.widgets ADD CONSTRAINT fk FOREIGN KEY (id) REFERENCES u (id);"),
    ("constraint-not-valid", 'ALTER TABLE "WIDGETS" ADD CHECK (id > 0);'),
    ("constraint-not-valid", "ALTER TABLE widgets ADD COLUMN u_id int REFERENCES u (id);"),
]


@pytest.mark.parametrize(("rule", "statement"), EXEMPT_FOR_NEW_TABLE)
def test_tables_created_in_the_same_file_are_exempt(rule: str, statement: str) -> None:
    assert lint_sql(NEW_TABLE + statement) == []
    assert rules_and_lines(statement) == [(rule, 1)]


def test_table_created_later_in_the_file_is_not_exempt() -> None:
    sql = "CREATE INDEX i ON widgets (id);\n" + NEW_TABLE
    assert rules_and_lines(sql) == [("create-index-concurrently", 1)]


def test_table_created_inside_do_block_is_exempt() -> None:
    sql = "DO $$ BEGIN CREATE TABLE widgets (id int); END $$;\nCREATE INDEX i ON widgets (id);"
    assert lint_sql(sql) == []


def test_findings_carry_path_line_message_and_fix() -> None:
    sql = "-- migrate: no-transaction\nSELECT 1;\n\nALTER TABLE orders\n  RENAME COLUMN a TO b;\n"
    [finding] = lint_sql(sql, "migrations/sql/017_x.sql")
    assert finding.path == "migrations/sql/017_x.sql"
    assert finding.line == 4
    assert finding.rule == "rename"
    assert "orders" in finding.message
    assert finding.fix == RULES["rename"]
    text = str(finding)
    assert text.startswith("migrations/sql/017_x.sql:4: rename: ")
    assert text.endswith(f" Fix: {RULES['rename']}")


def test_default_path() -> None:
    [finding] = lint_sql("DELETE FROM t;")
    assert str(finding).startswith("<sql>:1: bulk-data-change: ")


def test_findings_are_in_file_order() -> None:
    sql = "UPDATE t SET a = 1;\nALTER TABLE t RENAME TO u;\nCREATE INDEX i ON u (a);"
    assert rules_and_lines(sql) == [("bulk-data-change", 1), ("rename", 2), ("create-index-concurrently", 3)]


def test_finding_is_frozen() -> None:
    finding = Finding("p", 1, "rename", "m", "f")
    with pytest.raises(AttributeError):
        finding.line = 2  # type: ignore[misc]
    assert str(finding) == "p:1: rename: m Fix: f"


def test_waiver_waives_its_rule_for_that_statement_only() -> None:
    sql = (
        "-- lint: allow rename because nothing reads this table yet\n"
        "ALTER TABLE t RENAME COLUMN a TO b;\n"
        "ALTER TABLE t RENAME COLUMN c TO d;\n"
    )
    assert rules_and_lines(sql) == [("rename", 3)]


def test_waiver_leaves_other_rules() -> None:
    sql = (
        "-- lint: allow add-column-not-null because the table is always empty here\n"
        "\n"
        "ALTER TABLE t ADD COLUMN a int NOT NULL REFERENCES u (id);"
    )
    assert rules_and_lines(sql) == [("constraint-not-valid", 3)]


def test_several_waivers_and_other_comments() -> None:
    sql = (
        "-- Split the name column.\n"
        "-- LINT: allow add-column-not-null because empty table, see ticket 12\n"
        "-- lint: allow constraint-not-valid because u is tiny\n"
        "ALTER TABLE t ADD COLUMN a int NOT NULL REFERENCES u (id);"
    )
    assert lint_sql(sql) == []


def test_trailing_comment_on_previous_line_is_not_a_waiver() -> None:
    sql = "SELECT 1; -- lint: allow rename because x\nALTER TABLE t RENAME TO u;"
    assert rules_and_lines(sql) == [("rename", 2)]


BAD_WAIVERS = [
    ("unknown rule", "-- lint: allow renames because typo", "unknown rule 'renames'"),
    ("bad-waiver cannot be waived", "-- lint: allow bad-waiver because x", "unknown rule 'bad-waiver'"),
    ("missing because", "-- lint: allow rename", "no reason"),
    ("empty reason", "-- lint: allow rename because   ", "no reason"),
    ("malformed", "-- lint: alow rename because x", "not of the form"),
]


@pytest.mark.parametrize(("comment", "problem"), [c[1:] for c in BAD_WAIVERS], ids=[c[0] for c in BAD_WAIVERS])
def test_bad_waiver_is_flagged_and_waives_nothing(comment: str, problem: str) -> None:
    findings = lint_sql(f"{comment}\nALTER TABLE t RENAME TO u;", "m.sql")
    assert [(f.rule, f.line) for f in findings] == [("rename", 2), ("bad-waiver", 2)]
    assert problem in findings[1].message
    assert findings[1].fix == RULES["bad-waiver"]


def test_bad_waiver_on_a_clean_statement_is_still_flagged() -> None:
    sql = "-- lint: allow nope because reasons\nSELECT 1;"
    assert rules_and_lines(sql) == [("bad-waiver", 2)]


def test_one_bad_waiver_finding_per_statement_alongside_a_good_waiver() -> None:
    sql = (
        "-- lint: allow rename because old name is unused\n"
        "-- lint: allow foo because x\n"
        "-- lint: allow bar\n"
        "ALTER TABLE t RENAME TO u;"
    )
    [finding] = lint_sql(sql)
    assert (finding.rule, finding.line) == ("bad-waiver", 4)
    assert "'foo'" in finding.message and "lint: allow bar" in finding.message
