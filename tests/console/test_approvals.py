"""The approvals service: four eyes bound to a digest of exactly what the approver was shown, the
decider never the requester, a changed digest voids, an expired one is dead, every step audited."""

import threading
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from console import approvals
from console.approvals import ApprovalRefused
from console.models import Approval, AuditEvent

KIND = "test.change"
SHOWN = {"statement": "ALTER TABLE documents ADD COLUMN archived boolean", "tenants": ["acme", "globex"]}


@pytest.fixture
def thing(demo_targets):
    """Any model row can be what is approved; a target will do."""
    return demo_targets["demo-scratch"]


def _ask(thing, user, shown=SHOWN, **kwargs):
    return approvals.request(KIND, thing, shown, "Add a column to documents on two tenants", user, **kwargs)


def _steps(approval):
    return list(approvals.history(approval).values_list("action", "outcome", "actor_username"))


def test_it_digests_a_canonical_json_of_what_is_shown(db, thing, users):
    reordered = {"tenants": ["acme", "globex"], "statement": SHOWN["statement"]}
    assert approvals.digest_of(reordered) == approvals.digest_of(SHOWN)
    assert approvals.digest_of({**SHOWN, "tenants": ["globex", "acme"]}) != approvals.digest_of(SHOWN)

    approval = _ask(thing, users["operator"])
    assert approval.digest == approvals.digest_of(SHOWN) and len(approval.digest) == 64
    assert Approval.objects.get(pk=approval.pk).shown == SHOWN
    assert approval.decision == "pending" and approval.object_type == "target" and approval.object_id == str(thing.pk)
    assert timedelta(hours=23, minutes=59) < approval.expires_at - timezone.now() <= timedelta(hours=24)


def test_it_refuses_the_requester_as_decider_admins_included(db, thing, users):
    for role in ("admin", "approver"):
        approval = _ask(thing, users[role], shown={**SHOWN, "by": role})
        for approve in (True, False):
            with pytest.raises(ApprovalRefused, match="someone else must decide"):
                approvals.decide(approval, users[role], approve, "mine", approval.digest)
        assert Approval.objects.get(pk=approval.pk).decision == "pending"
        assert _steps(approval)[1:] == [("approval.approve", "denied", role), ("approval.reject", "denied", role)]


def test_it_refuses_a_decider_without_the_approver_role(db, thing, users):
    approval = _ask(thing, users["admin"])
    for role in ("operator", "viewer", "nobody"):
        with pytest.raises(ApprovalRefused, match="needs the approver role"):
            approvals.decide(approval, users[role], True, "", approval.digest)
    assert Approval.objects.get(pk=approval.pk).decision == "pending"
    assert [step[1:] for step in _steps(approval)[1:]] == [("denied", "operator"), ("denied", "viewer"),
                                                           ("denied", "nobody")]

    decided = approvals.decide(approval, users["approver"], True, "fine by me", approval.digest)
    assert (decided.decision, decided.decided_by, decided.comment) == ("approved", users["approver"], "fine by me")


def test_it_refuses_a_decision_on_anything_but_what_was_shown(db, thing, users):
    approval = _ask(thing, users["operator"])
    stale = approvals.digest_of({**SHOWN, "tenants": ["acme"]})
    for digest in (stale, ""):
        with pytest.raises(ApprovalRefused, match="not what waits for approval"):
            approvals.decide(approval, users["approver"], True, "", digest)
    assert Approval.objects.get(pk=approval.pk).decision == "pending"
    assert AuditEvent.objects.filter(action="approval.approve", outcome="failed", object_id=str(approval.pk)).count() == 2


def test_it_voids_a_waiting_request_asked_again_with_other_content(db, thing, users):
    first = _ask(thing, users["operator"])
    with pytest.raises(ApprovalRefused, match="already waiting"):
        _ask(thing, users["admin"])  # the same content: one pending approval per object
    second = _ask(thing, users["operator"], shown={**SHOWN, "tenants": ["acme"]})

    assert Approval.objects.get(pk=first.pk).decision == "voided" and second.decision == "pending"
    assert approvals.pending(KIND, thing) == second
    with pytest.raises(ApprovalRefused, match="no longer waiting: voided"):
        approvals.decide(first, users["approver"], True, "", first.digest)
    assert ("approval.void", "ok", "operator") in _steps(first)
    assert AuditEvent.objects.filter(action="approval.request", outcome="failed", actor_username="admin").exists()


def test_it_voids_an_approval_when_what_is_about_to_run_differs(db, thing, users):
    approval = _ask(thing, users["operator"])
    approvals.decide(approval, users["approver"], True, "", approval.digest)

    with pytest.raises(ApprovalRefused, match="not what was approved"):
        approvals.use(KIND, thing, {**SHOWN, "tenants": ["acme", "globex", "initech"]})
    assert Approval.objects.get(pk=approval.pk).decision == "voided"
    with pytest.raises(ApprovalRefused, match="not approved: voided"):
        approvals.use(KIND, thing, SHOWN)  # void stays void, even for the original content
    assert _steps(approval)[2:] == [("approval.void", "ok", ""), ("approval.use", "failed", ""),
                                    ("approval.use", "failed", "")]


def test_it_uses_an_approval_once_and_only_once_approved(db, thing, users):
    approval = _ask(thing, users["operator"])
    with pytest.raises(ApprovalRefused, match="not approved: waiting"):
        approvals.use(KIND, thing, SHOWN)
    approvals.decide(approval, users["approver"], True, "", approval.digest)
    noted = []

    used = approvals.use(KIND, thing, {"tenants": ["acme", "globex"], "statement": SHOWN["statement"]},
                         then=noted.append)
    assert used.pk == approval.pk and used.decision == "used" and used.used_at and noted == [used]
    with pytest.raises(ApprovalRefused, match="already used"):
        approvals.use(KIND, thing, SHOWN)
    with pytest.raises(ApprovalRefused, match="nothing was approved"):
        approvals.use("test.other", thing, SHOWN)


def test_it_refuses_an_expired_approval_to_decide_and_to_use(db, thing, users):
    waiting = _ask(thing, users["operator"])
    Approval.objects.filter(pk=waiting.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    with pytest.raises(ApprovalRefused, match="expired"):
        approvals.decide(waiting, users["approver"], True, "", waiting.digest)
    assert not approvals.can_decide(Approval.objects.get(pk=waiting.pk), users["approver"])

    approved = _ask(thing, users["operator"])  # the expired one is voided by asking again
    assert Approval.objects.get(pk=waiting.pk).decision == "voided"
    approvals.decide(approved, users["approver"], True, "", approved.digest)
    Approval.objects.filter(pk=approved.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    with pytest.raises(ApprovalRefused, match="expired"):
        approvals.use(KIND, thing, SHOWN)
    assert Approval.objects.get(pk=approved.pk).decision == "voided"


def test_it_takes_the_expiry_from_the_request_or_the_setting(db, thing, users, settings):
    settings.APPROVAL_EXPIRY_H = 2
    approval = _ask(thing, users["operator"])
    assert timedelta(hours=1, minutes=59) < approval.expires_at - approval.requested_at <= timedelta(hours=2)
    short = _ask(thing, users["operator"], shown={"other": 1}, expires_in=timedelta(minutes=5))
    assert short.expires_at - short.requested_at <= timedelta(minutes=5)


def test_it_refuses_a_second_decision(db, thing, users):
    approval = _ask(thing, users["operator"])
    approvals.decide(approval, users["approver"], False, "not now", approval.digest)
    with pytest.raises(ApprovalRefused, match="no longer waiting: rejected by approver"):
        approvals.decide(approval, users["admin"], True, "", approval.digest)
    approval.refresh_from_db()
    assert (approval.decision, approval.decided_by, approval.comment) == ("rejected", users["approver"], "not now")


def test_it_lets_only_one_of_two_deciders_at_once_decide(transactional_db, thing, users):
    approval = _ask(thing, users["operator"])
    start = threading.Barrier(2)
    outcomes = {}

    def decide(role, approve):
        try:
            start.wait()
            approvals.decide(Approval.objects.get(pk=approval.pk), users[role], approve, role, approval.digest)
            outcomes[role] = "decided"
        except ApprovalRefused as refusal:
            outcomes[role] = str(refusal)
        finally:
            connection.close()

    threads = [threading.Thread(target=decide, args=("approver", True)),
               threading.Thread(target=decide, args=("admin", False))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(outcomes.values())[0] == "decided" and "no longer waiting" in sorted(outcomes.values())[1]
    approval.refresh_from_db()
    winner = approval.decided_by.username
    assert outcomes[winner] == "decided" and approval.comment == winner
    assert approval.decision == {"approver": "approved", "admin": "rejected"}[winner]
    assert AuditEvent.objects.filter(object_id=str(approval.pk), action__in=["approval.approve", "approval.reject"],
                                     outcome="ok").count() == 1


def test_it_lets_only_the_requester_withdraw_a_waiting_request(db, thing, users):
    approval = _ask(thing, users["operator"])
    with pytest.raises(ApprovalRefused, match="only the requester"):
        approvals.withdraw(approval, users["admin"])
    withdrawn = approvals.withdraw(approval, users["operator"])
    assert withdrawn.decision == "withdrawn" and withdrawn.decided_by is None
    with pytest.raises(ApprovalRefused, match="no longer waiting"):
        approvals.withdraw(approval, users["operator"])
    with pytest.raises(ApprovalRefused, match="no longer waiting: withdrawn"):
        approvals.decide(approval, users["approver"], True, "", approval.digest)


def test_it_audits_every_step_with_what_was_approved(db, thing, users):
    approval = _ask(thing, users["operator"])
    approvals.decide(approval, users["approver"], True, "go", approval.digest)
    approvals.use(KIND, thing, SHOWN, detail={"job": 42})

    assert _steps(approval) == [("approval.request", "ok", "operator"), ("approval.approve", "ok", "approver"),
                                ("approval.use", "ok", "")]
    for event in approvals.history(approval):
        assert event.detail["kind"] == KIND and event.detail["digest"] == approval.digest
        assert (event.detail["object_type"], event.detail["object_id"]) == ("target", str(thing.pk))
    assert approvals.history(approval).get(action="approval.approve").detail["comment"] == "go"
    assert approvals.history(approval).get(action="approval.use").detail["job"] == 42


def test_it_voids_a_decision_on_an_object_that_changed_since_the_request(db, thing, users, monkeypatch):
    monkeypatch.setitem(approvals.KINDS, KIND, approvals.Kind(model=type(thing), shown=lambda t: {"port": t.port}))
    approval = approvals.request(KIND, thing, {"port": thing.port}, "keep the port", users["operator"])
    assert not approvals.changed_since_request(approval)
    type(thing).objects.filter(pk=thing.pk).update(port=thing.port + 1)
    assert approvals.changed_since_request(approval)

    with pytest.raises(ApprovalRefused, match="changed since the request"):
        approvals.decide(approval, users["approver"], True, "", approval.digest)
    assert Approval.objects.get(pk=approval.pk).decision == "voided"
    assert [step[0] for step in _steps(approval)] == ["approval.request", "approval.void", "approval.approve"]


def test_it_turns_offboarding_requests_of_the_old_tenant_columns_into_approvals(transactional_db, users, demo_targets):
    from django.db.migrations.executor import MigrationExecutor

    from tenants.models import OFFBOARD_APPROVAL, Tenant

    MigrationExecutor(connection).migrate([("tenants", "0002_onboarding_health_offboarding")])
    now = timezone.now()
    with connection.cursor() as cursor:  # a request still waiting, and one approved and carried out
        for slug, state, approver in (("waits", "active", None), ("gone", "archived", users["approver"].pk)):
            cursor.execute(
                "INSERT INTO tenants_tenant (name, slug, target_id, strategy, state, created_at, updated_at,"
                " onboarding_step, failed_step, error, schema_version, dump_path, offboard_requested_by_id,"
                " offboard_requested_at, offboard_approved_by_id, offboard_approved_at, archived_at)"
                " VALUES (%s, %s, %s, 'schema', %s, %s, %s, '', '', '', '', '', %s, %s, %s, %s, %s)",
                [slug, slug, demo_targets["demo-primary"].pk, state, now, now, users["operator"].pk, now, approver,
                 now if approver else None, now if approver else None])
    executor = MigrationExecutor(connection)
    executor.migrate(executor.loader.graph.leaf_nodes())

    made = {approval.object_repr: approval for approval in Approval.objects.filter(kind=OFFBOARD_APPROVAL)}
    assert (made["gone"].decision, made["gone"].requested_by, made["gone"].decided_by) == (
        "used", users["operator"], users["approver"])
    waits = Tenant.objects.get(slug="waits")
    assert made["waits"].decision == "pending" and made["waits"].is_expired()  # to be asked again, on what it is now
    assert waits.offboarding_approval() == made["waits"] and not waits.offboarding_requested
