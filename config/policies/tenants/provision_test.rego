# Tests of tenants.provision: every allow path and every deny reason, each on its own and some
# combined; run with `opa test config/policies`.
package tenants.provision_test

import data.tenants.provision
import rego.v1

tiers := {
	"FREE": {"requestsPerMinute": 20, "requestsPerDay": 1000, "ingestEventsPerMinute": 100, "maxTokensPerRequest": 1000, "storageBytes": 5000000000, "seatCap": 5, "burstMultiplier": 1.0},
	"STARTER": {"requestsPerMinute": 100, "requestsPerDay": 100000, "ingestEventsPerMinute": 500, "maxTokensPerRequest": 4000, "storageBytes": 50000000000, "seatCap": 50, "burstMultiplier": 1.1},
	"PRO": {"requestsPerMinute": 1000, "requestsPerDay": 1000000, "ingestEventsPerMinute": 5000, "maxTokensPerRequest": 16000, "storageBytes": 250000000000, "seatCap": 150, "burstMultiplier": 1.2},
	"ENTERPRISE": {"requestsPerMinute": 10000, "requestsPerDay": 10000000, "ingestEventsPerMinute": 50000, "maxTokensPerRequest": 32000, "storageBytes": 1000000000000, "seatCap": 500, "burstMultiplier": 1.5},
}

context := {
	"ownedTenants": 0,
	"tiers": tiers,
	"regionAllowlist": ["us-east-1", "us-west-2", "eu-central-1", "eu-west-1"],
	"maxTenantsPerUser": 3,
}

admin_input := {
	"action": "provision",
	"source": "ADMIN_API",
	"actor": {"id": "alice", "type": "user", "roles": ["viewer", "admin"]},
	"tenant": {"name": "Acme", "slug": "acme", "residency": "US", "region": "us-east-1"},
	"plan": "ENTERPRISE",
	"environment": "prod",
	"context": context,
}

self_input := {
	"action": "provision",
	"source": "SELF_SERVE_API",
	"actor": {"id": "bob", "type": "user", "roles": []},
	"tenant": {"name": "Bob Co", "slug": "bob-co", "residency": "EU", "region": "eu-central-1"},
	"plan": "STARTER",
	"environment": "dev",
	"requestedSeats": 10,
	"storageEstimateBytes": 1000000,
	"context": context,
}

billing_input := {
	"action": "provision",
	"source": "BILLING",
	"actor": {"id": "billing-svc", "type": "system", "roles": []},
	"tenant": {"name": "Paid Co", "slug": "paid-co", "residency": "US", "region": "us-west-2"},
	"plan": "PRO",
	"environment": "staging",
	"context": context,
}

# Applies JSON patch operations to a base input and evaluates the result document.
decide(base, ops) := res if {
	res := provision.result with input as json.patch(base, ops)
}

allowed(res) if {
	res.allow == true
	res.reasons == []
	res.revision == provision.revision
}

denied_only(res, reasons) if {
	res.allow == false
	res.reasons == reasons
	res.revision == provision.revision
}

# --- allow paths -----------------------------------------------------------------------------

test_admin_allow if allowed(decide(admin_input, []))

test_admin_allow_custom_role if {
	allowed(decide(admin_input, [
		{"op": "replace", "path": "/actor/roles", "value": ["platform-admin"]},
		{"op": "add", "path": "/context/adminRole", "value": "platform-admin"},
	]))
}

test_admin_allow_any_plan if {
	every plan in ["FREE", "STARTER", "PRO", "ENTERPRISE"] {
		allowed(decide(admin_input, [{"op": "replace", "path": "/plan", "value": plan}]))
	}
}

test_self_serve_allow if allowed(decide(self_input, []))

test_self_serve_allow_without_seats_and_storage if {
	allowed(decide(self_input, [
		{"op": "remove", "path": "/requestedSeats"},
		{"op": "remove", "path": "/storageEstimateBytes"},
	]))
}

test_self_serve_allow_null_seats_and_storage if {
	allowed(decide(self_input, [
		{"op": "replace", "path": "/requestedSeats", "value": null},
		{"op": "replace", "path": "/storageEstimateBytes", "value": null},
	]))
}

test_self_serve_allow_exactly_at_caps if {
	every plan in ["FREE", "STARTER", "PRO"] {
		allowed(decide(self_input, [
			{"op": "replace", "path": "/plan", "value": plan},
			{"op": "replace", "path": "/requestedSeats", "value": tiers[plan].seatCap},
			{"op": "replace", "path": "/storageEstimateBytes", "value": tiers[plan].storageBytes},
		]))
	}
}

test_self_serve_allow_below_tenant_limit if {
	allowed(decide(self_input, [{"op": "replace", "path": "/context/ownedTenants", "value": 2}]))
}

test_self_serve_allow_raised_tenant_limit if {
	allowed(decide(self_input, [
		{"op": "replace", "path": "/context/ownedTenants", "value": 7},
		{"op": "replace", "path": "/context/maxTenantsPerUser", "value": 8},
	]))
}

test_billing_allow if allowed(decide(billing_input, []))

test_billing_allow_eu if {
	allowed(decide(billing_input, [{"op": "replace", "path": "/tenant", "value": {"name": "X", "slug": "xx-x", "residency": "EU", "region": "eu-west-1"}}]))
}

test_region_defaulted_from_residency if {
	allowed(decide(billing_input, [{"op": "remove", "path": "/tenant/region"}]))
	allowed(decide(self_input, [{"op": "replace", "path": "/tenant/region", "value": ""}]))
}

# --- deny paths ------------------------------------------------------------------------------

test_admin_deny_without_admin_role if {
	denied_only(decide(admin_input, [{"op": "replace", "path": "/actor/roles", "value": ["viewer"]}]), ["ADMIN_ROLE_REQUIRED"])
}

test_admin_deny_without_roles if {
	denied_only(decide(admin_input, [{"op": "remove", "path": "/actor/roles"}]), ["ADMIN_ROLE_REQUIRED"])
	denied_only(decide(admin_input, [{"op": "replace", "path": "/actor/roles", "value": "admin"}]), ["ADMIN_ROLE_REQUIRED"])
}

test_admin_deny_when_role_overridden if {
	denied_only(decide(admin_input, [{"op": "add", "path": "/context/adminRole", "value": "root"}]), ["ADMIN_ROLE_REQUIRED"])
}

test_self_serve_deny_enterprise if {
	denied_only(decide(self_input, [{"op": "replace", "path": "/plan", "value": "ENTERPRISE"}]), ["ENTERPRISE_NOT_SELF_SERVE"])
}

test_self_serve_deny_seats_over_cap if {
	denied_only(decide(self_input, [{"op": "replace", "path": "/requestedSeats", "value": 51}]), ["SEATS_OVER_PLAN_CAP"])
	denied_only(
		decide(self_input, [
			{"op": "replace", "path": "/plan", "value": "FREE"},
			{"op": "replace", "path": "/requestedSeats", "value": 6},
		]),
		["SEATS_OVER_PLAN_CAP"],
	)
}

test_self_serve_deny_seats_not_a_number if {
	denied_only(decide(self_input, [{"op": "replace", "path": "/requestedSeats", "value": "10"}]), ["SEATS_OVER_PLAN_CAP"])
}

test_self_serve_deny_storage_over_limit if {
	denied_only(decide(self_input, [{"op": "replace", "path": "/storageEstimateBytes", "value": 50000000001}]), ["STORAGE_OVER_PLAN_LIMIT"])
	denied_only(decide(self_input, [{"op": "replace", "path": "/storageEstimateBytes", "value": "1"}]), ["STORAGE_OVER_PLAN_LIMIT"])
}

test_self_serve_deny_tenant_limit_default if {
	denied_only(
		decide(self_input, [
			{"op": "replace", "path": "/context/ownedTenants", "value": 3},
			{"op": "remove", "path": "/context/maxTenantsPerUser"},
		]),
		["TENANT_LIMIT_REACHED"],
	)
}

test_self_serve_deny_tenant_limit_configured if {
	denied_only(
		decide(self_input, [
			{"op": "replace", "path": "/context/ownedTenants", "value": 1},
			{"op": "replace", "path": "/context/maxTenantsPerUser", "value": 1},
		]),
		["TENANT_LIMIT_REACHED"],
	)
}

test_self_serve_deny_owned_tenants_unknown if {
	denied_only(decide(self_input, [{"op": "remove", "path": "/context/ownedTenants"}]), ["TENANT_LIMIT_REACHED"])
}

test_self_serve_deny_without_tiers if {
	denied_only(decide(self_input, [{"op": "remove", "path": "/context/tiers"}]), ["SEATS_OVER_PLAN_CAP", "STORAGE_OVER_PLAN_LIMIT", "UNKNOWN_PLAN"])
	denied_only(
		decide(self_input, [
			{"op": "remove", "path": "/context/tiers"},
			{"op": "remove", "path": "/requestedSeats"},
			{"op": "remove", "path": "/storageEstimateBytes"},
		]),
		["UNKNOWN_PLAN"],
	)
}

test_self_serve_deny_unknown_plan if {
	denied_only(decide(self_input, [{"op": "replace", "path": "/plan", "value": "GOLD"}]), ["SEATS_OVER_PLAN_CAP", "STORAGE_OVER_PLAN_LIMIT", "UNKNOWN_PLAN"])
}

test_self_serve_deny_everything_at_once if {
	denied_only(
		decide(self_input, [
			{"op": "replace", "path": "/plan", "value": "ENTERPRISE"},
			{"op": "replace", "path": "/requestedSeats", "value": 501},
			{"op": "replace", "path": "/storageEstimateBytes", "value": 1000000000001},
			{"op": "replace", "path": "/context/ownedTenants", "value": 3},
			{"op": "replace", "path": "/tenant/region", "value": "us-east-1"},
		]),
		["ENTERPRISE_NOT_SELF_SERVE", "REGION_RESIDENCY_MISMATCH", "SEATS_OVER_PLAN_CAP", "STORAGE_OVER_PLAN_LIMIT", "TENANT_LIMIT_REACHED"],
	)
}

test_billing_deny_user_actor if {
	denied_only(decide(billing_input, [{"op": "replace", "path": "/actor/type", "value": "user"}]), ["SYSTEM_ACTOR_REQUIRED"])
	denied_only(decide(billing_input, [{"op": "remove", "path": "/actor/type"}]), ["SYSTEM_ACTOR_REQUIRED"])
}

test_billing_admin_role_is_not_enough if {
	denied_only(
		decide(billing_input, [
			{"op": "replace", "path": "/actor/type", "value": "service"},
			{"op": "replace", "path": "/actor/roles", "value": ["admin"]},
		]),
		["SYSTEM_ACTOR_REQUIRED"],
	)
}

test_deny_region_residency_mismatch if {
	denied_only(decide(admin_input, [{"op": "replace", "path": "/tenant/region", "value": "eu-west-1"}]), ["REGION_RESIDENCY_MISMATCH"])
	denied_only(decide(self_input, [{"op": "replace", "path": "/tenant/region", "value": "us-west-2"}]), ["REGION_RESIDENCY_MISMATCH"])
}

test_deny_region_not_allowed if {
	denied_only(decide(billing_input, [{"op": "replace", "path": "/tenant/region", "value": "us-east-2"}]), ["REGION_NOT_ALLOWED"])
	denied_only(decide(self_input, [{"op": "replace", "path": "/tenant/region", "value": "eu-north-1"}]), ["REGION_NOT_ALLOWED"])
}

test_deny_region_both if {
	denied_only(decide(admin_input, [{"op": "replace", "path": "/tenant/region", "value": "ap-south-1"}]), ["REGION_NOT_ALLOWED", "REGION_RESIDENCY_MISMATCH"])
}

test_deny_without_allowlist if {
	denied_only(decide(admin_input, [{"op": "remove", "path": "/context/regionAllowlist"}]), ["REGION_NOT_ALLOWED"])
	denied_only(decide(admin_input, [{"op": "replace", "path": "/context/regionAllowlist", "value": []}]), ["REGION_NOT_ALLOWED"])
}

test_deny_unknown_residency if {
	denied_only(decide(admin_input, [{"op": "replace", "path": "/tenant/residency", "value": "APAC"}]), ["REGION_RESIDENCY_MISMATCH"])
	denied_only(
		decide(billing_input, [
			{"op": "replace", "path": "/tenant/residency", "value": "APAC"},
			{"op": "remove", "path": "/tenant/region"},
		]),
		["REGION_NOT_ALLOWED", "REGION_RESIDENCY_MISMATCH"],
	)
}

test_deny_unknown_source if {
	denied_only(decide(admin_input, [{"op": "replace", "path": "/source", "value": "SIDE_DOOR"}]), ["UNKNOWN_SOURCE"])
	denied_only(decide(admin_input, [{"op": "remove", "path": "/source"}]), ["UNKNOWN_SOURCE"])
}

test_deny_empty_input if {
	res := provision.result with input as {}
	denied_only(res, ["REGION_NOT_ALLOWED", "REGION_RESIDENCY_MISMATCH", "UNKNOWN_SOURCE"])
}

test_deny_without_input if {
	res := provision.result
	res.allow == false
	"UNKNOWN_SOURCE" in res.reasons
}

test_allow_false_by_default if {
	not provision.allow == true with input as {}
}

# The service reads the package document: it must carry allow/reasons/revision itself and nothing
# of the checks.
test_package_document_is_the_answer if {
	doc := data.tenants.provision with input as admin_input
	object.keys(doc) == {"allow", "reasons", "revision", "result"}
	doc.allow == true
	doc.reasons == []
	doc.result == {"allow": doc.allow, "reasons": doc.reasons, "revision": doc.revision}
	denied := data.tenants.provision with input as json.patch(self_input, [{"op": "replace", "path": "/plan", "value": "ENTERPRISE"}])
	denied.allow == false
	denied.reasons == ["ENTERPRISE_NOT_SELF_SERVE"]
	denied.result.reasons == denied.reasons
}
