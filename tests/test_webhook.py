"""Kravia's webhooks: the receiver's decisions without I/O, its settings, `webhook configure`,
the simulator's webhook, and the daemon's own listener end to end against the simulator."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import io
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
import structlog
from prometheus_client.parser import text_string_to_metric_families
from support import TOKEN, Sim, cli_env, load, run_cli, write_config, write_invoices

from kravia_sync.cli.checks import webhook_url_problem
from kravia_sync.kravia.assumptions import WEBHOOK_SIGNATURE_RECIPES
from kravia_sync.kravia.client import KraviaClient
from kravia_sync.kravia.webhook import (
    LogThrottle,
    MalformedWebhookError,
    Outcome,
    PendingRefreshes,
    SignatureCheck,
    TokenBucket,
    check_signature,
    parse_webhook,
)
from kravia_sync.logging import configure_logging, register_secrets
from kravia_sync.service.daemon import Daemon
from kravia_sync.settings import ConfigError, Settings, load_settings
from kravia_sync.state.store import StateStore

SECRET = "whsec-Lq3n9Vt2Kp"
DOCUMENTED = (
    b'{"header": {"algorithm": "MD5"}, "data": {"timestamp": 1663063069, "eventType": '
    b'"CaseUpdate", "claimId": 123443}, "signature": "16a0"}'
)


def body(claim_id: int, *, signature: str | None = None, data_text: str | None = None) -> bytes:
    data = data_text or json.dumps(
        {"timestamp": 1663063069, "eventType": "CaseUpdate", "claimId": claim_id}
    )
    signed = "" if signature is None else f', "signature": "{signature}"'
    return f'{{"header": {{"algorithm": "MD5"}}, "data": {data}{signed}}}'.encode()


def md5(text: str) -> str:
    return hashlib.md5(text.encode(), usedforsecurity=False).hexdigest()


class TestParse:
    def test_the_documented_payload_names_its_case(self) -> None:
        """The guide's example reads as claimId 123443, a CaseUpdate, at its Unix time."""
        event = parse_webhook(DOCUMENTED)
        assert event.claim_id == 123443
        assert event.event_type == "CaseUpdate"
        assert event.timestamp is not None
        assert event.timestamp.tzinfo is not None
        assert event.timestamp.timestamp() == 1663063069
        assert event.signature == "16a0"
        assert event.data_text == (
            '{"timestamp": 1663063069, "eventType": "CaseUpdate", "claimId": 123443}'
        )

    @pytest.mark.parametrize(
        "raw",
        [
            b"",
            b"\xff\xfe",
            b"[]",
            b"not json",
            b'{"data": {"claimId": 1}} {}',
            b'{"header": {}}',
            b'{"data": [1]}',
            b'{"data": {"claimId": true}}',
            b'{"data": {"claimId": -4}}',
            b'{"data": {"claimId": 1.5}}',
            b'{"data": {"claimId": 1, "x": NaN}}',
            b'{"data": {"claimId": 1}, "Data": {"claimId": 2}}',
            b'{"data": {"claimId": 1}, "signature": 7}',
            b'{"data": {"claimId": 1}, "header": "MD5"}',
            b"[" * 100_000,
        ],
    )
    def test_anything_else_is_malformed(self, raw: bytes) -> None:
        """Bodies that are not a webhook (or name a field twice) raise MalformedWebhookError."""
        with pytest.raises(MalformedWebhookError):
            parse_webhook(raw)

    def test_a_claim_id_in_a_string_is_read(self) -> None:
        """A claimId sent as a string of digits is the same id."""
        assert parse_webhook(b'{"data": {"ClaimId": "77"}}').claim_id == 77


class TestSignatures:
    def test_each_candidate_recipe_is_recognised_by_name(self) -> None:
        """A signature made by hand with each recipe is valid, and named as that recipe."""
        data_text = '{"timestamp": 1, "eventType": "CaseUpdate", "claimId": 5}'
        compact = '{"timestamp":1,"eventType":"CaseUpdate","claimId":5}'
        by_hand = {
            "md5(secret + data compact)": md5(SECRET + compact),
            "md5(data compact + secret)": md5(compact + SECRET),
            "md5(secret + data as sent)": md5(SECRET + data_text),
            "md5(data as sent + secret)": md5(data_text + SECRET),
            "hmac-md5(secret, data compact)": hmac.new(
                SECRET.encode(), compact.encode(), "md5"
            ).hexdigest(),
            "hmac-md5(secret, data as sent)": hmac.new(
                SECRET.encode(), data_text.encode(), "md5"
            ).hexdigest(),
        }
        assert sorted(by_hand) == sorted(WEBHOOK_SIGNATURE_RECIPES)
        for recipe, signature in by_hand.items():
            event = parse_webhook(body(5, signature=signature.upper(), data_text=data_text))
            assert check_signature(event, SECRET) == (SignatureCheck.VALID, recipe)

    def test_a_wrong_missing_or_unchecked_signature_says_so(self) -> None:
        """Another secret: mismatch; none: missing; no secret configured: unchecked; another
        algorithm in the header: mismatch."""
        wrong = parse_webhook(body(5, signature=md5("other" + "{}")))
        assert check_signature(wrong, SECRET) == (SignatureCheck.MISMATCH, None)
        assert check_signature(parse_webhook(body(5)), SECRET) == (SignatureCheck.MISSING, None)
        assert check_signature(wrong, None) == (SignatureCheck.UNCHECKED, None)
        compact = '{"claimId":5}'
        sha = parse_webhook(
            f'{{"header": {{"algorithm": "SHA1"}}, "data": {compact}, '
            f'"signature": "{md5(SECRET + compact)}"}}'.encode()
        )
        assert check_signature(sha, SECRET) == (SignatureCheck.MISMATCH, None)

    def test_the_simulator_signs_with_the_first_recipe(self) -> None:
        """What the simulator sends is valid by the first candidate recipe."""
        from kravia_sync.testing._sim_webhooks import webhook_body  # noqa: PLC0415

        event = parse_webhook(webhook_body(SECRET, 1000001, 1700000000))
        assert check_signature(event, SECRET) == (
            SignatureCheck.VALID,
            WEBHOOK_SIGNATURE_RECIPES[0],
        )


class TestBudget:
    def test_the_token_bucket_allows_a_burst_then_the_rate(self) -> None:
        """A burst of 2 at once, then one every half second at 2 per second."""
        bucket = TokenBucket(rate=2, burst=2, now=100.0)
        assert [bucket.take(100.0) for _ in range(3)] == [True, True, False]
        assert bucket.wait_seconds(100.0) == pytest.approx(0.5)
        assert bucket.take(100.5)
        assert not bucket.take(100.6)
        assert bucket.take(110.0)
        assert bucket.take(110.0)
        assert not bucket.take(110.0)  # never more than the burst, however long it rested

    def test_pending_cases_coalesce_and_the_queue_is_bounded(self) -> None:
        """A case waits once however often it is named; a full queue drops new cases."""
        pending = PendingRefreshes(2)
        assert pending.offer(1) is Outcome.QUEUED
        assert pending.offer(1) is Outcome.COALESCED
        assert pending.offer(2) is Outcome.QUEUED
        assert pending.offer(3) is Outcome.DROPPED
        assert (pending.pop(), pending.pop(), pending.pop()) == (1, 2, None)
        assert pending.offer(1) is Outcome.QUEUED  # read once: named again, it waits again

    def test_a_flood_logs_one_line_per_interval(self) -> None:
        """The throttle lets one line through per interval and counts the rest."""
        throttle = LogThrottle(10)
        assert throttle.allow(0) == 0
        assert [throttle.allow(t) for t in (1, 2, 3)] == [None, None, None]
        assert throttle.allow(10.5) == 3


class TestSettings:
    def test_the_listener_is_off_by_default(self, tmp_path: Path) -> None:
        """[webhook] is disabled unless enabled; no secret is needed then."""
        settings = load_settings(write_config(tmp_path, "http://127.0.0.1:1/"))
        assert settings.webhook.enabled is False
        assert settings.webhook.max_body_bytes == 16 * 1024
        assert settings.kravia_webhook_secret is None

    def test_the_secret_comes_from_the_secrets_directory_or_the_environment(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A file kravia_webhook_secret, or KRAVIA_WEBHOOK_SECRET; it is redacted like the
        token."""
        config = write_config(tmp_path, "http://127.0.0.1:1/")
        secrets = tmp_path / "secrets"
        secrets.mkdir()
        (secrets / "kravia_webhook_secret").write_text(SECRET + "\n")
        settings = load_settings(config, secrets_dir=secrets)
        assert settings.kravia_webhook_secret is not None
        assert settings.kravia_webhook_secret.get_secret_value() == SECRET
        assert SECRET in settings.secret_values()
        monkeypatch.setenv("KRAVIA_WEBHOOK_SECRET", "from-env")
        secret = load_settings(config).kravia_webhook_secret
        assert secret is not None
        assert secret.get_secret_value() == "from-env"

    def test_a_secret_in_the_file_is_refused(self, tmp_path: Path) -> None:
        """The secret never goes in the TOML file."""
        config = write_config(tmp_path, "http://127.0.0.1:1/")
        config.write_text(config.read_text() + f'\n[webhook]\nsecret = "{SECRET}"\n')
        with pytest.raises(ConfigError, match="webhook secret does not belong") as caught:
            load_settings(config)
        assert SECRET not in str(caught.value)

    def test_required_signatures_need_a_secret(self, tmp_path: Path) -> None:
        """require_signature without a secret is refused, naming the key."""
        config = write_config(tmp_path, "http://127.0.0.1:1/")
        config.write_text(config.read_text() + "\n[webhook]\nrequire_signature = true\n")
        with pytest.raises(ConfigError, match=r"webhook\.require_signature"):
            load_settings(config)

    @pytest.mark.parametrize(
        ("url", "allowed"),
        [
            ("https://sync.example.no/kravia/webhook", True),
            ("http://127.0.0.1:9465/kravia/webhook", True),
            ("http://localhost/kravia/webhook", True),
            ("http://[::1]:80/kravia/webhook", True),
            ("http://sync.example.no/kravia/webhook", False),
            ("http://localhost.example.no/kravia/webhook", False),
            ("ftp://sync.example.no/", False),
            ("sync.example.no/kravia/webhook", False),
        ],
    )
    def test_webhook_urls_must_be_https_unless_local(self, url: str, allowed: bool) -> None:
        """https anywhere; plain http only to this machine."""
        assert (webhook_url_problem(url) is None) is allowed


class TestClient:
    def test_configure_webhook_puts_the_guides_body(self) -> None:
        """PUT creditor/{id}/webhook with secret, enabled and url, the token raw."""
        seen: list[httpx.Request] = []

        def handler(request: httpx.Request) -> httpx.Response:
            seen.append(request)
            return httpx.Response(200, json={"success": True})

        async def go() -> None:
            async with KraviaClient(
                base_url="https://kravia.test/api/v2/",
                token=TOKEN,
                transport=httpx.MockTransport(handler),
            ) as client:
                await client.configure_webhook(
                    creditor_id=10759,
                    url="https://x.no/kravia/webhook",
                    secret=SECRET,
                    enabled=True,
                )

        asyncio.run(go())
        (request,) = seen
        assert request.method == "PUT"
        assert str(request.url) == "https://kravia.test/api/v2/creditor/10759/webhook"
        assert request.headers["Authorization"] == TOKEN
        assert json.loads(request.content) == {
            "secret": SECRET,
            "enabled": True,
            "url": "https://x.no/kravia/webhook",
        }


class TestSimulatorWebhook:
    def test_the_setting_is_validated_and_kept_without_showing_the_secret(self, sim: Sim) -> None:
        """PUT creditor/{id}/webhook needs the token, the creditor, a URL, a secret and a
        flag; /_sim/webhook shows the URL, never the secret."""
        url = f"{sim.base_url}creditor/10759/webhook"
        headers = {"Authorization": TOKEN}
        good = {"secret": SECRET, "enabled": True, "url": "https://example.no/hook"}
        assert httpx.put(url, json=good).status_code == 401
        assert httpx.put(url.replace("10759", "1"), json=good, headers=headers).status_code == 404
        refused = httpx.put(url, json={"url": "nope", "enabled": "yes"}, headers=headers)
        assert refused.status_code == 400
        assert set(refused.json()["errors"]) == {"Url", "Secret", "Enabled"}
        assert httpx.put(url, json=good, headers=headers).status_code == 200
        shown = httpx.get(sim.running.root_url + "/_sim/webhook").json()
        assert shown == {
            "url": "https://example.no/hook",
            "enabled": True,
            "secretSet": True,
            "deliveries": [],
        }
        assert SECRET not in json.dumps(shown)
        assert sim.simulator.calls()["webhook"] == {"200": 1, "400": 1, "401": 1, "404": 1}


def webhook_settings(tmp_path: Path, base_url: str, *, webhook: str, kravia: str = "") -> Settings:
    """One folder source on a 1 s schedule, the daemon's HTTP and the webhook on free ports."""
    config = write_config(tmp_path, base_url, source='schedule = "1s"', kravia=kravia)
    config.write_text(
        config.read_text()
        + '\n[daemon]\nport = 0\n\n[webhook]\nenabled = true\nhost = "127.0.0.1"\nport = 0\n'
        + webhook
        + "\n",
        encoding="utf-8",
    )
    return load_settings(config, overrides={"kravia_token": TOKEN, "kravia_webhook_secret": SECRET})


def client_for(settings: Settings) -> KraviaClient:
    return KraviaClient(base_url=settings.kravia.base_url, token=TOKEN, timeout=5)


class RunningDaemon:
    """A Daemon on its own event loop in a thread, serving over real HTTP."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.daemon = Daemon(settings, client_factory=client_for, handle_signals=False)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=self._main, daemon=True)

    def _main(self) -> None:
        async def go() -> int:
            self._loop = asyncio.get_running_loop()
            return await self.daemon.run()

        asyncio.run(go())

    def start(self) -> None:
        self._thread.start()
        wait_for(lambda: self.daemon._lease_held, what="the daemon holding the lease")

    def stop(self) -> None:
        if self._loop is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self.daemon.request_stop)
        self._thread.join(15)
        assert not self._thread.is_alive()

    @property
    def webhook_url(self) -> str:
        assert self.daemon.webhook is not None
        return f"http://127.0.0.1:{self.daemon.webhook.port}/kravia/webhook"

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        assert self.daemon.http is not None
        text = httpx.get(f"http://127.0.0.1:{self.daemon.http.port}/metrics").text
        return {
            (sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        }

    def passes(self) -> float:
        return sum(
            value
            for (name, _), value in self.metrics().items()
            if name == "kravia_sync_passes_total"
        )


@contextmanager
def running(settings: Settings) -> Iterator[RunningDaemon]:
    process = RunningDaemon(settings)
    process.start()
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture
def log_lines() -> Iterator[io.StringIO]:
    """Every log line as rendered (JSON, secrets redacted), for the test to read."""
    stream = io.StringIO()
    register_secrets([TOKEN, SECRET])
    configure_logging(fmt="json", stream=stream)
    yield stream
    structlog.reset_defaults()


def wait_for(check: Any, *, within: float = 15.0, what: str = "") -> Any:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def stored_cases(settings: Settings) -> dict[int, tuple[Any, ...]]:
    """Our cases by Kravia id: phase, Kravia's status and capital as stored, revision."""
    from state_sql import CASES, state_engine  # noqa: PLC0415

    with StateStore(settings.state_path) as store, state_engine(store).connect() as connection:
        rows = connection.execute(CASES.select().where(CASES.c.kravia_id.is_not(None))).mappings()
        return {
            row["kravia_id"]: (
                row["phase"],
                row["kravia_status"],
                row["kravia_remaining"],
                row["revision"],
            )
            for row in rows
        }


def started_ids(sim: Sim, count: int, settings: Settings) -> list[int]:
    """The ids of `count` cases started in Kravia, once the state store says so too (the
    daemon stores a Start's answer a moment after Kravia applied it)."""

    def started() -> list[int]:
        ids = sorted(case["id"] for case in sim.cases() if case["started"])
        if len(ids) != count:
            return []
        stored = stored_cases(settings)
        return ids if all(stored.get(i, ("",))[0] == "started" for i in ids) else []

    return wait_for(started, what=f"{count} cases started, and stored so")


class TestDaemonWebhook:
    def test_a_case_changed_at_kravia_is_read_within_seconds_and_nothing_else(
        self, sim: Sim, tmp_path: Path, log_lines: io.StringIO
    ) -> None:
        """`webhook configure` points the simulator at the daemon; a payout closes a case, the
        simulator's webhook names it, and the store shows it Closed with nothing left within
        5 s, after exactly one call: that case's details."""
        write_invoices(tmp_path / "invoices", range(1, 4), pdf_every=0)
        settings = webhook_settings(tmp_path, sim.base_url, webhook="")
        with running(settings) as daemon:
            ids = started_ids(sim, 3, settings)
            configured = run_cli(
                "webhook",
                "configure",
                "--url",
                daemon.webhook_url,
                cwd=tmp_path,
                env=cli_env(KRAVIA_WEBHOOK_SECRET=SECRET),
            )
            assert configured.returncode == 0, configured.stderr
            assert SECRET not in configured.stdout + configured.stderr
            assert sim.simulator.webhook()["url"] == daemon.webhook_url
            assert sim.simulator.webhook_secret() == SECRET
            passes = daemon.passes()
            wait_for(lambda: daemon.passes() >= passes + 1, what="a no-op pass")

            target = ids[1]
            before = sim.simulator.calls()
            remaining = Decimal(
                next(case for case in sim.cases() if case["id"] == target)["remainingAmount"]
            )
            sim.simulator.payout([(target, remaining)])
            changed_at = time.monotonic()
            wait_for(
                lambda: stored_cases(settings)[target][1:3] == ("Closed", Decimal(0)),
                within=5,
                what="the case Closed in the store",
            )
            assert time.monotonic() - changed_at < 5
            after = sim.simulator.calls()
            metrics = daemon.metrics()

        assert after["total"] - before["total"] == 1
        assert after["details"].get("200", 0) - before["details"].get("200", 0) == 1
        assert sim.simulator.webhook()["deliveries"][0]["status"] == 202
        others = [n for n in ids if n != target]
        assert all(stored_cases(settings)[n][1] is None for n in others)  # not read
        assert metrics[("kravia_sync_webhook_refreshes_total", (("outcome", "changed"),))] == 1
        assert metrics[("kravia_sync_webhook_signatures_total", (("result", "valid"),))] == 1
        assert (
            metrics[
                (
                    "kravia_sync_remote_calls_total",
                    (("endpoint", "details"), ("outcome", "ok")),
                )
            ]
            >= 1
        )
        lines = [json.loads(line) for line in log_lines.getvalue().splitlines()]
        refreshed = [line for line in lines if line["event"] == "case refreshed after a webhook"]
        assert [(line["kravia_id"], line["result"]) for line in refreshed] == [(target, "changed")]
        assert any(line["event"] == "webhook signature recognised" for line in lines)
        assert SECRET not in log_lines.getvalue()
        assert TOKEN not in log_lines.getvalue()

    def test_a_thousand_forged_webhooks_cost_at_most_the_budget_and_change_nothing(
        self, sim: Sim, tmp_path: Path
    ) -> None:
        """Badly signed ones for our cases, unknown claimIds, oversized and malformed bodies:
        at most burst + rate x time case reads, nothing changed in the store or at Kravia,
        and the passes (each pulling back the status) go on."""
        write_invoices(tmp_path / "invoices", range(1, 4), pdf_every=0)
        settings = webhook_settings(
            tmp_path,
            sim.base_url,
            webhook="refreshes_per_second = 2\nrefresh_burst = 2\nqueue_size = 10",
            kravia="status_every_seconds = 0",
        )
        with running(settings) as daemon:
            ids = started_ids(sim, 3, settings)
            wait_for(
                lambda: (
                    all(v[1] == "CollectionStarted" for v in stored_cases(settings).values())
                    and len(stored_cases(settings)) == 3
                ),
                what="the status pulled back",
            )
            stored = stored_cases(settings)
            kravia_before = sim.cases()
            calls_before = sim.simulator.calls()
            passes_before = daemon.passes()
            forged = [
                *(body(ids[i % 3], signature=md5(f"guess{i}")) for i in range(250)),
                *(body(5_000_000 + i, signature=md5(f"guess{i}")) for i in range(250)),
                *(b'{"data": {"claimId": %d}, "pad": "%s"}' % (ids[0], b"x" * 17_000),) * 250,
                *(b'{"data": {"claimId": ' + str(i).encode() for i in range(250)),
            ]
            statuses: dict[int, int] = {}
            began = time.monotonic()
            with httpx.Client(timeout=10) as http:
                for raw in forged:
                    answer = http.post(daemon.webhook_url, content=raw)
                    statuses[answer.status_code] = statuses.get(answer.status_code, 0) + 1
            time.sleep(1.0)  # what was queued is read
            calls_after = sim.simulator.calls()
            elapsed = time.monotonic() - began  # reads counted above began within this
            metrics = daemon.metrics()
            passes_after = daemon.passes()

        reads = calls_after["details"].get("200", 0) - calls_before["details"].get("200", 0)
        assert reads <= 2 + 2 * elapsed, (reads, elapsed)
        assert statuses == {202: 500, 413: 250, 400: 250}
        assert stored_cases(settings) == stored
        assert sim.cases() == kravia_before
        assert calls_after["processed"] == {
            name: count if name in {"search", "details"} else calls_before["processed"][name]
            for name, count in calls_after["processed"].items()
        }
        assert passes_after > passes_before  # the polling went on
        requests = {
            labels[0][1]: value
            for (name, labels), value in metrics.items()
            if name == "kravia_sync_webhook_requests_total"
        }
        assert requests["oversized"] == 250
        assert requests["malformed"] == 250
        assert requests["unknown_claim"] == 250
        assert requests["queued"] + requests["coalesced"] + requests["dropped"] == 250
        assert metrics[("kravia_sync_webhook_signatures_total", (("result", "mismatch"),))] == 500

    def test_with_required_signatures_forged_webhooks_are_refused(
        self, sim: Sim, tmp_path: Path
    ) -> None:
        """require_signature: unsigned and badly signed webhooks get 401 and read nothing;
        the simulator's own (duplicated, then out of order) are taken."""
        write_invoices(tmp_path / "invoices", range(1, 3), pdf_every=0)
        settings = webhook_settings(tmp_path, sim.base_url, webhook="require_signature = true")
        with running(settings) as daemon:
            ids = started_ids(sim, 2, settings)
            stored = stored_cases(settings)
            before = sim.simulator.calls()
            with httpx.Client(timeout=10) as http:
                refused = [
                    http.post(daemon.webhook_url, content=raw).status_code
                    for i in range(50)
                    for raw in (body(ids[0]), body(ids[1], signature=md5(f"guess{i}")))
                ]
            assert refused == [401] * 100
            assert sim.simulator.calls() == before
            assert stored_cases(settings) == stored

            put = httpx.put(
                f"{sim.base_url}creditor/10759/webhook",
                json={"secret": SECRET, "enabled": True, "url": daemon.webhook_url},
                headers={"Authorization": TOKEN},
            )
            assert put.status_code == 200
            sent = sim.simulator.send_webhook(ids[0], duplicate=True, out_of_order=True)
            assert [result["status"] for result in sent] == [202, 202, 202]
            assert sent[2]["timestamp"] < sent[0]["timestamp"]
            bad = sim.simulator.send_webhook(ids[0], signing="bad")
            assert [result["status"] for result in bad] == [401]
            wait_for(
                lambda: stored_cases(settings)[ids[0]][1] == "CollectionStarted",
                within=5,
                what="the signed webhook's case read",
            )
            metrics = daemon.metrics()
        assert stored_cases(settings)[ids[1]][1] is None
        assert metrics[("kravia_sync_webhook_requests_total", (("outcome", "refused"),))] == 101

    def test_the_listener_is_off_by_default(self, sim: Sim, tmp_path: Path) -> None:
        """Without [webhook] enabled no webhook listener starts, and the health listener does
        not take webhooks either."""
        (tmp_path / "invoices").mkdir()
        config = write_config(tmp_path, sim.base_url)
        config.write_text(config.read_text() + "\n[daemon]\nport = 0\n", encoding="utf-8")
        with running(load(config)) as daemon:
            assert daemon.daemon.webhook is None
            assert daemon.daemon.http is not None
            health = f"http://127.0.0.1:{daemon.daemon.http.port}"
            assert httpx.post(health + "/kravia/webhook", content=DOCUMENTED).status_code == 404


class TestConfigureCommand:
    def test_http_to_a_public_host_and_a_missing_secret_are_refused(
        self, sim: Sim, tmp_path: Path
    ) -> None:
        """Neither reaches Kravia: plain http to a public host, or no secret configured."""
        write_config(tmp_path, sim.base_url)
        public = run_cli(
            "webhook",
            "configure",
            "--url",
            "http://sync.example.no/kravia/webhook",
            cwd=tmp_path,
            env=cli_env(KRAVIA_WEBHOOK_SECRET=SECRET),
        )
        assert public.returncode == 1
        assert "https" in public.stderr
        no_secret = run_cli(
            "webhook", "configure", "--url", "https://sync.example.no/kravia/webhook", cwd=tmp_path
        )
        assert no_secret.returncode == 1
        assert "kravia_webhook_secret" in no_secret.stderr
        assert sim.simulator.calls()["total"] == 0

    def test_disable_keeps_the_url_and_stops_the_webhooks(self, sim: Sim, tmp_path: Path) -> None:
        """--disable sets enabled false at Kravia."""
        write_config(tmp_path, sim.base_url)
        result = run_cli(
            "webhook",
            "configure",
            "--url",
            "https://sync.example.no/kravia/webhook",
            "--disable",
            cwd=tmp_path,
            env=cli_env(KRAVIA_WEBHOOK_SECRET=SECRET),
        )
        assert result.returncode == 0, result.stderr
        assert "disabled" in result.stdout
        shown = sim.simulator.webhook()
        assert shown["url"] == "https://sync.example.no/kravia/webhook"
        assert shown["enabled"] is False
