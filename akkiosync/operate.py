"""Commands that change a job's state by hand: ``reset`` and ``accept``.

Each holds the job's lock (the one its runs take) for everything it does, so that it never
interleaves with a run of the job in another process: it waits for such a run up to ``--wait``
seconds, or refuses with exit 1 naming the process.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Callable

import click

from akkiosync.akkio import AkkioClient
from akkiosync.app import App, pass_app
from akkiosync.delivery import commit_landed
from akkiosync.errors import AkkioSyncError, DatasetNotFoundError
from akkiosync.results import utc_now
from akkiosync.state import Creation, Refresh, Store

_WAIT = click.option(
    "--wait",
    default=0.0,
    type=click.FloatRange(0),
    help="Seconds to wait for a run of JOB in another process (default: refuse at once).",
)


@click.command()
@click.argument("name")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.option("--delete-dataset", is_flag=True, help="Also delete the dataset on Akkio.")
@click.option(
    "--keep-dataset",
    is_flag=True,
    help="Keep the dataset; forget only the cursor (after changing the watermark or key).",
)
@_WAIT
@pass_app
def reset(
    app: App, name: str, *, yes: bool, delete_dataset: bool, keep_dataset: bool, wait: float
) -> None:
    """Forget JOB's dataset and cursor: its next run creates a new dataset and starts over.

    With --keep-dataset the next run reads from the start (or from source.initial_watermark)
    into the same dataset: set initial_watermark past the rows already sent, or they are sent
    again."""
    if keep_dataset and delete_dataset:
        raise click.UsageError("--keep-dataset and --delete-dataset exclude each other")
    _known(app, name, "reset")
    with app.job_lock(name, wait, undone="reset", on_wait=_waiting_for(name)), app.store() as store:
        state = store.job_state(name)
        refresh = store.refresh(name)  # mode: replace: a new dataset, or an old one to delete
        leftovers = [] if refresh is None else _leftovers(refresh)
        if state.dataset_id is None and state.cursor_json is None and refresh is None:
            click.echo(f"{name}: nothing to reset")
            return
        what = "its cursor" if keep_dataset else f"dataset {state.dataset_name} {state.dataset_id}"
        if not yes:
            click.confirm(f"Reset {name} ({what}, {state.rows_sent} rows sent)?", abort=True)
        if keep_dataset:
            _settle_in_flight(app, store, name)  # a batch that landed counts as the dataset's
            store.restart_cursor(name, utc_now())
            click.echo(
                f"{name}: cursor reset; the next run reads from the start (or from "
                f"source.initial_watermark) into the same dataset {state.dataset_id}"
            )
            return
        if delete_dataset and state.dataset_id:
            with app.client() as client:
                client.delete_dataset(state.dataset_id)
            click.echo(f"{name}: deleted dataset {state.dataset_id}")
        creation = store.pending_creation(name)  # its answer was lost: a dataset may exist
        if creation is not None and delete_dataset:
            with app.client() as client:
                leftovers += _created(client, creation)
        elif creation is not None:
            click.echo(
                f"{name}: the creation of a dataset {creation.dataset_name!r} was never "
                "confirmed; if it was made, it stays on Akkio (--delete-dataset deletes it)"
            )
        for dataset_id in leftovers:
            if delete_dataset:
                with app.client() as client, contextlib.suppress(DatasetNotFoundError):
                    client.delete_dataset(dataset_id)  # gone already: what was wanted
                click.echo(f"{name}: deleted dataset {dataset_id}, left by a refresh")
            else:
                click.echo(f"{name}: dataset {dataset_id}, left by a refresh, stays on Akkio")
        store.reset(name, utc_now())
    click.echo(f"{name}: reset; the next run creates a new dataset and sends every row")


@click.command()
@click.argument("name")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@_WAIT
@pass_app
def accept(app: App, name: str, *, yes: bool, wait: float) -> None:
    """Accept JOB's dataset as it is: its row count becomes the count the job expects.

    For when a run stopped because the dataset's count differs from what the job delivered
    (another writer, rows removed, a request that landed after the landing grace) and the
    dataset is right as it is. The job then goes on from its cursor."""
    _known(app, name, "accepted")
    with (
        app.job_lock(name, wait, undone="accepted", on_wait=_waiting_for(name)),
        app.store() as store,
    ):
        dataset_id = store.job_state(name).dataset_id
        if dataset_id is None:
            raise click.UsageError(f"job {name} has no dataset yet: nothing to accept")
        _settle_in_flight(app, store, name)
        state, intent = store.job_state(name), store.pending_intent(name)
        with app.client() as client:
            count = client.get_dataset(dataset_id).rows
        if count == state.rows_expected and intent is None:
            click.echo(f"{name}: dataset {state.dataset_id} has {count} rows, as expected")
            return
        click.echo(
            f"{name}: dataset {state.dataset_id} has {count} rows; the job expected "
            f"{state.rows_expected}"
        )
        if intent is not None:
            click.echo(
                f"{name}: a batch of {intent.rows} rows whose fate is unknown is forgotten: its "
                "rows are read and sent again by the next run"
            )
        if not yes:
            click.confirm(f"Take {count} rows as right for {name}?", abort=True)
        store.accept_count(name, count, utc_now())
    click.echo(f"{name}: accepted; the next run expects {count} rows and goes on from its cursor")


def _known(app: App, name: str, done: str) -> None:
    """``JobNotFoundError`` for a job no file defines and the store does not know; a note for
    one whose file was removed (what the store holds of it can still be changed)."""
    with app.store() as store:
        defined = app.known_job(name, store)
    if not defined:
        click.echo(
            f"{name}: no job file defines it any more; its state in the store can still be {done}",
            err=True,
        )


def _settle_in_flight(app: App, store: Store, name: str) -> None:
    """Settle the batch a stopped run left in flight, as the next run would, before a command
    changes what the job expects: commit it if the count shows it landed (forgotten, its rows
    would be sent twice); refuse while it may still land."""
    state, intent = store.job_state(name), store.pending_intent(name)
    if intent is None or state.dataset_id is None or intent.dataset_id != state.dataset_id:
        return
    with app.client() as client:
        count = client.get_dataset(state.dataset_id).rows
    if count == intent.rows_before + intent.rows:
        commit_landed(store, intent, utc_now())
        click.echo(
            f"{name}: the batch of {intent.rows} rows in flight when the last run stopped "
            "had landed: committed"
        )
        return
    grace = app.settings.landing_grace
    ends = intent.created_at + dt.timedelta(seconds=grace)
    if count == intent.rows_before and utc_now() < ends:
        raise AkkioSyncError(
            f"job {name}: a batch of {intent.rows} rows sent at {intent.created_at:%H:%M:%S} "
            f"UTC may still land (its landing grace ends at {ends:%H:%M:%S}): nothing was "
            f"changed; `akkiosync sync {name}` settles it, or try again after that"
        )


def _leftovers(refresh: Refresh) -> list[str]:
    """The datasets an unfinished refresh would have deleted: its partial one (when its id is
    known) or the one it replaced."""
    dataset_id = refresh.previous_id if refresh.phase == "deleting" else refresh.dataset_id
    return [] if dataset_id is None else [dataset_id]


def _created(client: AkkioClient, creation: Creation) -> list[str]:
    """The datasets an unconfirmed creation made: of its name, and not there before it."""
    known = set(creation.known_ids)
    named = (d.id for d in client.list_datasets() if d.name == creation.dataset_name)
    return [dataset_id for dataset_id in named if dataset_id not in known]


def _waiting_for(job: str) -> Callable[[str], None]:
    """What a command says when it must wait for a run of ``job`` in another process."""
    return lambda pid: click.echo(f"waiting for job {job}, running in process {pid}...", err=True)
