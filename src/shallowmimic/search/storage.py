"""Where searches and job queues live: an SQLAlchemy URL (SQLite by default, PostgreSQL for many
machines), opened with retries and, for SQLite, serialized transactions. Light on purpose:
`shallowmimic status` reads a study's queue through it without importing torch."""

from __future__ import annotations

import time
from pathlib import Path

import optuna

from shallowmimic.core.errors import UserError
from shallowmimic.core.layout import DEFAULT_DB


def storage_url(storage: str | None, run_dir: Path) -> str:
    """`--storage` as given (any SQLAlchemy URL), or a SQLite file in the run directory."""
    if storage:
        return storage
    run_dir.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{(run_dir / DEFAULT_DB).resolve()}"


def with_driver(url: str) -> str:
    """A PostgreSQL URL without a driver (`postgresql://user@host/db`, as the docs write it)
    given the driver that is installed: SQLAlchemy's own default for the bare form changed from
    psycopg2 to psycopg 3 between releases, so the bare form failed beside the other one."""
    import importlib.util

    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in ("postgresql", "postgres"):
        return url
    for module, driver in (("psycopg", "psycopg"), ("psycopg2", "psycopg2")):
        if importlib.util.find_spec(module):
            return f"postgresql+{driver}://{rest}"
    raise UserError(f"study storage {url!r} needs a PostgreSQL driver: pip install 'shallowmimic[postgres]'")


def make_storage(url: str, heartbeat: int = 60, grace: int | None = None) -> optuna.storages.RDBStorage:
    url = with_driver(url)
    kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {"pool_pre_ping": True}
    for attempt in range(6):
        try:
            storage = optuna.storages.RDBStorage(url, engine_kwargs=kwargs, heartbeat_interval=heartbeat,
                                                 grace_period=grace or 2 * heartbeat)
            if url.startswith("sqlite"):
                _serialize_sqlite(storage.engine)
            return storage
        except Exception as e:  # driver missing, server down, bad URL: all one line for the user
            # Workers starting together race to create the schema ("already exists", a UNIQUE
            # violation on the version table); the loser retries and finds the schema made.
            text = f"{type(e).__name__}: {e}"
            if ("already exists" in text or "IntegrityError" in text) and attempt < 5:
                time.sleep(0.5 * (attempt + 1))
                continue
            raise UserError(f"cannot open study storage {url!r} ({text})".splitlines()[0]) from None
    raise AssertionError("unreachable")


def _serialize_sqlite(engine) -> None:
    """Make every SQLite transaction take the write lock when it starts (BEGIN IMMEDIATE).
    Python's sqlite3 driver otherwise begins a transaction only at the first write, so Optuna's
    read-check-write of a trial's state (popping a WAITING trial, telling a result) can interleave
    between processes: two workers could both pop one WAITING job. (SQLAlchemy's recipe for
    pysqlite; PostgreSQL's row locks need nothing.)"""
    from sqlalchemy import event

    @event.listens_for(engine, "connect")
    def _no_implicit_transactions(dbapi_connection, _record):
        dbapi_connection.isolation_level = None

    @event.listens_for(engine, "begin")
    def _begin_immediate(connection):
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    engine.dispose()  # connections opened before the listeners (schema checks) are dropped
