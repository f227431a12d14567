"""A seeded model of the whole engine on a bad day, and the invariants it must keep.

One schedule (`run_schedule(seed, directory)`) drives real passes (`Reconciler.run`, the folder
source, the state store on disk) against the Kravia simulator in process, on clocks of its own:

- the source changes between passes: new invoices (one in three with a PDF copy), amounts
  down or to 0, due dates moved (in and out of eligibility), invoices removed and back;
- holds are put on and released; a source's `id_prefix` is changed (the pass must refuse it);
- the state store is copied and, later, restored from that older copy;
- Kravia answers in each plausible shape (details, search envelope) and changes shape;
- the host's clock is off from Kravia's, by minutes to an hour, and is set back and forth;
- calls meet 429, 503 and lost answers (the call applied, the answer never arrives);
- the process is killed at a random point: before a call leaves, after Kravia applied it but
  before the answer, or at a state write; nothing after that point reaches Kravia or the store,
  and the next pass is a new process with a new store handle, once the lease has expired.

Invariants, checked as the calls leave and after every pass:

- no accountingInvoiceId is registered twice; nothing held, paid, removed or ineligible (due
  date, minimum amount) is registered or started; no Start before the copy, when there is one;
- no payment id reaches Kravia twice, and no payment takes Kravia's capital below what the
  source says is still owed;

and once faults stop, within `QUIET_PASSES_MAX` passes (each a while later):

- every eligible invoice is in Kravia exactly once, started, with its copy when it has one,
  and Kravia's capital is what the source says is owed; a case or payment is parked for a
  person only where Kravia's answers cannot tell whether a second one would be made.

A violation is an `AssertionError` naming the seed and what happened, so `run_schedule(seed)`
replays it exactly (the schedule depends on the seed alone).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import multiprocessing
import random
import sqlite3
import tempfile
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs
from zoneinfo import ZoneInfo

import httpx

from kravia_sync.engine.gone import is_gone_note
from kravia_sync.engine.reconcile import Reconciler
from kravia_sync.engine.summary import RunSummary
from kravia_sync.engine.worklist import WorkList
from kravia_sync.kravia.client import KraviaClient
from kravia_sync.logging import configure_logging
from kravia_sync.settings import load_settings
from kravia_sync.state.errors import LeaseHeldError
from kravia_sync.state.store import StateStore
from kravia_sync.testing import minimal_pdf
from kravia_sync.testing.simulator import Shape, Simulator

TOKEN = "model-token-4Kq9w"
CREDITOR_ID = 10759
BASE_URL = "http://kravia.model/api/v2/"
OSLO = ZoneInfo("Europe/Oslo")
MIN_DAYS = 14
MIN_AMOUNT = Decimal(100)
SETTLE_SECONDS = 5
LEASE_SECONDS = 120
QUIET_PASSES_MAX = 5  # passes, once faults stop, within which every schedule must settle
PASS_TIMEOUT_S = 60.0  # a pass in process that takes longer than this is hung: a failure
MUTATING = frozenset({"register", "document", "start", "payment", "creditnote", "bookkeep"})
DETAILS_SHAPES = ("list", "object", "named")
SEARCH_SHAPES = ("items", "list", "data", "value")


class KilledError(Exception):
    """The process was killed: raised at whatever it tries next (a call, a state write)."""


class InvariantError(AssertionError):
    """An invariant broke; the message names the seed and what happened (`trace`: every
    step of the schedule up to it)."""

    trace: list[str]


# --- the source, as the model knows it ------------------------------------------------------


@dataclass
class ModelInvoice:
    number: int
    amount: Decimal
    due: date
    pdf: bool
    present: bool = True
    ext_id: str | None = None  # the source's own id for it, where it has one (`drift`)

    def record(self) -> dict[str, Any]:
        own_id = {} if self.ext_id is None else {"accounting_invoice_id": self.ext_id}
        return {
            **own_id,
            "invoice_number": str(self.number),
            "invoice_date": (self.due - timedelta(days=14)).isoformat(),
            "due_date": self.due.isoformat(),
            "amount": str(self.amount),
            "currency": "NOK",
            "debtor_name": f"Kunde {self.number}",
            "debtor_number": f"C{self.number}",
            "debtor_email": f"kunde{self.number}@example.com",
            "address_line1": "Storgata 1",
            "postal_code": "0150",
            "city": "Oslo",
            "description": f"Faktura {self.number}",
        }


# --- faults of one pass -----------------------------------------------------------------------


@dataclass
class PassFaults:
    rate_limited: float = 0.0
    unavailable: float = 0.0
    lost_answer: float = 0.0
    kill_at: int | None = None  # the n-th event of the pass (a call or a state write)
    kill_after_applied: bool = False  # a call killed at: after Kravia applied it

    @property
    def any(self) -> bool:
        return bool(self.rate_limited or self.unavailable or self.lost_answer) or (
            self.kill_at is not None
        )


# --- the world: clocks, Kravia, the store on disk -------------------------------------------


class ModelSimulator(Simulator):
    """The simulator on the model's clock (Kravia's clock: it never goes back)."""

    def __init__(self, world: World) -> None:
        self._world = world
        super().__init__(token=TOKEN, creditor_id=CREDITOR_ID)

    def _now(self) -> datetime:
        return self._world.kravia_now


@dataclass
class World:
    seed: int
    directory: Path
    rng: random.Random = field(init=False)
    kravia_now: datetime = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
    host_skew: timedelta = timedelta(0)
    invoices: dict[int, ModelInvoice] = field(default_factory=dict)
    holds: set[int] = field(default_factory=set)  # invoice numbers held
    prefix: str = ""
    faults: PassFaults = field(default_factory=PassFaults)
    dead: bool = False  # the process is gone: nothing more reaches Kravia or the store
    killed: bool = False  # this pass's process was killed
    events: int = 0
    trace: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    mutating_calls: int = 0
    pass_number: int = 0
    violations: list[InvariantError] = field(default_factory=list)
    rolls: dict[str, int] = field(default_factory=dict)
    lost: list[tuple[str, str]] = field(default_factory=list)  # (operation, aid) lost or killed
    # Whether invoices' own ids change in the source (see `_drift`), drawn from a random
    # source of their own, so that a schedule without drift replays as it always did.
    drift: bool = False
    drift_rng: random.Random = field(init=False)
    # Every accountingInvoiceId each invoice has had (its number, its own ids), by number.
    ids_had: dict[int, set[str]] = field(default_factory=dict)
    hold_keys: dict[int, set[str]] = field(default_factory=dict)  # how each hold was placed
    confirm_gone: bool = False  # the next pass runs with --confirm-gone

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self.drift_rng = random.Random(f"drift|{self.seed}")
        self.sim = ModelSimulator(self)
        self.inner = httpx.ASGITransport(app=self.sim.app)
        self.invoice_folder.mkdir(parents=True, exist_ok=True)

    # clocks
    def host_now(self) -> datetime:
        return self.kravia_now + self.host_skew

    def today(self) -> date:
        return self.host_now().astimezone(OSLO).date()

    def later(self, delta: timedelta) -> None:
        self.kravia_now += delta

    # paths
    @property
    def invoice_folder(self) -> Path:
        return self.directory / "invoices"

    @property
    def config(self) -> Path:
        return self.directory / "kravia-sync.toml"

    @property
    def state_path(self) -> Path:
        return self.directory / "state" / "kravia-sync.db"

    def note(self, text: str) -> None:
        self.trace.append(text)

    def count(self, key: str) -> None:
        self.counts[key] = self.counts.get(key, 0) + 1

    def fail(self, what: str) -> InvariantError:
        tail = "\n  ".join(self.trace[-40:])
        violation = InvariantError(f"seed {self.seed}: {what}\n  last steps:\n  {tail}")
        violation.trace = list(self.trace)
        # Raised inside a call, the engine may catch it as any other error: kept here too,
        # and raised again once the pass is over.
        self.violations.append(violation)
        return violation

    # the source
    def aid(self, number: int) -> str:
        """The accountingInvoiceId the source gives the invoice now."""
        invoice = self.invoices.get(number)
        own_id = None if invoice is None else invoice.ext_id
        return f"{self.prefix}{number if own_id is None else own_id}"

    def has_case(self, number: int) -> bool:
        """Whether Kravia has a case for invoice `number`."""
        return any(case.invoice_no == str(number) for case in self.sim._cases.values())

    def had_id(self, number: int, aid: str) -> bool:
        """Whether the source ever gave invoice `number` this accountingInvoiceId."""
        return aid == f"{self.prefix}{number}" or aid in {
            f"{self.prefix}{own}" for own in self.ids_had.get(number, set())
        }

    def eligible(self, invoice: ModelInvoice) -> bool:
        return (
            invoice.present
            and invoice.number not in self.holds
            and invoice.amount >= MIN_AMOUNT
            and invoice.due <= self.today() - timedelta(days=MIN_DAYS)
        )

    def write_source(self) -> None:
        records = [inv.record() for inv in self.invoices.values() if inv.present]
        (self.invoice_folder / "invoices.json").write_text(json.dumps(records), encoding="utf-8")
        for invoice in self.invoices.values():
            pdf = self.invoice_folder / f"{invoice.number}.pdf"
            if invoice.pdf and invoice.present and not pdf.exists():
                pdf.write_bytes(minimal_pdf(f"Invoice {invoice.number}"))
            elif pdf.exists() and not invoice.present:
                pdf.unlink()

    def write_config(self) -> None:
        self.config.write_text(
            f"""
[kravia]
base_url = "{BASE_URL}"
creditor_id = {CREDITOR_ID}
timeout_seconds = 5
max_in_flight = 4
requests_per_second = 1000

[retry]
backoff_base_seconds = 1
backoff_cap_seconds = 120
settle_seconds = {SETTLE_SECONDS}
max_inline_wait_seconds = 0
retries_per_pass = 1

[state]
path = "state/kravia-sync.db"
lease_seconds = {LEASE_SECONDS}

[log]
format = "json"
level = "error"

[policy]
min_days_overdue = {MIN_DAYS}
min_amount = {MIN_AMOUNT}

[[sources]]
name = "files"
connector = "folder"
id_prefix = "{self.prefix}"
payments = "amount_drops"
[sources.settings]
path = "invoices"
""",
            encoding="utf-8",
        )

    # a kill point: every call and every state write is one event of the pass
    def event(self) -> bool:
        """Count one event; whether the process dies at it."""
        if self.dead:
            raise KilledError("killed")
        self.events += 1
        return self.faults.kill_at is not None and self.events == self.faults.kill_at

    def kill(self, where: str) -> KilledError:
        self.dead = True
        self.killed = True
        self.note(f"    killed {where}")
        self.count("kills")
        return KilledError(f"killed {where}")

    # Kravia as seen from the engine's side of the wire
    async def call(self, request: httpx.Request) -> httpx.Response:
        await request.aread()
        self.kravia_now += timedelta(milliseconds=3)
        operation, aid = self._operation(request)
        kill_here = self.event()
        if kill_here and not self.faults.kill_after_applied:
            raise self.kill(f"before {operation} {aid or ''} left")
        if operation in MUTATING:
            self._check_call(operation, aid, request)
        roll = self._roll(operation, aid, request)
        if roll < self.faults.rate_limited:
            self.count("429")
            return httpx.Response(429, headers={"Retry-After": "1"}, request=request)
        if roll < self.faults.rate_limited + self.faults.unavailable:
            self.count("503")
            return httpx.Response(503, json={"title": "unavailable"}, request=request)
        response = await self.inner.handle_async_request(request)
        await response.aread()
        if operation in MUTATING and response.status_code < 400:
            self.mutating_calls += 1
            self.note(f"    {operation} {aid} -> {response.status_code}")
        if kill_here:
            self.lost.append((operation, aid or ""))
            raise self.kill(f"after Kravia applied {operation} {aid or ''}")
        if operation in MUTATING and self._roll("lost", aid, request) < self.faults.lost_answer:
            self.count("lost")
            self.lost.append((operation, aid or ""))
            self.note(f"    answer lost: {operation} {aid}")
            raise httpx.ReadError("the answer was lost", request=request)
        return response

    def _roll(self, what: str, aid: str | None, request: httpx.Request) -> float:
        """A draw for this call alone (the seed, the pass, the call and how many such calls
        the pass made before), so the order in which concurrent calls arrive changes nothing."""
        key = f"{self.seed}|{self.pass_number}|{what}|{request.method} {request.url.path}|{aid}"
        self.rolls[key] = self.rolls.get(key, 0) + 1
        return random.Random(f"{key}|{self.rolls[key]}").random()

    def _operation(self, request: httpx.Request) -> tuple[str, str | None]:
        path = request.url.path
        method = request.method
        if path.endswith("/invoice/register"):
            body = json.loads(request.content)
            return "register", str(body.get("accountingInvoiceId"))
        if path.endswith("/action") and method == "POST":
            action = parse_qs(request.url.query.decode()).get("action", [""])[0]
            kravia_id = int(path.split("/")[-2])
            return ("start" if action == "Start" else f"action {action}"), self._aid_of(kravia_id)
        if path.endswith("/document"):
            return "document", self._aid_of(int(path.split("/")[-2]))
        if path.endswith(("/invoice/payment", "/invoice/creditnote")):
            body = {key.lower(): value for key, value in json.loads(request.content).items()}
            lines = [
                f"{self._aid_of(int(line.get('invoiceId') or line.get('InvoiceId')))}:"
                f"{line.get('amount') or line.get('Amount')}"
                for line in body.get("invoices", [])
            ]
            what = "payment" if path.endswith("/payment") else "creditnote"
            return what, f"{body.get('accountingpaymentid')} {' '.join(lines)}"
        if path.endswith("/bookkeep"):
            return "bookkeep", None
        return path.rsplit("/", 1)[-1], None

    def _aid_of(self, kravia_id: int) -> str | None:
        case = self.sim._cases.get(kravia_id)
        return None if case is None else case.accounting_invoice_id

    def _check_call(self, operation: str, aid: str | None, request: httpx.Request) -> None:
        if operation == "register":
            assert aid is not None
            existing = [c for c in self.sim._cases.values() if c.accounting_invoice_id == aid]
            if existing:
                raise self.fail(f"{aid} registered again: Kravia already has case {existing[0].id}")
            number = str(json.loads(request.content).get("invoiceNo"))
            same = [c for c in self.sim._cases.values() if c.invoice_no == number]
            if same:
                raise self.fail(
                    f"invoice {number} registered again as {aid}: Kravia already has case "
                    f"{same[0].id} for it, as {same[0].accounting_invoice_id}"
                )
            self._check_eligible("registered", aid, number)
        elif operation == "start":
            assert aid is not None
            case = next(c for c in self.sim._cases.values() if c.accounting_invoice_id == aid)
            self._check_eligible("started", aid, case.invoice_no)
            invoice = self.invoice_of(case.invoice_no)
            if invoice is not None and invoice.pdf and not case.documents:
                raise self.fail(f"{aid} started before its copy was uploaded")
        elif operation in {"payment", "creditnote"}:
            body = json.loads(request.content)
            payment_id = body.get("AccountingPaymentId") or body.get("accountingPaymentId")
            sent = [p for p in self.sim.payments() if p["accountingPaymentId"] == payment_id]
            if payment_id and sent:
                raise self.fail(f"payment {payment_id} sent again: Kravia has it already")

    def invoice_of(self, number: str | None) -> ModelInvoice | None:
        return self.invoices.get(int(number)) if number and number.isdigit() else None

    def _check_eligible(self, what: str, aid: str, number: str | None) -> None:
        invoice = self.invoice_of(number)
        if invoice is None or not self.had_id(invoice.number, aid):
            raise self.fail(f"{aid} {what}, but no invoice of the source has that id")
        if not self.eligible(invoice):
            why = []
            if not invoice.present:
                why.append("removed from the source")
            if invoice.number in self.holds:
                why.append("held")
            if invoice.amount < MIN_AMOUNT:
                why.append(f"amount {invoice.amount} under the minimum")
            if invoice.due > self.today() - timedelta(days=MIN_DAYS):
                why.append(f"due {invoice.due}, not {MIN_DAYS} days overdue on {self.today()}")
            raise self.fail(f"{aid} {what} though {', '.join(why)}")


class _ModelTransport(httpx.AsyncBaseTransport):
    def __init__(self, world: World) -> None:
        self._world = world

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return await self._world.call(request)


class _MortalStore(StateStore):
    """The state store of one process: every write transaction is a kill point, and once the
    process is dead nothing more is written."""

    def __init__(self, path: Path, world: World) -> None:
        self._world = world
        super().__init__(path)

    def _check(self) -> None:
        if self._world.event():
            raise self._world.kill("at a state write")

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        self._check()
        with super()._write() as connection:
            yield connection

    def write_batch(self, *args: Any, **kwargs: Any) -> None:
        self._check()
        super().write_batch(*args, **kwargs)


# --- one schedule -----------------------------------------------------------------------------


@dataclass
class Outcome:
    seed: int
    passes: int
    quiet_passes: int
    counts: dict[str, int]
    parked: list[str]


def run_schedule(
    seed: int, directory: Path, *, steps: int | None = None, drift: bool = False
) -> Outcome:
    """Run one seeded schedule in `directory` (empty); raise `InvariantError` on a broken
    invariant. `drift`: invoices' own ids also change in the source (see `_drift`)."""
    world = World(seed, directory)
    world.drift = drift
    rng = world.rng
    world.host_skew = timedelta(seconds=rng.choice([0, 0, 330, -330, 3600, -90]))
    world.sim.shape = _shape_for(world, _random_shape(rng))
    world.write_config()
    next_number = 1000
    snapshot: tuple[Path, set[int]] | None = None
    passes = 0
    for step in range(steps if steps is not None else rng.randint(5, 10)):
        world.note(f"step {step} (Kravia {world.kravia_now:%H:%M:%S}, skew {world.host_skew})")
        # the source changes
        for _ in range(rng.randint(0, 4) if step else rng.randint(3, 6)):
            next_number += 1
            world.invoices[next_number] = ModelInvoice(
                number=next_number,
                amount=Decimal(rng.choice([60, 150, 480, 1200, 5000])) + Decimal("0.50"),
                due=world.today() - timedelta(days=rng.choice([40, 30, 20, 15, 10, 2])),
                pdf=rng.random() < 1 / 3,
            )
            world.note(f"  new {next_number}: {world.invoices[next_number]}")
        _edit(world, rng)
        if world.drift:
            _drift(world)
        # the store, the prefix, Kravia's shape, the host's clock
        if snapshot is None and rng.random() < 0.25 and world.state_path.exists():
            snapshot = (_copy_store(world, f"snapshot-{step}"), set(world.holds))
            world.note("  state store copied")
        elif snapshot is not None and rng.random() < 0.3:
            _restore_store(world, snapshot[0])
            world.holds = set(snapshot[1])
            world.note(f"  state store restored from the older copy (holds {sorted(world.holds)})")
            snapshot = None
        if rng.random() < 0.15:
            world.sim.shape = _shape_for(world, _random_shape(rng))
            world.note(f"  Kravia answers in {world.sim.shape}")
        if rng.random() < 0.1:
            world.host_skew = timedelta(seconds=rng.choice([0, 330, -330, 3600, -3600]))
            world.note(f"  host clock now off by {world.host_skew}")
        world.write_source()
        if rng.random() < 0.08:
            _try_prefix_change(world)
        # the pass, with its faults
        world.faults = _random_faults(rng)
        world.note(f"  pass {passes + 1} with {world.faults}")
        _pass(world)
        passes += 1
        world.later(timedelta(minutes=rng.choice([1, 3, 10, 30])))
    # faults stop: within a few passes everything settles
    # (settled: two passes in a row that send nothing, neither failed)
    world.faults = PassFaults()
    quiet = 0
    idle = 0
    while idle < 2:
        quiet += 1
        if quiet > QUIET_PASSES_MAX:
            raise world.fail(f"not settled {QUIET_PASSES_MAX} passes after the faults stopped")
        world.note(f"quiet pass {quiet}")
        before = world.mutating_calls
        summary = _pass(world)
        passes += 1
        world.later(timedelta(minutes=15))
        idle = idle + 1 if _idle(world, before, summary) else 0
    parked = _check_settled(world)
    return Outcome(seed, passes, quiet, dict(world.counts), parked)


def _idle(world: World, calls_before: int, summary: RunSummary | None) -> bool:
    """A pass that sent nothing, did not fail, and moved no case on its own: a case adopted or
    verified in it (no call that changes Kravia) may still have work for the next pass (the
    capital it was adopted at, forwarded as a drop)."""
    return (
        world.mutating_calls == calls_before
        and summary is not None
        and summary.status != "failed"
        and not any(summary.counts.get(name) for name in ("adopted", "verified"))
    )


def _random_shape(rng: random.Random) -> Shape:
    return Shape(
        details_shape=rng.choice(DETAILS_SHAPES),
        search_shape=rng.choice(SEARCH_SHAPES),
        search_without_aid=rng.random() < 0.1,
    )


def _shape_for(world: World, shape: Shape) -> Shape:
    """Where ids change (`drift`), Kravia's search reports them: an id given to another
    invoice, with the state store restored from before the first one's case and a search
    without ids, cannot be told from a new invoice's (a known limit, see
    test_id_drift_attack.py)."""
    return replace(shape, search_without_aid=False) if world.drift else shape


def _random_faults(rng: random.Random) -> PassFaults:
    if rng.random() < 0.25:
        return PassFaults()
    return PassFaults(
        rate_limited=rng.choice([0.0, 0.0, 0.1]),
        unavailable=rng.choice([0.0, 0.0, 0.1]),
        lost_answer=rng.choice([0.0, 0.1, 0.3]),
        kill_at=rng.randint(1, 40) if rng.random() < 0.4 else None,
        kill_after_applied=rng.random() < 0.5,
    )


def _edit(world: World, rng: random.Random) -> None:
    """Edit records between passes: amounts down or to 0, due dates moved, removals and
    returns, holds and releases."""
    numbers = sorted(world.invoices)
    for number in rng.sample(numbers, k=min(len(numbers), rng.randint(0, 3))):
        invoice = world.invoices[number]
        change = rng.choice(["down", "zero", "due", "remove", "hold", "release"])
        if change == "down" and invoice.amount > 1:
            invoice.amount = (invoice.amount * Decimal(rng.choice(["0.5", "0.9"]))).quantize(
                Decimal("0.01")
            )
        elif change == "zero":
            invoice.amount = Decimal("0.00")
        elif change == "due":
            invoice.due = world.today() - timedelta(days=rng.choice([40, 20, 5, -10]))
        elif change == "remove":
            invoice.present = not invoice.present
        elif change == "hold":
            world.holds.add(number)
            with StateStore(world.state_path) as store:
                key = str(number) if rng.random() < 0.5 else world.aid(number)
                if world.drift and not world.has_case(number):
                    # A hold by the id of an invoice not in Kravia yet does not follow a later
                    # change of that id: nothing ties the two ids together (a known gap, see
                    # test_id_drift_attack.py). Held by its number instead.
                    key = str(number)
                store.hold(key, reason="disputed", by="model", now=world.host_now())
                world.hold_keys.setdefault(number, set()).add(key)
        elif change == "release" and world.holds:
            released = rng.choice(sorted(world.holds))
            world.holds.discard(released)
            with StateStore(world.state_path) as store:
                for key in sorted(
                    {str(released), world.aid(released)} | world.hold_keys.pop(released, set())
                ):
                    store.release(key)
        world.note(f"  {change} {number}: {invoice}")


def _drift(world: World) -> None:
    """Change invoices' own ids in the source between passes (from `world.drift_rng`): a new
    invoice has an id of its own or none (its number stands in); later an id is filled in,
    changed (an ERP migration renumbers its keys) or lost again, and two invoices' ids are
    swapped, their numbers staying."""
    rng = world.drift_rng
    for number, invoice in world.invoices.items():
        if number not in world.ids_had:
            world.ids_had[number] = set()
            if rng.random() < 0.5:
                _give_id(world, invoice)
    numbers = sorted(world.invoices)
    for number in rng.sample(numbers, k=min(len(numbers), rng.randint(0, 3))):
        invoice = world.invoices[number]
        change = rng.choice(["new id", "new id", "lost", "swap"])
        if change == "new id":
            _give_id(world, invoice)
        elif change == "lost":
            invoice.ext_id = None
        else:
            other = world.invoices[rng.choice(numbers)]
            invoice.ext_id, other.ext_id = other.ext_id, invoice.ext_id
            for swapped in (invoice, other):
                if swapped.ext_id is not None:
                    world.ids_had[swapped.number].add(swapped.ext_id)
            change = f"swap with {other.number}"
        world.note(f"  id of {number}: {change} -> {world.aid(number)}")


def _give_id(world: World, invoice: ModelInvoice) -> None:
    given = sum(len(ids) for ids in world.ids_had.values())
    invoice.ext_id = f"E{given}-{invoice.number}"
    world.ids_had[invoice.number].add(invoice.ext_id)


def _try_prefix_change(world: World) -> None:
    """Change the source's id_prefix: with cases stored it must be refused, sending nothing."""
    if not world.state_path.exists():
        return
    with sqlite3.connect(world.state_path) as connection:
        tables = connection.execute("SELECT 1 FROM sqlite_master WHERE name = 'cases'").fetchall()
        has_cases = bool(tables) and connection.execute("SELECT 1 FROM cases").fetchone()
    if not has_cases:
        return
    old = world.prefix
    world.prefix = old + "X-"
    world.write_config()
    world.note(f"  id_prefix changed to {world.prefix!r}")
    world.faults = PassFaults()
    before = world.mutating_calls
    summary = _pass(world)
    if summary is None or summary.status != "failed" or world.mutating_calls != before:
        raise world.fail("a changed id_prefix with cases stored was not refused")
    world.count("prefix_refused")
    world.prefix = old
    world.write_config()


def _copy_store(world: World, name: str) -> Path:
    target = world.directory / f"{name}.db"
    with sqlite3.connect(world.state_path) as source, sqlite3.connect(target) as copy:
        source.backup(copy)
    return target


def _restore_store(world: World, copy: Path) -> None:
    """Put the older copy back, the way an operator restores a backup (SQLite's backup API,
    so the live file's journal cannot outlive it)."""
    with sqlite3.connect(copy) as source, sqlite3.connect(world.state_path) as live:
        source.backup(live)
    world.count("restores")


def _pass(world: World) -> RunSummary | None:
    """One pass as a new process; None when it was killed."""
    try:
        summary = _process(world)
        if world.drift and summary is not None and "max_gone_share" in (summary.error or ""):
            # Many cases missing, some of them under new ids: a person looks, finds the
            # source whole (in the model it always is), and confirms.
            world.note("    the circuit breaker stopped it: confirmed (--confirm-gone)")
            world.count("gone_confirmed")
            world.confirm_gone = True
            try:
                summary = _process(world)
            finally:
                world.confirm_gone = False
        return summary
    finally:
        if world.violations:
            raise world.violations[0]


def _process(world: World) -> RunSummary | None:
    world.pass_number += 1
    world.rolls.clear()
    for _ in range(3):
        world.dead = False
        world.killed = False
        world.events = 0
        try:
            summary = _one_pass(world)
        except LeaseHeldError:
            # A killed holder's lease: a later start takes it over once it has expired.
            world.later(timedelta(seconds=LEASE_SECONDS + 1))
            world.note("    lease still held: later")
            continue
        except KilledError:
            _bury(world)
            return None
        except BaseException as exc:
            if world.killed:
                _bury(world)
                return None
            raise world.fail(f"the pass raised {type(exc).__name__}: {exc}") from exc
        if world.killed:
            _bury(world)
            return None
        world.note(f"    pass {summary.status}: {summary.error or ''} {dict(summary.counts)}")
        _check_kravia(world)
        return summary
    raise world.fail("the writer lease could not be taken in three tries")


def _bury(world: World) -> None:
    """The killed process is gone: its lease row now names a process that no longer runs (as
    a real kill leaves it; here the process lives on, so its start time is made another's)."""
    with (
        sqlite3.connect(world.state_path) as connection,
        contextlib.suppress(sqlite3.OperationalError),  # killed before the store had tables
    ):
        connection.execute("UPDATE lease SET started = 'a process that was killed'")


def _one_pass(world: World) -> RunSummary:
    settings = load_settings(world.config, overrides={"kravia_token": TOKEN})
    store = _MortalStore(settings.state_path, world)

    async def go() -> RunSummary:
        async with KraviaClient(
            base_url=settings.kravia.base_url,
            token=TOKEN,
            timeout=settings.kravia.timeout_seconds,
            max_in_flight=settings.kravia.max_in_flight,
            requests_per_second=settings.kravia.requests_per_second,
            transport=_ModelTransport(world),
        ) as client:
            reconciler = Reconciler(
                settings,
                store,
                client=client,
                clock=world.host_now,
                confirm_gone=["files"] if world.confirm_gone else [],
            )
            return await asyncio.wait_for(reconciler.run(), PASS_TIMEOUT_S)

    try:
        return asyncio.run(go())
    finally:
        world.dead = True  # the process is gone: its handles write nothing more
        with contextlib.suppress(Exception):  # closing a killed process's store
            store.close()


# --- invariants ---------------------------------------------------------------------------------


def _check_kravia(world: World) -> None:
    """After every pass: one case per accountingInvoiceId, each payment id once, and no
    capital below what the source says is owed."""
    seen: dict[str, int] = {}
    numbers: dict[str, int] = {}
    for case in world.sim.cases():
        aid = str(case["accountingInvoiceId"])
        if aid in seen:
            raise world.fail(f"{aid} has two cases in Kravia: {seen[aid]} and {case['id']}")
        seen[aid] = case["id"]
        number = str(case["invoiceNo"])
        if number in numbers:
            raise world.fail(
                f"invoice {number} has two cases in Kravia: {numbers[number]} and {case['id']}"
            )
        numbers[number] = case["id"]
        invoice = world.invoice_of(number)
        if invoice is not None and invoice.present:
            remaining = Decimal(str(case["remainingAmount"]))
            if remaining < invoice.amount:
                raise world.fail(
                    f"{aid}: Kravia's capital {remaining} is below what the source says is "
                    f"owed ({invoice.amount})"
                )
    payment_ids: set[str] = set()
    for payment in world.sim.payments():
        payment_id = payment.get("accountingPaymentId")
        if payment["type"] in {"Payment", "CreditNote"} and payment_id:
            if payment_id in payment_ids:
                raise world.fail(f"payment {payment_id} reached Kravia twice")
            payment_ids.add(payment_id)


def _check_settled(world: World) -> list[str]:
    """Once faults stopped and a pass had nothing left to send: every eligible invoice in
    Kravia once, started, with its copy, at the capital the source says; what is parked is
    parked only for a possible second case or payment. Returns what was parked, with why."""
    with sqlite3.connect(world.state_path) as connection:
        rows = connection.execute(
            "SELECT accounting_invoice_id, invoice_number, phase, last_error, attention FROM cases"
        ).fetchall()
        payment_rows = connection.execute(
            "SELECT payment_id, phase, note FROM payments WHERE phase = 'needs_review'"
        ).fetchall()
        quarantined = {
            str(number): reason
            for number, reason in connection.execute(
                "SELECT invoice_number, reason FROM quarantine WHERE kind = 'invalid'"
            )
        }
    # By invoice number: the case keeps the id it was registered with, whatever the source
    # calls the invoice now (one source, whose numbers are unique).
    phases = {number: (aid, phase, why) for aid, number, phase, why, _ in rows}
    gone_noted = {str(number) for _, number, _, _, note in rows if is_gone_note(note)}
    kravia = {str(case["invoiceNo"]): case for case in world.sim.cases()}
    parked = [f"{aid}: {why}" for aid, phase, why in phases.values() if phase == "needs_review"]
    parked += [f"payment {pid}: {why}" for pid, _phase, why in payment_rows]
    for reason in parked:
        if not _truly_ambiguous(reason):
            raise world.fail(f"parked without a possible second case or payment: {reason}")
    taken = {str(case["accountingInvoiceId"]): str(case["invoiceNo"]) for case in kravia.values()}
    for invoice in world.invoices.values():
        aid, phase, _ = phases.get(str(invoice.number), (world.aid(invoice.number), "-", None))
        if invoice.present and str(invoice.number) in gone_noted:
            raise world.fail(f"{aid} is noted as gone from the source, which has its invoice")
        if phase in {"needs_review", "rejected"}:
            continue
        other = taken.get(world.aid(invoice.number), str(invoice.number))
        if invoice.present and other != str(invoice.number) and str(invoice.number) not in kravia:
            # Its id is another invoice's case at Kravia and it has none of its own: it cannot
            # be registered under that id, and is quarantined naming both invoices.
            reason = quarantined.get(str(invoice.number), "")
            if f"{other!r}" not in reason or world.aid(invoice.number) not in reason:
                raise world.fail(
                    f"{invoice.number} has the id of invoice {other}'s case, and is not "
                    f"quarantined naming both (state: {phase}; quarantine: {reason!r})"
                )
            continue
        case = kravia.get(str(invoice.number))
        if world.eligible(invoice) and invoice.amount > 0:
            if case is None or not case["started"]:
                raise world.fail(
                    f"{aid} is eligible but not in collection once faults stopped "
                    f"(state: {phase}, Kravia: {case and case['status']})"
                )
            if invoice.pdf and not case["documents"]:
                raise world.fail(f"{aid} is in collection without its copy")
        if case is not None and invoice.present and phase != "-":
            remaining = Decimal(str(case["remainingAmount"]))
            if remaining != invoice.amount:
                raise world.fail(
                    f"{aid}: Kravia's capital is {remaining}, the source says {invoice.amount} "
                    f"is owed (state: {phase})"
                )
    return parked


AMBIGUOUS_REASONS = (
    "cases with this accountingInvoiceId",  # Kravia holds several
    "no accountingInvoiceId we can read",  # Kravia's search cannot tell whose case it is
    # Kravia holds a case with the invoice's number under an id it had before, which the
    # state store (restored from an older copy) does not know: it may be this invoice.
    "from before the invoice had the id",
    "from before its id became",
    # Kravia holds a case under the invoice's id for another invoice number (the source gave
    # this one an id another invoice had): adopting it or registering again would both be
    # wrong, and the state store that knew (restored) cannot tell.
    "one id cannot name two invoices",
)


def _truly_ambiguous(reason: str) -> bool:
    return any(marker in (reason or "") for marker in AMBIGUOUS_REASONS)


# --- many schedules -----------------------------------------------------------------------------


@dataclass
class SeedResult:
    seed: int
    violation: str | None
    counts: dict[str, int]
    parked: list[str]
    passes: int


def run_seed(seed: int) -> SeedResult:
    """One schedule in a directory of its own (removed after), its violation as text."""
    with tempfile.TemporaryDirectory(prefix=f"model-{seed}-") as directory:
        try:
            outcome = run_schedule(seed, Path(directory))
        except InvariantError as violation:
            return SeedResult(seed, str(violation), {}, [], 0)
        except Exception:
            return SeedResult(seed, f"seed {seed}: {traceback.format_exc()}", {}, [], 0)
    return SeedResult(seed, None, outcome.counts, outcome.parked, outcome.passes)


def _quiet_worker() -> None:
    configure_logging(level="critical", fmt="json", stream=io.StringIO())
    # As in the rest of the suite (tests/conftest.py): a pass holds two new invoices as
    # objects and writes the rest out, so the schedules drive written-out ones too.
    WorkList.IN_MEMORY = 2


def run_seeds(seeds: range | list[int], *, workers: int) -> list[SeedResult]:
    """Run schedules over `workers` processes (each its own simulator and state stores)."""
    if workers <= 1:
        return [run_seed(seed) for seed in seeds]
    context = multiprocessing.get_context("spawn")
    # Each schedule leaves a few MB behind in its process (SQLite handles of stores a killed
    # pass abandoned, among others): workers are replaced every 32 schedules.
    with context.Pool(workers, initializer=_quiet_worker, maxtasksperchild=4) as pool:
        return pool.map(run_seed, seeds, chunksize=8)
