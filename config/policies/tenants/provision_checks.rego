# The checks behind tenants.provision: fail-closed helpers and the set of deny reasons (stable
# codes). Every rule is written so that a missing or mistyped input field denies.
package tenants.provision_checks

import rego.v1

# --- inputs, with fail-closed defaults --------------------------------------------------------

sources := {"ADMIN_API", "SELF_SERVE_API", "BILLING"}

known_source if input.source in sources

admin_role := r if {
	r := input.context.adminRole
	is_string(r)
	r != ""
} else := "admin"

max_tenants_per_user := n if {
	n := input.context.maxTenantsPerUser
	is_number(n)
} else := 3

residency_prefix := {"US": "us-", "EU": "eu-"}

default_region := {"US": "us-east-1", "EU": "eu-central-1"}

# The region the tenant lands in: the requested one, else the residency's default.
region := r if {
	r := input.tenant.region
	is_string(r)
	r != ""
} else := default_region[input.tenant.residency]

tier := input.context.tiers[input.plan]

# A field that is absent or null is not checked; anything present must be a number.
absent(field) if object.get(input, field, null) == null

# --- checks that hold for every source --------------------------------------------------------

region_matches_residency if startswith(region, residency_prefix[input.tenant.residency])

region_in_allowlist if {
	is_array(input.context.regionAllowlist)
	region in input.context.regionAllowlist
}

# --- ADMIN_API -------------------------------------------------------------------------------

is_admin if {
	is_array(input.actor.roles)
	admin_role in input.actor.roles
}

# --- BILLING ---------------------------------------------------------------------------------

is_system_actor if input.actor.type == "system"

# --- SELF_SERVE_API --------------------------------------------------------------------------

seats_within_cap if absent("requestedSeats")

seats_within_cap if {
	is_number(input.requestedSeats)
	input.requestedSeats <= tier.seatCap
}

storage_within_limit if absent("storageEstimateBytes")

storage_within_limit if {
	is_number(input.storageEstimateBytes)
	input.storageEstimateBytes <= tier.storageBytes
}

below_tenant_limit if {
	is_number(input.context.ownedTenants)
	input.context.ownedTenants < max_tenants_per_user
}

# --- deny reasons (stable codes) -------------------------------------------------------------

deny contains "UNKNOWN_SOURCE" if not known_source

deny contains "REGION_RESIDENCY_MISMATCH" if not region_matches_residency

deny contains "REGION_NOT_ALLOWED" if not region_in_allowlist

deny contains "ADMIN_ROLE_REQUIRED" if {
	input.source == "ADMIN_API"
	not is_admin
}

deny contains "ENTERPRISE_NOT_SELF_SERVE" if {
	input.source == "SELF_SERVE_API"
	input.plan == "ENTERPRISE"
}

deny contains "UNKNOWN_PLAN" if {
	input.source == "SELF_SERVE_API"
	not tier
}

deny contains "SEATS_OVER_PLAN_CAP" if {
	input.source == "SELF_SERVE_API"
	not seats_within_cap
}

deny contains "STORAGE_OVER_PLAN_LIMIT" if {
	input.source == "SELF_SERVE_API"
	not storage_within_limit
}

deny contains "TENANT_LIMIT_REACHED" if {
	input.source == "SELF_SERVE_API"
	not below_tenant_limit
}

deny contains "SYSTEM_ACTOR_REQUIRED" if {
	input.source == "BILLING"
	not is_system_actor
}
