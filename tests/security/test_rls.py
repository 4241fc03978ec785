"""Row-level security of the tenant tables (005 and the migrations that create tenant
tables), seen by a real non-superuser application role on a real PostgreSQL.

One database of the module's own at the expanded schema (016 + 101) holds two tenants A
and B with rows in every RLS table; every check runs as the application role in a
transaction that is rolled back, so the checks do not depend on one another.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import psycopg
import pytest
import sqlalchemy as sa
from psycopg import sql

from core.db import create_db_engine, libpq_url
from tests.support import servers

RLS_TABLES = ["ai_assistant_threads", "aois", "derived_weather_daily", "farms", "field_calibrations",
              "field_feedback", "opportunity_signals", "split_batches"]
ROWS_A, ROWS_B = 2, 1  # rows per RLS table for each tenant (different, so counts tell them apart)

_seq = iter(range(1, 1_000_000))


def _insert_sql(table: str) -> tuple[str, Callable[[dict[str, object]], dict[str, object]]]:
    """INSERT for one row of `table`, and a function from (tenant, farm, aoi) to its params."""
    def unique(p: dict[str, object]) -> dict[str, object]:
        n = next(_seq)
        return {**p, "n": n, "txt": f"{table}-{n}"}

    statements = {
        "farms": "INSERT INTO farms (tenant_id, name) VALUES (%(tenant)s, %(txt)s)",
        "aois": "INSERT INTO aois (tenant_id, farm_id, name, status) VALUES (%(tenant)s, %(farm)s, %(txt)s, 'ACTIVE')",
        "ai_assistant_threads": "INSERT INTO ai_assistant_threads (tenant_id, aoi_id, title) "
                                "VALUES (%(tenant)s, %(aoi)s, %(txt)s)",
        "derived_weather_daily": "INSERT INTO derived_weather_daily (tenant_id, aoi_id, date, temp_min_c) "
                                 "VALUES (%(tenant)s, %(aoi)s, date '2024-01-01' + %(n)s, 1.0)",
        "opportunity_signals": "INSERT INTO opportunity_signals "
                               "(tenant_id, aoi_id, week, signal_type, severity, score) "
                               "VALUES (%(tenant)s, %(aoi)s, date '2024-01-01' + 7 * %(n)s, %(txt)s, 'LOW', 0.5)",
        "field_calibrations": "INSERT INTO field_calibrations (tenant_id, aoi_id, observed_date, metric_type, value) "
                              "VALUES (%(tenant)s, %(aoi)s, date '2024-01-01' + %(n)s, %(txt)s, 1.0)",
        "split_batches": "INSERT INTO split_batches (tenant_id, parent_aoi_id, idempotency_key, created_ids) "
                         "VALUES (%(tenant)s, %(aoi)s, %(txt)s, '[]'::jsonb)",
        "field_feedback": "INSERT INTO field_feedback (tenant_id, aoi_id, feedback_type, message) "
                          "VALUES (%(tenant)s, %(aoi)s, 'ISSUE', %(txt)s)",
    }
    return statements[table], unique


@dataclass(frozen=True)
class Tenant:
    id: str
    farm: str
    aoi: str

    def params(self) -> dict[str, object]:
        return {"tenant": self.id, "farm": self.farm, "aoi": self.aoi}


@dataclass(frozen=True)
class RlsDb:
    admin_conninfo: str  # superuser, the database of the module
    app_conninfo: str  # the non-superuser application role
    app_url: str  # same, as a postgresql:// URL
    role: str
    a: Tenant
    b: Tenant


def _seed_tenant(conn: psycopg.Connection, name: str, rows: int) -> Tenant:
    tenant = str(conn.execute("INSERT INTO tenants (name) VALUES (%s) RETURNING id", (name,)).fetchone()[0])
    farms = [str(conn.execute("INSERT INTO farms (tenant_id, name) VALUES (%s, %s) RETURNING id",
                              (tenant, f"{name}-farm-{i}")).fetchone()[0]) for i in range(rows)]
    aois = [str(conn.execute("INSERT INTO aois (tenant_id, farm_id, name, status) VALUES (%s, %s, %s, 'ACTIVE') "
                             "RETURNING id", (tenant, farms[0], f"{name}-aoi-{i}")).fetchone()[0])
            for i in range(rows)]
    who = Tenant(tenant, farms[0], aois[0])
    for table in RLS_TABLES:
        if table in ("farms", "aois"):
            continue
        statement, params = _insert_sql(table)
        for _ in range(rows):
            conn.execute(statement, params(who.params()))
    return who


@pytest.fixture(scope="module")
def rls(pg_admin_url: str, templates: dict[str, str]) -> Iterator[RlsDb]:
    name = servers.unique_name("rls")
    role = servers.unique_name("rls_app")
    password = secrets.token_hex(12)
    url = servers.create_database(pg_admin_url, name, template=templates["expanded"])
    admin = libpq_url(url)
    try:
        with psycopg.connect(pg_admin_url, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE ROLE {} LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE "
                                 "PASSWORD {}").format(sql.Identifier(role), sql.Literal(password)))
        with psycopg.connect(admin) as conn:
            conn.execute(sql.SQL("GRANT USAGE ON SCHEMA public TO {}").format(sql.Identifier(role)))
            conn.execute(sql.SQL("GRANT SELECT, INSERT, UPDATE, DELETE ON {} TO {}").format(
                sql.SQL(", ").join(sql.Identifier(t) for t in RLS_TABLES), sql.Identifier(role)))
            a = _seed_tenant(conn, "A", ROWS_A)
            b = _seed_tenant(conn, "B", ROWS_B)
        info = psycopg.conninfo.conninfo_to_dict(admin)
        info.update(user=role, password=password)
        app = psycopg.conninfo.make_conninfo(**info)
        yield RlsDb(admin, app, servers.as_url(app), role, a, b)
    finally:
        servers.drop_database(pg_admin_url, name)
        with psycopg.connect(pg_admin_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


@contextmanager
def as_app(db: RlsDb, **settings: str) -> Iterator[psycopg.Connection]:
    """A transaction of the application role with `SET LOCAL app.<name> = value`, rolled back."""
    with psycopg.connect(db.app_conninfo) as conn:
        assert conn.execute("SELECT current_user").fetchone()[0] == db.role
        for key, value in settings.items():
            conn.execute("SELECT set_config(%s, %s, true)", (f"app.{key}", value))
        try:
            yield conn
        finally:
            conn.rollback()


def tenants_seen(conn: psycopg.Connection, table: str) -> dict[str, int]:
    rows = conn.execute(sql.SQL("SELECT tenant_id::text, count(*) FROM {} GROUP BY 1").format(
        sql.Identifier(table))).fetchall()
    return {tenant: count for tenant, count in rows}


def rows_of(db: RlsDb, who: Tenant, table: str) -> int:
    """Rows of `who` in `table` as the superuser sees them (no RLS)."""
    with psycopg.connect(db.admin_conninfo) as conn:
        return int(conn.execute(sql.SQL("SELECT count(*) FROM {} WHERE tenant_id = %s").format(
            sql.Identifier(table)), (who.id,)).fetchone()[0])


# -- the policies exist -------------------------------------------------------------------


def test_exactly_the_tenant_tables_have_forced_rls(rls: RlsDb) -> None:
    with psycopg.connect(rls.admin_conninfo) as conn:
        rows = conn.execute(
            "SELECT c.relname, c.relforcerowsecurity FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = 'public' AND c.relkind = 'r' AND c.relrowsecurity ORDER BY 1").fetchall()
        policies = conn.execute(
            "SELECT tablename, array_agg(policyname::text ORDER BY policyname) FROM pg_policies "
            "WHERE schemaname = 'public' GROUP BY 1 ORDER BY 1").fetchall()
        role = conn.execute("SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = %s",
                            (rls.role,)).fetchone()
    assert [r[0] for r in rows] == RLS_TABLES
    assert all(force is True for _, force in rows), "FORCE: the table owner is subject to the policies too"
    assert policies == [(t, ["system_admin_bypass", "tenant_isolation"]) for t in RLS_TABLES]
    assert role == (False, False)


@pytest.mark.parametrize("table", RLS_TABLES)
def test_seeded_rows_exist_for_both_tenants(rls: RlsDb, table: str) -> None:
    assert rows_of(rls, rls.a, table) == ROWS_A
    assert rows_of(rls, rls.b, table) == ROWS_B


# -- the application role -----------------------------------------------------------------


@pytest.mark.parametrize("table", RLS_TABLES)
def test_tenant_setting_shows_only_that_tenants_rows(rls: RlsDb, table: str) -> None:
    with as_app(rls, tenant_id=rls.a.id) as conn:
        assert tenants_seen(conn, table) == {rls.a.id: ROWS_A}
    with as_app(rls, tenant_id=rls.b.id) as conn:
        assert tenants_seen(conn, table) == {rls.b.id: ROWS_B}


@pytest.mark.parametrize("table", RLS_TABLES)
def test_update_of_all_rows_changes_only_the_tenants_rows(rls: RlsDb, table: str) -> None:
    with as_app(rls, tenant_id=rls.a.id) as conn:
        cur = conn.execute(sql.SQL("UPDATE {} SET tenant_id = tenant_id RETURNING tenant_id::text").format(
            sql.Identifier(table)))
        assert sorted(r[0] for r in cur.fetchall()) == [rls.a.id] * ROWS_A
        cur = conn.execute(sql.SQL("DELETE FROM {} WHERE tenant_id = %s").format(sql.Identifier(table)),
                           (rls.b.id,))
        assert cur.rowcount == 0, "B's rows are invisible, so they cannot be deleted either"


def test_update_really_leaves_other_tenants_rows_alone(rls: RlsDb) -> None:
    """A committed UPDATE of every farm as tenant A; B's farm is untouched (then restored)."""
    with psycopg.connect(rls.app_conninfo) as conn:
        conn.execute("SELECT set_config('app.tenant_id', %s, false)", (rls.a.id,))
        renamed = conn.execute("UPDATE farms SET name = name || ' (renamed)' RETURNING tenant_id::text").fetchall()
        conn.commit()
    try:
        assert [r[0] for r in renamed] == [rls.a.id] * ROWS_A
        with psycopg.connect(rls.admin_conninfo) as admin:
            names = dict(admin.execute("SELECT tenant_id::text, array_agg(name ORDER BY name) FROM farms "
                                       "GROUP BY 1").fetchall())
        assert names[rls.b.id] == ["B-farm-0"]
        assert names[rls.a.id] == ["A-farm-0 (renamed)", "A-farm-1 (renamed)"]
    finally:
        with psycopg.connect(rls.admin_conninfo) as admin:
            admin.execute("UPDATE farms SET name = replace(name, ' (renamed)', '')")


@pytest.mark.parametrize("table", RLS_TABLES)
def test_system_admin_sees_every_row(rls: RlsDb, table: str) -> None:
    with as_app(rls, is_system_admin="true") as conn:
        assert tenants_seen(conn, table) == {rls.a.id: ROWS_A, rls.b.id: ROWS_B}
    with as_app(rls, is_system_admin="false") as conn:
        assert tenants_seen(conn, table) == {}


@pytest.mark.parametrize("table", RLS_TABLES)
def test_no_setting_sees_nothing_and_writes_nothing(rls: RlsDb, table: str) -> None:
    with as_app(rls) as conn:
        assert tenants_seen(conn, table) == {}
        assert conn.execute(sql.SQL("UPDATE {} SET tenant_id = tenant_id").format(sql.Identifier(table))).rowcount == 0
    with as_app(rls, tenant_id="") as conn:  # set, then emptied: still nothing
        assert tenants_seen(conn, table) == {}
    statement, params = _insert_sql(table)
    with as_app(rls) as conn, pytest.raises(psycopg.errors.InsufficientPrivilege, match="row-level security"):
        conn.execute(statement, params(rls.a.params()))


@pytest.mark.parametrize("table", RLS_TABLES)
def test_inserting_another_tenants_row_is_rejected(rls: RlsDb, table: str) -> None:
    statement, params = _insert_sql(table)
    with as_app(rls, tenant_id=rls.a.id) as conn:
        conn.execute(statement, params(rls.a.params()))  # its own tenant: fine
        assert tenants_seen(conn, table) == {rls.a.id: ROWS_A + 1}
    with as_app(rls, tenant_id=rls.a.id) as conn, pytest.raises(
            psycopg.errors.InsufficientPrivilege, match=f'row-level security policy for table "{table}"'):
        conn.execute(statement, params(rls.b.params()))
    assert rows_of(rls, rls.b, table) == ROWS_B


@pytest.mark.parametrize("table", RLS_TABLES)
def test_moving_a_row_to_another_tenant_is_rejected(rls: RlsDb, table: str) -> None:
    with as_app(rls, tenant_id=rls.a.id) as conn, pytest.raises(
            psycopg.errors.InsufficientPrivilege, match="row-level security"):
        conn.execute(sql.SQL("UPDATE {} SET tenant_id = %s").format(sql.Identifier(table)), (rls.b.id,))


def test_a_random_tenant_id_sees_nothing(rls: RlsDb) -> None:
    with as_app(rls, tenant_id=str(uuid.uuid4())) as conn:
        assert all(tenants_seen(conn, t) == {} for t in RLS_TABLES)


def test_the_table_owner_is_filtered_too(rls: RlsDb) -> None:
    """FORCE ROW LEVEL SECURITY: make the application role the owner of every RLS table (in a
    transaction that is rolled back) and act as it: still filtered."""
    with psycopg.connect(rls.admin_conninfo) as conn:
        try:
            for table in RLS_TABLES:
                conn.execute(sql.SQL("ALTER TABLE {} OWNER TO {}").format(sql.Identifier(table),
                                                                         sql.Identifier(rls.role)))
            conn.execute(sql.SQL("SET LOCAL ROLE {}").format(sql.Identifier(rls.role)))
            owners = conn.execute("SELECT count(*) FROM pg_class WHERE relname = ANY(%s) "
                                  "AND relowner = (SELECT oid FROM pg_roles WHERE rolname = current_user)",
                                  (RLS_TABLES,)).fetchone()[0]
            assert owners == len(RLS_TABLES)
            assert all(tenants_seen(conn, t) == {} for t in RLS_TABLES)
            conn.execute("SELECT set_config('app.tenant_id', %s, true)", (rls.b.id,))
            assert all(tenants_seen(conn, t) == {rls.b.id: ROWS_B} for t in RLS_TABLES)
        finally:
            conn.rollback()


# -- the tool's own sessions --------------------------------------------------------------


def test_tool_sessions_see_every_row_as_system_admin(rls: RlsDb) -> None:
    engine = create_db_engine(rls.app_url, pooled=False)
    try:
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT current_user")).scalar() == rls.role
            assert conn.execute(sa.text("SELECT current_setting('app.is_system_admin')")).scalar() == "true"
            for table in RLS_TABLES:
                counts = dict(conn.execute(sa.text(
                    f"SELECT tenant_id::text, count(*) FROM {table} GROUP BY 1")).all())
                assert counts == {rls.a.id: ROWS_A, rls.b.id: ROWS_B}, table
            conn.commit()
            # a tenant-scoped batch narrows its own transaction with SET LOCAL
            with conn.begin():
                conn.execute(sa.text("SELECT set_config('app.is_system_admin', 'false', true), "
                                     "set_config('app.tenant_id', :t, true)"), {"t": rls.a.id})
                assert conn.execute(sa.text("SELECT count(*) FROM aois")).scalar() == ROWS_A
            assert conn.execute(sa.text("SELECT count(*) FROM aois")).scalar() == ROWS_A + ROWS_B
            conn.rollback()
    finally:
        engine.dispose()
