# Tests of the tenant lifecycle packages (tenants.change_plan, tenants.suspend, tenants.resume,
# tenants.deprovision): each allow path and each deny reason; run with `opa test config/policies`.
package tenants.actions_test

import data.tenants.change_plan
import data.tenants.deprovision
import data.tenants.resume
import data.tenants.suspend
import rego.v1

tiers := {
	"FREE": {"requestsPerMinute": 20, "requestsPerDay": 1000, "ingestEventsPerMinute": 100, "maxTokensPerRequest": 1000, "storageBytes": 5000000000, "seatCap": 5, "burstMultiplier": 1.0},
	"STARTER": {"requestsPerMinute": 100, "requestsPerDay": 100000, "ingestEventsPerMinute": 500, "maxTokensPerRequest": 4000, "storageBytes": 50000000000, "seatCap": 50, "burstMultiplier": 1.1},
	"PRO": {"requestsPerMinute": 1000, "requestsPerDay": 1000000, "ingestEventsPerMinute": 5000, "maxTokensPerRequest": 16000, "storageBytes": 250000000000, "seatCap": 150, "burstMultiplier": 1.2},
	"ENTERPRISE": {"requestsPerMinute": 10000, "requestsPerDay": 10000000, "ingestEventsPerMinute": 50000, "maxTokensPerRequest": 32000, "storageBytes": 1000000000000, "seatCap": 500, "burstMultiplier": 1.5},
}

# The tenant's current state as the worker sends it.
pro_tenant := {
	"id": "tenant-1",
	"slug": "acme",
	"status": "active",
	"plan": "PRO",
	"ownerId": "bob",
	"seats": 40,
	"storageEstimateBytes": 1000000,
	"residency": "US",
	"region": "us-east-1",
	"environment": "prod",
}

admin := {"id": "alice", "type": "user", "roles": ["viewer", "admin"]}

owner := {"id": "bob", "type": "user", "roles": []}

billing := {"id": "billing-svc", "type": "system", "roles": []}

base(action, source, actor) := {
	"action": action,
	"source": source,
	"actor": actor,
	"tenant": pro_tenant,
	"context": {"tiers": tiers},
}

plan_admin := object.union(base("change_plan", "ADMIN_API", admin), {"plan": "ENTERPRISE"})

plan_owner := object.union(base("change_plan", "SELF_SERVE_API", owner), {"plan": "STARTER"})

plan_billing := object.union(base("change_plan", "BILLING", billing), {"plan": "STARTER", "requestedSeats": 45})

suspend_billing := object.union(base("suspend", "BILLING", billing), {"reason": "PAYMENT_FAILED"})

resume_admin := base("resume", "ADMIN_API", admin)

deprovision_owner := base("deprovision", "SELF_SERVE_API", owner)

patched(doc, ops) := json.patch(doc, ops)

plan_decide(doc, ops) := res if {
	res := change_plan.result with input as patched(doc, ops)
}

suspend_decide(doc, ops) := res if {
	res := suspend.result with input as patched(doc, ops)
}

resume_decide(doc, ops) := res if {
	res := resume.result with input as patched(doc, ops)
}

deprovision_decide(doc, ops) := res if {
	res := deprovision.result with input as patched(doc, ops)
}

allowed(res, rev) if {
	res.allow == true
	res.reasons == []
	res.revision == rev
}

denied_only(res, reasons, rev) if {
	res.allow == false
	res.reasons == reasons
	res.revision == rev
}

# --- change_plan -----------------------------------------------------------------------------

test_plan_admin_upgrade_to_enterprise if allowed(plan_decide(plan_admin, []), change_plan.revision)

test_plan_owner_downgrade_within_limits if allowed(plan_decide(plan_owner, []), change_plan.revision)

test_plan_billing_downgrade_with_seats if allowed(plan_decide(plan_billing, []), change_plan.revision)

test_plan_same_plan_new_seats if {
	allowed(
		plan_decide(plan_admin, [
			{"op": "replace", "path": "/plan", "value": "PRO"},
			{"op": "add", "path": "/requestedSeats", "value": 150},
		]),
		change_plan.revision,
	)
}

# A tenant created without a seat count or a storage estimate checks none.
test_plan_tenant_without_seats_or_storage if {
	allowed(
		plan_decide(plan_owner, [
			{"op": "replace", "path": "/plan", "value": "FREE"},
			{"op": "remove", "path": "/tenant/seats"},
			{"op": "replace", "path": "/tenant/storageEstimateBytes", "value": null},
		]),
		change_plan.revision,
	)
}

test_plan_downgrade_requested_seats_over_cap if {
	denied_only(
		plan_decide(plan_billing, [{"op": "replace", "path": "/requestedSeats", "value": 51}]),
		["SEATS_OVER_PLAN_CAP"], change_plan.revision,
	)
}

# No seats in the request: the tenant's current 40 seats do not fit FREE's 5.
test_plan_downgrade_current_seats_over_cap if {
	denied_only(
		plan_decide(plan_admin, [{"op": "replace", "path": "/plan", "value": "FREE"}]),
		["SEATS_OVER_PLAN_CAP"], change_plan.revision,
	)
}

# Requested seats win over the current ones: 5 seats fit FREE.
test_plan_downgrade_with_fewer_seats if {
	allowed(
		plan_decide(plan_admin, [
			{"op": "replace", "path": "/plan", "value": "FREE"},
			{"op": "add", "path": "/requestedSeats", "value": 5},
		]),
		change_plan.revision,
	)
}

test_plan_downgrade_storage_over_limit if {
	denied_only(
		plan_decide(plan_admin, [
			{"op": "replace", "path": "/plan", "value": "STARTER"},
			{"op": "replace", "path": "/tenant/storageEstimateBytes", "value": 50000000001},
		]),
		["STORAGE_OVER_PLAN_LIMIT"], change_plan.revision,
	)
	denied_only(
		plan_decide(plan_admin, [
			{"op": "replace", "path": "/plan", "value": "STARTER"},
			{"op": "add", "path": "/storageEstimateBytes", "value": "1"},
		]),
		["STORAGE_OVER_PLAN_LIMIT"], change_plan.revision,
	)
}

test_plan_seats_not_a_number if {
	denied_only(
		plan_decide(plan_billing, [{"op": "replace", "path": "/requestedSeats", "value": "10"}]),
		["SEATS_OVER_PLAN_CAP"], change_plan.revision,
	)
}

test_plan_owner_never_to_enterprise if {
	denied_only(
		plan_decide(plan_owner, [{"op": "replace", "path": "/plan", "value": "ENTERPRISE"}]),
		["ENTERPRISE_NOT_SELF_SERVE"], change_plan.revision,
	)
}

test_plan_owner_never_from_enterprise if {
	denied_only(
		plan_decide(plan_owner, [{"op": "replace", "path": "/tenant/plan", "value": "ENTERPRISE"}]),
		["ENTERPRISE_NOT_SELF_SERVE"], change_plan.revision,
	)
}

test_plan_owner_within_self_serve_caps if {
	denied_only(
		plan_decide(plan_owner, [{"op": "add", "path": "/requestedSeats", "value": 51}]),
		["SEATS_OVER_PLAN_CAP"], change_plan.revision,
	)
}

test_plan_someone_elses_tenant if {
	denied_only(
		plan_decide(plan_owner, [{"op": "replace", "path": "/actor/id", "value": "mallory"}]),
		["NOT_TENANT_OWNER"], change_plan.revision,
	)
	denied_only(
		plan_decide(plan_owner, [{"op": "remove", "path": "/tenant/ownerId"}]),
		["NOT_TENANT_OWNER"], change_plan.revision,
	)
	denied_only(
		plan_decide(plan_owner, [{"op": "replace", "path": "/tenant/ownerId", "value": ""}]),
		["NOT_TENANT_OWNER"], change_plan.revision,
	)
}

test_plan_unknown_plan if {
	denied_only(
		plan_decide(plan_admin, [{"op": "replace", "path": "/plan", "value": "GOLD"}]),
		["SEATS_OVER_PLAN_CAP", "STORAGE_OVER_PLAN_LIMIT", "UNKNOWN_PLAN"], change_plan.revision,
	)
	denied_only(
		plan_decide(plan_admin, [{"op": "remove", "path": "/context/tiers"}]),
		["SEATS_OVER_PLAN_CAP", "STORAGE_OVER_PLAN_LIMIT", "UNKNOWN_PLAN"], change_plan.revision,
	)
}

test_plan_admin_role_required if {
	denied_only(
		plan_decide(plan_admin, [{"op": "replace", "path": "/actor/roles", "value": ["viewer"]}]),
		["ADMIN_ROLE_REQUIRED"], change_plan.revision,
	)
	allowed(
		plan_decide(plan_admin, [
			{"op": "replace", "path": "/actor/roles", "value": ["ops"]},
			{"op": "add", "path": "/context/adminRole", "value": "ops"},
		]),
		change_plan.revision,
	)
}

test_plan_billing_system_actor_required if {
	denied_only(
		plan_decide(plan_billing, [{"op": "replace", "path": "/actor/type", "value": "service"}]),
		["SYSTEM_ACTOR_REQUIRED"], change_plan.revision,
	)
}

test_plan_without_tenant_state if {
	denied_only(
		plan_decide(plan_admin, [{"op": "remove", "path": "/tenant"}]),
		["TENANT_STATE_MISSING"], change_plan.revision,
	)
	denied_only(
		plan_decide(plan_admin, [{"op": "remove", "path": "/tenant/status"}]),
		["TENANT_STATE_MISSING"], change_plan.revision,
	)
}

test_plan_unknown_source if {
	denied_only(
		plan_decide(plan_admin, [{"op": "replace", "path": "/source", "value": "SIDE_DOOR"}]),
		["UNKNOWN_SOURCE"], change_plan.revision,
	)
}

test_plan_empty_input if {
	res := change_plan.result with input as {}
	denied_only(res, ["TENANT_STATE_MISSING", "UNKNOWN_PLAN", "UNKNOWN_SOURCE"], change_plan.revision)
}

# --- suspend ---------------------------------------------------------------------------------

test_suspend_billing if allowed(suspend_decide(suspend_billing, []), suspend.revision)

test_suspend_admin if {
	allowed(
		suspend_decide(suspend_billing, [
			{"op": "replace", "path": "/source", "value": "ADMIN_API"},
			{"op": "replace", "path": "/actor", "value": admin},
		]),
		suspend.revision,
	)
}

test_suspend_not_self_serve if {
	# Not even the owner.
	denied_only(
		suspend_decide(suspend_billing, [
			{"op": "replace", "path": "/source", "value": "SELF_SERVE_API"},
			{"op": "replace", "path": "/actor", "value": owner},
		]),
		["SELF_SERVE_NOT_ALLOWED"], suspend.revision,
	)
}

test_suspend_reason_required if {
	denied_only(suspend_decide(suspend_billing, [{"op": "remove", "path": "/reason"}]), ["REASON_REQUIRED"], suspend.revision)
	denied_only(suspend_decide(suspend_billing, [{"op": "replace", "path": "/reason", "value": ""}]), ["REASON_REQUIRED"], suspend.revision)
	denied_only(suspend_decide(suspend_billing, [{"op": "replace", "path": "/reason", "value": 7}]), ["REASON_REQUIRED"], suspend.revision)
}

test_suspend_billing_user_actor if {
	denied_only(
		suspend_decide(suspend_billing, [{"op": "replace", "path": "/actor/type", "value": "user"}]),
		["SYSTEM_ACTOR_REQUIRED"], suspend.revision,
	)
}

test_suspend_admin_role_required if {
	denied_only(
		suspend_decide(suspend_billing, [
			{"op": "replace", "path": "/source", "value": "ADMIN_API"},
			{"op": "replace", "path": "/actor", "value": owner},
		]),
		["ADMIN_ROLE_REQUIRED"], suspend.revision,
	)
}

# --- resume ----------------------------------------------------------------------------------

test_resume_admin if allowed(resume_decide(resume_admin, []), resume.revision)

test_resume_billing if {
	allowed(
		resume_decide(resume_admin, [
			{"op": "replace", "path": "/source", "value": "BILLING"},
			{"op": "replace", "path": "/actor", "value": billing},
		]),
		resume.revision,
	)
}

test_resume_not_self_serve if {
	denied_only(
		resume_decide(resume_admin, [
			{"op": "replace", "path": "/source", "value": "SELF_SERVE_API"},
			{"op": "replace", "path": "/actor", "value": owner},
		]),
		["SELF_SERVE_NOT_ALLOWED"], resume.revision,
	)
}

test_resume_admin_role_required if {
	denied_only(
		resume_decide(resume_admin, [{"op": "replace", "path": "/actor/roles", "value": []}]),
		["ADMIN_ROLE_REQUIRED"], resume.revision,
	)
}

test_resume_without_tenant_state if {
	denied_only(
		resume_decide(resume_admin, [{"op": "replace", "path": "/tenant", "value": "acme"}]),
		["TENANT_STATE_MISSING"], resume.revision,
	)
}

# --- deprovision -----------------------------------------------------------------------------

test_deprovision_owner_own_tenant if allowed(deprovision_decide(deprovision_owner, []), deprovision.revision)

test_deprovision_owner_longer_retention if {
	allowed(deprovision_decide(deprovision_owner, [{"op": "add", "path": "/retentionDays", "value": 90}]), deprovision.revision)
}

test_deprovision_someone_elses_tenant if {
	denied_only(
		deprovision_decide(deprovision_owner, [{"op": "replace", "path": "/actor/id", "value": "mallory"}]),
		["NOT_TENANT_OWNER"], deprovision.revision,
	)
}

test_deprovision_owner_short_retention if {
	denied_only(
		deprovision_decide(deprovision_owner, [{"op": "add", "path": "/retentionDays", "value": 0}]),
		["RETENTION_BELOW_SELF_SERVE_MINIMUM"], deprovision.revision,
	)
}

test_deprovision_owner_not_enterprise if {
	denied_only(
		deprovision_decide(deprovision_owner, [{"op": "replace", "path": "/tenant/plan", "value": "ENTERPRISE"}]),
		["ENTERPRISE_NOT_SELF_SERVE"], deprovision.revision,
	)
}

test_deprovision_billing_immediate if {
	allowed(
		deprovision_decide(deprovision_owner, [
			{"op": "replace", "path": "/source", "value": "BILLING"},
			{"op": "replace", "path": "/actor", "value": billing},
			{"op": "add", "path": "/retentionDays", "value": 0},
		]),
		deprovision.revision,
	)
}

test_deprovision_retention_out_of_range if {
	denied_only(
		deprovision_decide(deprovision_owner, [
			{"op": "replace", "path": "/source", "value": "ADMIN_API"},
			{"op": "replace", "path": "/actor", "value": admin},
			{"op": "add", "path": "/retentionDays", "value": 3651},
		]),
		["RETENTION_OUT_OF_RANGE"], deprovision.revision,
	)
	denied_only(
		deprovision_decide(deprovision_owner, [
			{"op": "replace", "path": "/source", "value": "ADMIN_API"},
			{"op": "replace", "path": "/actor", "value": admin},
			{"op": "add", "path": "/retentionDays", "value": "30"},
		]),
		["RETENTION_OUT_OF_RANGE"], deprovision.revision,
	)
}

# --- the package documents are the answers ---------------------------------------------------

answer_shape(doc) if {
	object.keys(doc) == {"allow", "reasons", "revision", "result"}
	doc.allow == true
	doc.result == {"allow": doc.allow, "reasons": doc.reasons, "revision": doc.revision}
}

test_package_documents_are_the_answers if {
	answer_shape(data.tenants.change_plan) with input as plan_admin
	answer_shape(data.tenants.suspend) with input as suspend_billing
	answer_shape(data.tenants.resume) with input as resume_admin
	answer_shape(data.tenants.deprovision) with input as deprovision_owner
}

test_deny_by_default_without_input if {
	not change_plan.allow
	not suspend.allow
	not resume.allow
	not deprovision.allow
}
