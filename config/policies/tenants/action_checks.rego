# Checks shared by the tenant lifecycle packages (tenants.change_plan, tenants.suspend,
# tenants.resume, tenants.deprovision): who may act on an existing tenant. The input of an action
# carries the tenant's current state under input.tenant (id, slug, status, plan, ownerId, seats,
# storageEstimateBytes, residency, region, environment), filled by the worker from PostgreSQL.
# Every rule is written so that a missing or mistyped input field denies.
package tenants.action_checks

import rego.v1

sources := {"ADMIN_API", "SELF_SERVE_API", "BILLING"}

known_source if input.source in sources

admin_role := r if {
	r := input.context.adminRole
	is_string(r)
	r != ""
} else := "admin"

is_admin if {
	is_array(input.actor.roles)
	admin_role in input.actor.roles
}

is_system_actor if input.actor.type == "system"

# The tenant's current state came with the input (the worker never asks about an unknown slug,
# but a policy must not allow what it cannot see).
tenant_known if {
	is_object(input.tenant)
	is_string(input.tenant.slug)
	is_string(input.tenant.status)
	is_string(input.tenant.plan)
}

# A self-serve caller acts only on a tenant it owns: ownerId set and equal to the actor.
is_owner if {
	is_string(input.tenant.ownerId)
	input.tenant.ownerId != ""
	input.tenant.ownerId == input.actor.id
}

# The deny reasons every action shares (stable codes).
deny contains "UNKNOWN_SOURCE" if not known_source

deny contains "TENANT_STATE_MISSING" if not tenant_known

deny contains "ADMIN_ROLE_REQUIRED" if {
	input.source == "ADMIN_API"
	not is_admin
}

deny contains "SYSTEM_ACTOR_REQUIRED" if {
	input.source == "BILLING"
	not is_system_actor
}

deny contains "NOT_TENANT_OWNER" if {
	input.source == "SELF_SERVE_API"
	not is_owner
}
