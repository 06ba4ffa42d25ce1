"""Database work written once, run on a synchronous or an asynchronous psycopg connection.

The catalog reads, the locks and the refresh itself are generators of *steps*: they yield a :class:`Query` (or a
:class:`Sleep`, a :class:`Transaction`, a :class:`State`) and receive its result, and never touch a connection.
:func:`run` carries them out on a :class:`psycopg.Connection` (the operator on a worker, the CLI), :func:`arun` on a
:class:`psycopg.AsyncConnection` (the trigger in Airflow's triggerer). An error of a step is thrown back into the
generator where the step was asked for, so that its ``try``/``except`` handle it as if the query had run there.
This module imports no psycopg until it runs a step: the catalog's readers are imported when DAG files are parsed.

A function decorated with :func:`step_function` keeps its plain synchronous call, ``f(conn, *args)``, and offers its
steps as ``f.steps(*args)``, for other step generators to ``yield from``.
"""

from __future__ import annotations

import asyncio
import functools
import time
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, Literal, ParamSpec, TypeAlias, TypeVar

if TYPE_CHECKING:
    from collections.abc import Callable, Generator, Iterator, Mapping, Sequence

    from psycopg import AsyncConnection, Connection, sql

T = TypeVar("T")
P = ParamSpec("P")

Row: TypeAlias = "tuple[Any, ...]"
Statement: TypeAlias = "str | sql.SQL | sql.Composed"


@dataclass(frozen=True)
class Query:
    """Run ``statement``; the step's result is nothing, the first row (or ``None``), or every row.

    :param statement: SQL text, or a :mod:`psycopg.sql` composition for identifiers.
    :param params: the statement's parameters.
    :param fetch: ``none``, ``one`` or ``all``.
    """

    statement: Statement
    params: Sequence[Any] | Mapping[str, Any] | None = None
    fetch: Literal["none", "one", "all"] = "none"


@dataclass(frozen=True)
class Sleep:
    """Wait ``seconds`` (the asynchronous driver yields to the event loop meanwhile)."""

    seconds: float


@dataclass(frozen=True)
class Transaction:
    """Run ``steps`` in one transaction: committed when they return (unless ``rollback``), rolled back when they
    raise. A statement cut off by an interruption (the task's timeout, a cancelled trigger) is cancelled on the
    server first.

    :param steps: the steps to run in it.
    :param rollback: roll back even when they return (to look without changing anything).
    """

    steps: Steps[Any]
    rollback: bool = False


@dataclass(frozen=True)
class State:
    """Ask for the connection's :class:`ConnectionState`."""


@dataclass(frozen=True)
class ConnectionState:
    """What the connection knows without a round trip.

    :param server_version: e.g. ``170002`` for PostgreSQL 17.2.
    :param broken: the connection was lost (not closed on purpose).
    """

    server_version: int
    broken: bool


Step: TypeAlias = "Query | Sleep | Transaction | State"
Steps: TypeAlias = "Generator[Step, Any, T]"


def execute(statement: Statement, params: Sequence[Any] | Mapping[str, Any] | None = None) -> Steps[None]:
    """Run ``statement`` for its effect."""
    yield Query(statement, params)


def fetchone(statement: Statement, params: Sequence[Any] | Mapping[str, Any] | None = None) -> Steps[Row | None]:
    """Run ``statement``; its first row, or ``None``."""
    row: Row | None = yield Query(statement, params, "one")
    return row


def fetchall(statement: Statement, params: Sequence[Any] | Mapping[str, Any] | None = None) -> Steps[list[Row]]:
    """Run ``statement``; all its rows."""
    rows: list[Row] = yield Query(statement, params, "all")
    return rows


def sleep(seconds: float) -> Steps[None]:
    """Wait ``seconds`` without holding the event loop."""
    yield Sleep(seconds)


def in_transaction(steps: Steps[T], *, rollback: bool = False) -> Steps[T]:
    """Run ``steps`` in one transaction (see :class:`Transaction`); what they return."""
    result: T = yield Transaction(steps, rollback)
    return result


def connection_state() -> Steps[ConnectionState]:
    """The connection's :class:`ConnectionState`."""
    state: ConnectionState = yield State()
    return state


def run(conn: Connection, steps: Steps[T]) -> T:
    """Carry ``steps`` out on a synchronous connection and return what they return."""
    result: Any = None
    error: BaseException | None = None
    while True:
        try:
            step = steps.throw(error) if error is not None else steps.send(result)
        except StopIteration as stop:
            return stop.value
        finally:
            error = None  # break the reference cycle through the traceback
        result = None
        try:
            result = _run_step(conn, step)
        except BaseException as exc:  # thrown back into the steps, which handle it or let it through
            error = exc


def _run_step(conn: Connection, step: Step) -> Any:
    if isinstance(step, Query):
        cursor = conn.execute(step.statement, step.params)
        return cursor.fetchone() if step.fetch == "one" else cursor.fetchall() if step.fetch == "all" else None
    if isinstance(step, Transaction):
        with conn.transaction(force_rollback=step.rollback), _cancel_when_interrupted(conn):
            return run(conn, step.steps)
    if isinstance(step, Sleep):
        time.sleep(step.seconds)
        return None
    return ConnectionState(conn.info.server_version, conn.broken)


@contextmanager
def _cancel_when_interrupted(conn: Connection) -> Iterator[None]:
    """When the worker interrupts a running statement (Airflow's execution_timeout, Ctrl-C), cancel it on the server
    and close the connection, so that PostgreSQL rolls it back now instead of finishing it for nobody."""
    from psycopg.pq import TransactionStatus

    try:
        yield
    except BaseException:
        if not conn.closed and conn.info.transaction_status == TransactionStatus.ACTIVE:  # a statement was cut off
            with suppress(Exception):
                conn.cancel_safe(timeout=5)
            conn.close()
        raise


async def arun(conn: AsyncConnection, steps: Steps[T]) -> T:
    """Carry ``steps`` out on an asynchronous connection and return what they return.

    A task cancelled while a statement runs has psycopg cancel it on the server (and close the connection if the
    server does not stop it); the transaction is then rolled back, and :class:`asyncio.CancelledError` goes on.
    """
    result: Any = None
    error: BaseException | None = None
    while True:
        try:
            step = steps.throw(error) if error is not None else steps.send(result)
        except StopIteration as stop:
            return stop.value
        finally:
            error = None
        result = None
        try:
            result = await _arun_step(conn, step)
        except BaseException as exc:
            error = exc


async def _arun_step(conn: AsyncConnection, step: Step) -> Any:
    if isinstance(step, Query):
        cursor = await conn.execute(step.statement, step.params)
        if step.fetch == "one":
            return await cursor.fetchone()
        return await cursor.fetchall() if step.fetch == "all" else None
    if isinstance(step, Transaction):
        async with conn.transaction(force_rollback=step.rollback):
            return await arun(conn, step.steps)
    if isinstance(step, Sleep):
        await asyncio.sleep(step.seconds)
        return None
    return ConnectionState(conn.info.server_version, conn.broken)


class StepFunction(Generic[P, T]):
    """A step generator function that can also be called on a synchronous connection (see :func:`step_function`)."""

    def __init__(self, steps: Callable[P, Steps[T]]) -> None:
        self.steps = steps
        functools.update_wrapper(self, steps)

    def __call__(self, conn: Connection, *args: P.args, **kwargs: P.kwargs) -> T:
        return run(conn, self.steps(*args, **kwargs))


def step_function(steps: Callable[P, Steps[T]]) -> StepFunction[P, T]:
    """Make ``f(*args)``, a generator of steps, callable as ``f(conn, *args)`` on a synchronous connection, its steps
    staying available as ``f.steps(*args)``."""
    return StepFunction(steps)
