"""Security against real stores configured that way, and the DNS frontend's defences.

- etcd with TLS client certificates (a throwaway PKI made with ``openssl``): real
  ``idstore serve`` processes with [store] tls_* and https:// endpoints claim and serve;
  clients without a certificate, with one from another CA, or over plain http are
  refused.
- ZooKeeper with TLS client certificates (secure client port, ssl.clientAuth=need), the
  same PKI: real nodes claim and serve, a second TLS client sees their claims; clients
  without a trusted certificate, or without TLS, are refused within their connect
  timeout with an error naming the endpoint (and the TLS failure); idstore refuses a
  server whose certificate, though signed by the CA, names another host.
- etcd with user/password auth and a 2 s auth-token lifetime: nodes idle well past the
  token's lifetime (their keepalives are 3 s apart, so every one of them meets an expired
  token) and still renew, watch, and claim again after losing their lease; a wrong
  password is one clear error line naming the endpoint, exit status 1, no traceback.
- ZooKeeper with digest auth: a client without idstore's credentials (or with wrong
  ones) cannot set, delete, re-ACL or create anything in idstore's tree, while nodes with
  the credentials claim and serve.
- DNS: out-of-zone queries are REFUSED (never an open resolver) unless forwarding is
  configured; response-rate limiting per client prefix caps a flood from one /24 while
  another prefix and TCP are answered in full.

Everything listens on loopback only; every loop is bounded.
"""

from __future__ import annotations

import contextlib
import json
import math
import socket
import ssl
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import dns.flags
import dns.message
import dns.query
import dns.rcode
import grpc
import pytest

from idstore import backends
from idstore.backends.base import ConnectionState, SlotEvent, SlotRecord, StoreOptions
from idstore.errors import StoreError, StoreUnavailable
from tests.faults.conftest import report
from tests.harness.etcd_server import EtcdServer, EtcdTls, etcdctl
from tests.harness.nodes import HOST, NodeProcess, addresses_of, query, rcode, wait_for
from tests.harness.tls import CertKey, Pki, make_pki
from tests.harness.zk_server import ZooKeeperServer, ZooKeeperTls

pytestmark = pytest.mark.faults

PATTERN = "worker{{.ID}}.tf.local."
IDSTORE_USER, IDSTORE_PASSWORD = "idstore", "s3cret-idstore"
ROOT = "root:s3cret-root"
TOKEN_TTL = 2  # etcd --auth-token-ttl, seconds
NODE_TTL = 9  # keepalive every 3 s: each one finds the previous token expired
IDLE = NODE_TTL + 2 * TOKEN_TTL  # idle past the token lifetime and a quiet watch check


def config(
    tmp: Path,
    backend: str,
    endpoints: tuple[str, ...] | list[str],
    store: dict[str, str] | None = None,
    ttl: float = 3,
    dns_extra: str = "",
    pattern: str = PATTERN,
) -> tuple[Path, str]:
    """A config file shared by the nodes of one test; returns (path, cluster)."""
    cluster = f"s{uuid.uuid4().hex[:8]}"
    lines = [
        f'backend = "{backend}"',
        f"endpoints = {json.dumps(list(endpoints))}",
        f'cluster = "{cluster}"',
        f"ttl = {ttl}",
        "connect_timeout = 3",
        "request_timeout = 2",
        f'[pools.worker]\npattern = "{pattern}"\nlimit = 8\nport = 2222',
        f"[dns]\nttl = 1\nnegative_ttl = 1\n{dns_extra}",
    ]
    if store:
        lines.append("[store]")
        lines += [f"{k} = {json.dumps(v)}" for k, v in store.items()]
    path = tmp / f"idstore-{cluster}.toml"
    path.write_text("\n".join(lines) + "\n")
    return path, cluster


def node(tmp: Path, cfg: Path, i: int, *extra: str) -> NodeProcess:
    args = ["--config", str(cfg), "--node-id", f"n{i}", "--address", f"192.0.2.{i + 1}"]
    return NodeProcess([*args, *extra], name=f"n{i}-{uuid.uuid4().hex[:4]}", workdir=tmp)


def record(node_id: str) -> SlotRecord:
    return SlotRecord(node_id=node_id, nonce=uuid.uuid4().hex, addresses=("192.0.2.99",))


def assert_clean(n: NodeProcess) -> None:
    log = n.log()
    assert "Traceback" not in log, log


# -- etcd with TLS client certificates --------------------------------------------------


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def tls_etcd(pki: Pki) -> Iterator[EtcdServer]:
    tls = EtcdTls(pki.ca, pki.server.cert, pki.server.key, pki.client.cert, pki.client.key)
    with EtcdServer(tls=tls) as server:
        assert all(url.startswith("https://") for url in server.endpoints)
        yield server


def tls_store(pki: Pki) -> dict[str, str]:
    return {"tls_ca": str(pki.ca), "tls_cert": str(pki.client.cert), "tls_key": str(pki.client.key)}


UNTRUSTED = ["no client certificate", "certificate from another CA"]


def tls_options(
    endpoints: tuple[str, ...], pki: Pki, client: CertKey | None, **extra: Any
) -> StoreOptions:
    """Store options of a client that trusts ``pki.ca`` and shows ``client``'s
    certificate (None: none); 2 s to connect unless ``extra`` says otherwise."""
    options = StoreOptions(
        endpoints=endpoints,
        connect_timeout=2,
        tls_ca=str(pki.ca),
        tls_cert=str(client.cert) if client else None,
        tls_key=str(client.key) if client else None,
    )
    return replace(options, **extra)


def untrusted_options(endpoints: tuple[str, ...], pki: Pki, who: str) -> StoreOptions:
    """A client the server must refuse (``who`` is one of UNTRUSTED)."""
    stranger = who == "certificate from another CA"
    return tls_options(endpoints, pki, pki.stranger if stranger else None)


def two_nodes_claim_and_serve(tmp: Path, cfg: Path, check_store: Callable[[], None]) -> None:
    """Nodes n0 and n1 of ``cfg`` claim slots 0 and 1 and both serve both names;
    ``check_store()`` then looks at the claims in the store, while they are held."""
    expected = {"worker0.tf.local.": {"192.0.2.1"}, "worker1.tf.local.": {"192.0.2.2"}}
    with node(tmp, cfg, 0) as n0:
        n0.wait_claimed()  # one after the other: node i holds slot i
        with node(tmp, cfg, 1) as n1:
            n1.wait_claimed()
            for n in (n0, n1):
                wait_view(n, expected)
            check_store()
            assert n1.stop() == 0
        assert n0.stop() == 0
    for n in (n0, n1):
        assert_clean(n)


def test_etcd_tls_nodes_claim_and_serve(tls_etcd: EtcdServer, pki: Pki, tmp_path: Path) -> None:
    cfg, cluster = config(tmp_path, "etcd", tls_etcd.endpoints, tls_store(pki))

    def check_store() -> None:
        keys = tls_etcd.ctl("get", "--prefix", "--keys-only", f"/idstore/{cluster}/worker/")
        assert sorted(k for k in keys.split() if k) == [
            f"/idstore/{cluster}/worker/0",
            f"/idstore/{cluster}/worker/1",
        ]

    two_nodes_claim_and_serve(tmp_path, cfg, check_store)


def wait_view(n: NodeProcess, expected: dict[str, set[str]], timeout: float = 10) -> None:
    """Wait until ``n``'s DNS resolves every name of ``expected`` to its addresses."""

    def seen() -> bool:
        return {name: addresses_of(n.port, name) for name in expected} == expected

    wait_for(seen, timeout, f"{expected} on {n.name}")


@pytest.mark.parametrize("who", UNTRUSTED)
def test_etcd_tls_refuses_clients_without_a_trusted_certificate(
    tls_etcd: EtcdServer, pki: Pki, who: str
) -> None:
    store = backends.create("etcd", untrusted_options(tls_etcd.endpoints, pki, who))
    with pytest.raises(StoreUnavailable) as err:
        store.open()
    assert tls_etcd.endpoints[0] in str(err.value)
    # etcdctl is refused the same way: the server, not idstore, enforces the certificate.
    args = [f"--cacert={pki.ca}", "--dial-timeout=2s"]
    if who != "no client certificate":
        args += [f"--cert={pki.stranger.cert}", f"--key={pki.stranger.key}"]
    with pytest.raises(RuntimeError):
        etcdctl(tls_etcd.endpoints, *args, "put", "/idstore/x", "intruder")
    assert tls_etcd.ctl("get", "/idstore/x") == ""


def test_etcd_tls_plain_http_is_refused(tls_etcd: EtcdServer) -> None:
    plain = tls_etcd.endpoints[0].replace("https://", "http://")
    store = backends.create("etcd", StoreOptions(endpoints=(plain,), connect_timeout=2))
    with pytest.raises(StoreUnavailable):
        store.open()


def test_etcd_tls_node_without_certificate_claims_nothing(
    tls_etcd: EtcdServer, pki: Pki, tmp_path: Path
) -> None:
    cfg, cluster = config(tmp_path, "etcd", tls_etcd.endpoints, {"tls_ca": str(pki.ca)})
    with node(tmp_path, cfg, 0) as n0:
        wait_for(lambda: "store not reachable" in n0.log(), 20, "the node to report the store")
        assert "claimed slot" not in n0.log()
        assert tls_etcd.ctl("get", "--prefix", "--keys-only", f"/idstore/{cluster}/") == ""


def test_node_stopped_before_it_could_connect_exits_cleanly(
    tls_etcd: EtcdServer, pki: Pki, tmp_path: Path
) -> None:
    """SIGTERM while the store refuses the node (here: no client certificate): exit 0,
    no traceback (found here: Mirror.stop() joined a thread that never started)."""
    cfg, _ = config(tmp_path, "etcd", tls_etcd.endpoints, {"tls_ca": str(pki.ca)})
    with node(tmp_path, cfg, 0) as n0:
        wait_for(lambda: "store not reachable" in n0.log(), 20, "the node to report the store")
        assert n0.stop() == 0, n0.log()
    assert_clean(n0)


# -- ZooKeeper with TLS client certificates ---------------------------------------------


@pytest.fixture(scope="module")
def tls_zk(pki: Pki) -> Iterator[ZooKeeperServer]:
    with ZooKeeperServer(tls=ZooKeeperTls(pki.ca, pki.server.cert, pki.server.key)) as server:
        yield server


def test_zookeeper_tls_nodes_claim_and_serve(
    tls_zk: ZooKeeperServer, pki: Pki, tmp_path: Path
) -> None:
    cfg, cluster = config(tmp_path, "zookeeper", tls_zk.endpoints, tls_store(pki))

    def check_store() -> None:
        # Another TLS client, with the same certificate, sees both claims.
        options = tls_options(
            tls_zk.endpoints, pki, pki.client, cluster=cluster, connect_timeout=10
        )
        store = backends.create("zookeeper", options)
        store.open()
        try:
            claims = store.list("worker").claims
        finally:
            store.close()
        assert {slot: c.record.node_id for slot, c in claims.items()} == {0: "n0", 1: "n1"}

    two_nodes_claim_and_serve(tmp_path, cfg, check_store)


@pytest.mark.parametrize("who", UNTRUSTED)
def test_zookeeper_tls_refuses_clients_without_a_trusted_certificate(
    tls_zk: ZooKeeperServer, pki: Pki, who: str
) -> None:
    options = untrusted_options(tls_zk.endpoints, pki, who)
    store = backends.create("zookeeper", options)
    started = time.monotonic()
    try:
        with pytest.raises(StoreUnavailable) as err:
            store.open()
    finally:
        store.close()
    elapsed = time.monotonic() - started
    # kazoo retries a refused handshake until connect_timeout; the error says why.
    text = str(err.value)
    assert f"{tls_zk.endpoints[0]}: TLS handshake failed" in text, text
    # Gives up instead of hanging: a generous bound on a loaded machine, not a figure.
    assert elapsed < options.connect_timeout + 10, elapsed
    report("zookeeper", "8 security", f"TLS, {who}: refused after {elapsed:.1f} s: {text}")


def test_zookeeper_tls_plain_client_is_refused(tls_zk: ZooKeeperServer) -> None:
    options = StoreOptions(endpoints=tls_zk.endpoints, connect_timeout=2)
    store = backends.create("zookeeper", options)
    try:
        with pytest.raises(StoreUnavailable) as err:
            store.open()
    finally:
        store.close()
    assert tls_zk.endpoints[0] in str(err.value), err.value


def test_zookeeper_tls_node_without_certificate_claims_nothing(
    tls_zk: ZooKeeperServer, pki: Pki, tmp_path: Path
) -> None:
    """What an operator sees: warnings naming the endpoint and the TLS failure, no
    claim, and a clean exit on SIGTERM."""
    cfg, _ = config(tmp_path, "zookeeper", tls_zk.endpoints, {"tls_ca": str(pki.ca)})
    with node(tmp_path, cfg, 0) as n0:
        wait_for(lambda: "store not reachable" in n0.log(), 20, "the node to report the store")
        assert "claimed slot" not in n0.log()
        assert n0.stop() == 0, n0.log()
    warning = next(line for line in n0.log().splitlines() if "store not reachable" in line)
    assert f"{tls_zk.endpoints[0]}: TLS handshake failed" in warning, warning
    assert_clean(n0)


@contextlib.contextmanager
def tls_listener(cert: CertKey) -> Iterator[str]:
    """A loopback TLS server that presents ``cert`` and serves nothing: what a client's
    own checks of the server make of it. Yields its ``host:port``."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert.cert, cert.key)
    stop = threading.Event()

    def serve(listener: socket.socket) -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            conn.settimeout(2)
            # The handshake is all there is; the client is expected to abort it.
            with contextlib.suppress(OSError), context.wrap_socket(conn, server_side=True):
                pass

    with socket.create_server((HOST, 0)) as listener:
        listener.settimeout(0.1)  # to notice ``stop``
        thread = threading.Thread(target=serve, args=(listener,), daemon=True)
        thread.start()
        try:
            yield f"{HOST}:{listener.getsockname()[1]}"
        finally:
            stop.set()
            thread.join(5)


def test_zookeeper_tls_refuses_a_server_certificate_for_another_host(pki: Pki) -> None:
    """The CA signed it, but for impostor.invalid: kazoo alone would accept it (it checks
    no host names by default), so any server certificate of the CA could pose as the
    store."""
    with tls_listener(pki.impostor) as endpoint:
        store = backends.create("zookeeper", tls_options((endpoint,), pki, pki.client))
        try:
            with pytest.raises(StoreUnavailable) as err:
                store.open()
        finally:
            store.close()
    text = str(err.value)
    assert f"{endpoint}: TLS handshake failed" in text and "mismatch" in text, text


# -- etcd with user/password auth --------------------------------------------------------


@pytest.fixture(scope="module")
def auth_etcd() -> Iterator[EtcdServer]:
    with EtcdServer(extra_args=[f"--auth-token-ttl={TOKEN_TTL}"]) as server:
        server.ctl("user", "add", ROOT)
        server.ctl("role", "add", "idstore-rw")
        server.ctl("role", "grant-permission", "idstore-rw", "--prefix=true", "readwrite",
                   "/idstore/")  # fmt: skip
        server.ctl("user", "add", f"{IDSTORE_USER}:{IDSTORE_PASSWORD}")
        server.ctl("user", "grant-role", IDSTORE_USER, "idstore-rw")
        server.ctl("auth", "enable")
        server.admin = ROOT
        with pytest.raises(RuntimeError):  # auth is on: anonymous writes are refused
            etcdctl(server.endpoints, "put", "/idstore/x", "anonymous")
        yield server


def auth_store() -> dict[str, str]:
    return {"username": IDSTORE_USER, "password": IDSTORE_PASSWORD}


def test_etcd_auth_store_survives_idling_past_the_token_lifetime(auth_etcd: EtcdServer) -> None:
    """In process, so the expired token itself can be shown to be refused."""
    options = StoreOptions(
        endpoints=auth_etcd.endpoints,
        cluster=f"s{uuid.uuid4().hex[:8]}",
        ttl=NODE_TTL,
        username=IDSTORE_USER,
        password=IDSTORE_PASSWORD,
        connect_timeout=5,
    )
    store = backends.create("etcd", options)
    states: list[ConnectionState] = []
    store.add_listener(states.append)
    store.open()
    events: list[SlotEvent] = []
    broken: list[str] = []
    got_event = threading.Event()

    def on_events(batch: Sequence[SlotEvent]) -> None:
        events.extend(batch)
        got_event.set()

    try:
        watch = store.watch(store.list("worker"), on_events, broken.append)
        token = store._transport.current().metadata  # type: ignore[attr-defined]
        lease = store.session_id
        time.sleep(IDLE)
        # The token idstore got at the start is dead by now (nothing used it) ...
        from idstore.backends.etcd.requests import range_request

        with pytest.raises(grpc.RpcError) as err:
            store._transport.current().kv.Range(  # type: ignore[attr-defined]
                range_request(b"/idstore/"), timeout=2, metadata=token
            )
        assert "invalid auth token" in (err.value.details() or "")
        # ... yet the session was renewed throughout, the watch lives, and writes work.
        assert store.session_id == lease
        assert store.state is ConnectionState.CONNECTED
        assert ConnectionState.LOST not in states[1:], states
        claim = store.claim("worker", 0, record("n0"))
        assert got_event.wait(10), f"no watch event after the idle period (broken: {broken})"
        assert [(e.slot, e.claim.record.node_id if e.claim else None) for e in events] == [
            (0, "n0")
        ]
        assert not broken, broken
        assert store.list("worker").claims[0].version == claim.version
        report("etcd", "8 security", f"auth: idle {IDLE} s past a {TOKEN_TTL} s token: lease "
               f"{lease} kept, watch delivered, claim at revision {claim.version}")  # fmt: skip
        watch.cancel()
    finally:
        store.close()


def test_etcd_auth_nodes_renew_watch_and_reclaim_after_idle(
    auth_etcd: EtcdServer, tmp_path: Path
) -> None:
    cfg, cluster = config(tmp_path, "etcd", auth_etcd.endpoints, auth_store(), ttl=NODE_TTL)
    with node(tmp_path, cfg, 0) as n0:
        n0.wait_claimed()
        slot0 = f"/idstore/{cluster}/worker/0"
        lease_before = json.loads(auth_etcd.ctl("get", slot0, "-w", "json"))["kvs"][0]["lease"]
        time.sleep(IDLE)  # every keepalive meanwhile met an expired token
        got = json.loads(auth_etcd.ctl("get", slot0, "-w", "json"))["kvs"][0]
        assert got["lease"] == lease_before, "the node lost its lease while idle"
        with node(tmp_path, cfg, 1) as n1:
            n1.wait_claimed()
            # n0's watch, opened long before with a token now expired, sees n1's claim.
            wait_for(lambda: addresses_of(n0.port, "worker1.tf.local.") == {"192.0.2.2"}, 10,
                     "n0 to see worker1 after idling")  # fmt: skip
            # Take n0's lease away: it must get a new session and claim again, logging in
            # anew with its expired token.
            auth_etcd.ctl("lease", "revoke", f"{lease_before:x}")
            wait_for(lambda: n0.log().count("claimed slot") >= 2, 30, "n0 to claim again")
            wait_for(lambda: addresses_of(n1.port, "worker0.tf.local.") == {"192.0.2.1"}, 10,
                     "n1 to see worker0 again")  # fmt: skip
            assert n1.stop() == 0
        assert n0.stop() == 0
    for n in (n0, n1):
        assert_clean(n)
        assert "invalid auth token" not in n.log(), n.log()


WRONG = {"username": IDSTORE_USER, "password": "Wr0ng-Pa55"}


def test_etcd_wrong_password_is_one_clear_error_line(auth_etcd: EtcdServer, tmp_path: Path) -> None:
    cfg, _ = config(tmp_path, "etcd", auth_etcd.endpoints, WRONG)
    with node(tmp_path, cfg, 0) as n0:
        assert n0.proc is not None
        n0.proc.wait(30)
        log = n0.log()
    assert "Traceback" not in log, log
    assert n0.proc.returncode == 1, log
    errors = [line for line in log.splitlines() if "authentication failed" in line]
    assert errors and auth_etcd.endpoints[0] in errors[-1], log
    assert WRONG["password"] not in log, log  # no secret in the log


def test_etcd_wrong_password_error_names_user_and_endpoint(auth_etcd: EtcdServer) -> None:
    options = StoreOptions(
        endpoints=auth_etcd.endpoints,
        connect_timeout=2,
        username=WRONG["username"],
        password=WRONG["password"],
    )
    with pytest.raises(StoreError) as err:
        backends.create("etcd", options).open()
    # Not "unavailable": retrying cannot help, so a node gives up at once.
    assert not isinstance(err.value, StoreUnavailable)
    text = str(err.value)
    assert "authentication" in text and repr(IDSTORE_USER) in text, text
    assert auth_etcd.endpoints[0] in text and WRONG["password"] not in text, text


# -- ZooKeeper with digest auth and ACLs -------------------------------------------------


@pytest.fixture(scope="module")
def zk() -> Iterator[ZooKeeperServer]:
    with ZooKeeperServer() as server:
        yield server


def intrude(zk: ZooKeeperServer, creds: str | None, cluster: str) -> dict[str, str]:
    """Try to change idstore's tree as another client; what each attempt got."""
    from kazoo.client import KazooClient
    from kazoo.exceptions import NoAuthError
    from kazoo.security import OPEN_ACL_UNSAFE

    options = StoreOptions(cluster=cluster)
    pool, slot0 = options.pool_path("worker"), options.slot_path("worker", 0)
    client = KazooClient(
        hosts=",".join(zk.endpoints), auth_data=[("digest", creds)] if creds else None
    )
    client.start(timeout=10)
    outcomes: dict[str, str] = {}
    try:
        before, _ = client.get(slot0)  # reading is allowed (world:anyone read)
        # Slots are the numeric children (the pool also holds idstore's identity markers).
        assert sorted(c for c in client.get_children(pool) if c.isdigit()) == ["0", "1"]
        attempts: dict[str, Callable[[], object]] = {
            "set a slot": lambda: client.set(slot0, b"{}"),
            "delete a slot": lambda: client.delete(slot0),
            "create a slot": lambda: client.create(f"{pool}/5", b"{}"),
            "open a slot's ACL": lambda: client.set_acls(slot0, OPEN_ACL_UNSAFE),
            "create a pool": lambda: client.create(f"/idstore/{cluster}/evil"),
            "delete the pool": lambda: client.delete(pool, recursive=True),
        }
        for what, attempt in attempts.items():
            with pytest.raises(NoAuthError):
                attempt()
            outcomes[what] = "NoAuth"
        assert client.get(slot0)[0] == before
        # Slots are the numeric children (the pool also holds idstore's identity markers).
        assert sorted(c for c in client.get_children(pool) if c.isdigit()) == ["0", "1"]
    finally:
        client.stop()
        client.close()
    return outcomes


def test_zookeeper_acl_keeps_other_clients_out(zk: ZooKeeperServer, tmp_path: Path) -> None:
    cfg, cluster = config(tmp_path, "zookeeper", zk.endpoints, auth_store())
    outcomes: dict[str, dict[str, str]] = {}
    with node(tmp_path, cfg, 0) as n0:
        n0.wait_claimed()
        with node(tmp_path, cfg, 1) as n1:
            n1.wait_claimed()
            outcomes["anonymous"] = intrude(zk, None, cluster)
            outcomes["wrong password"] = intrude(zk, f"{IDSTORE_USER}:nope", cluster)
            # idstore, with the credentials, keeps working: a third node claims, is served.
            with node(tmp_path, cfg, 2) as n2:
                n2.wait_claimed()
                for n in (n0, n1, n2):
                    wait_view(n, {"worker2.tf.local.": {"192.0.2.3"}})
                assert n2.stop() == 0
            assert n1.stop() == 0
        assert n0.stop() == 0
    report("zookeeper", "8 security", f"digest ACL, intruder outcomes: {outcomes}")
    for n in (n0, n1, n2):
        assert_clean(n)


# -- DNS: no open resolver, response-rate limiting ---------------------------------------

OUT_OF_ZONE = [
    ("example.com.", "A"),
    (".", "NS"),
    ("com.", "ANY"),
    ("local.", "SOA"),
    ("tf.local.example.com.", "A"),
    ("1.0.0.127.in-addr.arpa.", "PTR"),
]


def memory_node(tmp: Path, dns_extra: str = "", pattern: str = PATTERN, i: int = 0) -> NodeProcess:
    tmp.mkdir(exist_ok=True)
    cfg, _ = config(tmp, "memory", [], dns_extra=dns_extra, pattern=pattern)
    return node(tmp, cfg, i)


def test_out_of_zone_queries_are_refused(tmp_path: Path) -> None:
    with memory_node(tmp_path) as n0:
        n0.wait_claimed()
        for tcp in (False, True):
            for name, rdtype in OUT_OF_ZONE:
                r = query(n0.port, name, rdtype, tcp=tcp)
                assert rcode(r) == "REFUSED", (name, rdtype, tcp, r)
                assert not r.answer and not (r.flags & (dns.flags.RA | dns.flags.AA))
            r = query(n0.port, "worker0.tf.local.", "A", tcp=tcp)
            assert rcode(r) == "NOERROR" and r.answer
        assert n0.stop() == 0
    assert_clean(n0)


def test_out_of_zone_queries_are_forwarded_only_when_configured(tmp_path: Path) -> None:
    # The upstream is another idstore serving its own zone, up.local.
    with memory_node(tmp_path / "up", pattern="x{{.ID}}.up.local.", i=5) as upstream:
        upstream.wait_claimed()
        fwd = f'forward = ["{HOST}:{upstream.port}"]'
        with memory_node(tmp_path, dns_extra=fwd) as n0:
            n0.wait_claimed()
            for tcp in (False, True):
                r = query(n0.port, "x0.up.local.", "A", tcp=tcp)
                assert rcode(r) == "NOERROR", r
                assert [rd.to_text() for rrset in r.answer for rd in rrset] == ["192.0.2.6"]
                # The upstream's own refusal is relayed, not turned into an answer.
                assert rcode(query(n0.port, "example.com.", "A", tcp=tcp)) == "REFUSED"
            assert n0.stop() == 0
        assert upstream.stop() == 0
    assert_clean(n0)


RRL = 10  # responses per second per /24
FLOOD = 3000
BURST = 100


def test_rate_limiting_caps_a_flood_from_one_prefix(tmp_path: Path) -> None:
    with memory_node(tmp_path, dns_extra=f"rrl_per_second = {RRL}") as n0:
        n0.wait_claimed()
        q = dns.message.make_query("worker0.tf.local.", "A")
        full = slipped = 0
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(0.2)
            sock.connect((HOST, n0.port))
            start = time.monotonic()
            for _ in range(FLOOD // BURST):
                for _ in range(BURST):
                    sock.send(q.to_wire())
                for _ in range(BURST):
                    try:
                        reply = dns.message.from_wire(sock.recv(4096))
                    except TimeoutError:
                        break
                    if reply.flags & dns.flags.TC:
                        assert not reply.answer
                        slipped += 1
                    else:
                        assert reply.answer
                        full += 1
            elapsed = time.monotonic() - start
        dropped = FLOOD - full - slipped
        windows = math.ceil(elapsed) + 1  # one-second windows the flood touched
        report("dns", "8 security", f"RRL {RRL}/s: {FLOOD} queries in {elapsed:.1f} s -> "
               f"{full} answers, {slipped} TC=1 slips, {dropped} dropped")  # fmt: skip
        assert 0 < full <= RRL * windows, (full, windows)
        assert slipped > 0 and dropped > 0
        # Another /24 (127.0.1.0/24 is loopback too) is not limited by that flood ...
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as other:
            other.bind(("127.0.1.1", 0))
            r = dns.query.udp(q, HOST, port=n0.port, timeout=2, sock=other)
            assert r.answer and not r.flags & dns.flags.TC
        # ... nor is TCP, whose handshake proves the source address.
        r = query(n0.port, "worker0.tf.local.", "A", tcp=True)
        assert r.answer
        assert n0.stop() == 0
    assert_clean(n0)
