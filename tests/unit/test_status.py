"""The /status schema: what the server writes is what whoami / wait / env read back."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families

from idstore import metrics
from idstore.cli.reader import fetch_status, snapshot_from_status, status_url
from idstore.http import OpsServer
from idstore.status import MemberInfo, NodeReport, NodeStatus, PoolUsage

W0 = MemberInfo("worker", 0, "worker0.tf.local.", ("192.0.2.1",), "n0")
W1 = MemberInfo("worker", 1, "worker1.tf.local.", ("192.0.2.2", "2001:db8::2"), "n1")
HELD = NodeStatus(
    pool="worker",
    slot=1,
    name="worker1.tf.local.",
    addresses=("192.0.2.2", "2001:db8::2"),
    node_id="n1",
    state="held",
    store="connected",
    backend="etcd",
    cluster={"worker": (W0, W1), "ps": ()},
)
WAITING = NodeStatus("worker", None, None, ("192.0.2.9",), "n9", "waiting", "connected", "zk")

# The document as users' scripts know it (field names and order are a contract).
HELD_JSON = {
    "pool": "worker",
    "slot": 1,
    "name": "worker1.tf.local.",
    "addresses": ["192.0.2.2", "2001:db8::2"],
    "node_id": "n1",
    "state": "held",
    "store": "connected",
    "backend": "etcd",
    "cluster": {
        "worker": [
            {"pool": "worker", "slot": 0, "name": "worker0.tf.local.",
             "addresses": ["192.0.2.1"], "node_id": "n0"},
            {"pool": "worker", "slot": 1, "name": "worker1.tf.local.",
             "addresses": ["192.0.2.2", "2001:db8::2"], "node_id": "n1"},
        ],
        "ps": [],
    },
}  # fmt: skip


def test_to_json_is_the_documented_document_in_its_order() -> None:
    doc = HELD.to_json()
    assert doc == HELD_JSON
    assert json.dumps(doc) == json.dumps(HELD_JSON)  # same key order, member keys too


@pytest.mark.parametrize("status", [HELD, WAITING], ids=["held", "waiting"])
def test_round_trip_through_json_text(status: NodeStatus) -> None:
    assert NodeStatus.from_json(json.loads(json.dumps(status.to_json()))) == status


def test_me_is_this_nodes_own_member_only_while_it_holds_a_slot() -> None:
    assert HELD.me == W1
    assert WAITING.me is None


def test_an_older_server_may_leave_optional_fields_out() -> None:
    status = NodeStatus.from_json({"pool": "worker", "slot": None})
    assert (status.state, status.node_id, status.addresses, status.cluster) == ("none", "", (), {})


@pytest.mark.parametrize(
    "doc",
    [[], "held", {"slot": 1}, {"pool": "w", "slot": 1}, {"pool": "w", "slot": "one"},
     {"pool": "w", "cluster": {"w": [{"pool": "w"}]}}],
)  # fmt: skip
def test_a_malformed_document_is_a_value_error(doc: object) -> None:
    with pytest.raises(ValueError, match="not an idstore /status document"):
        NodeStatus.from_json(doc)


class FakeNode:
    """The three answers the HTTP listener asks of a node."""

    def __init__(self, status: NodeStatus) -> None:
        self._status = status

    def ready(self) -> tuple[bool, str]:
        return self._status.slot is not None, "no slot held (waiting)"

    def status(self) -> NodeStatus:
        return self._status

    def report(self) -> NodeReport:
        return REPORT


@pytest.fixture
def served() -> Iterator[OpsServer]:
    server = OpsServer(FakeNode(HELD), "127.0.0.1", 0)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def test_what_the_server_serves_the_cli_reads_back(served: OpsServer) -> None:
    url = status_url(*served.address)
    status = fetch_status(url)
    assert status == HELD
    snap = snapshot_from_status(status, url)
    assert (snap.me, snap.state, snap.node_id, snap.source) == (W1, "held", "n1", url)
    assert snap.count("worker") == 2 and snap.count("ps") == 0


REPORT = NodeReport(
    started_at=1700000000.0,
    pool="worker",
    slot=1,
    allocation="held",
    claim_attempts=3,
    pools=(PoolUsage("worker", 2, 8), PoolUsage("ps", 0, 2)),
    backend="etcd",
    store_state="connected",
    store_ops=17,
    renewals=None,
    renewal_failures=2,
    state_changes={"connected": 1.0},
    mirror_resyncs=4,
    dns={"requests": {"udp": {"A": 5}}, "responses": {"NOERROR": 5}, "dropped": 0,
         "rate_limited": 0, "forwarded": 0, "forward_failures": 0},
    dns_durations=([(0.001, 5)], 5, 0.002),
)  # fmt: skip


def test_metrics_render_from_a_report_alone() -> None:
    text = metrics.render(metrics.collect(REPORT))
    got = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
    }
    assert got[("idstore_slot_number", (("pool", "worker"),))] == 1
    assert got[("idstore_slot_state", (("pool", "worker"), ("state", "held")))] == 1
    assert got[("idstore_pool_slots_used", (("pool", "ps"),))] == 0
    assert got[("idstore_store_operations_total", (("backend", "etcd"),))] == 17
    assert got[("idstore_store_connected", (("backend", "etcd"),))] == 1
    assert got[("idstore_dns_requests_total", (("proto", "udp"), ("type", "A")))] == 5
    # A backend that keeps no renewal count exports none (not a misleading zero).
    assert not any(name == "idstore_store_session_renewals_total" for name, _ in got)
    assert got[("idstore_store_session_renewal_failures_total", (("backend", "etcd"),))] == 2
