# Plan change policy: may this TenantActionRequest (action CHANGE_PLAN) move a tenant to another
# plan? POST /v1/data/tenants/change_plan answers {allow, reasons, revision, result} like
# tenants.provision; the checks live in tenants.change_plan_checks.
# Deny by default. Seats and storage (the requested ones, else the tenant's current ones) must fit
# the new plan's tier for every source: a downgrade below what the tenant uses is denied. A
# self-serve owner changes plans between FREE, STARTER and PRO only (ENTERPRISE contracts, up or
# down, are for admins and billing).
package tenants.change_plan

import data.tenants.change_plan_checks as checks
import rego.v1

revision := "tenants.change_plan/2026-12.1"

default allow := false

allow if {
	checks.known_source
	count(checks.deny) == 0
}

reasons := sort(checks.deny)

result := {
	"allow": allow,
	"reasons": reasons,
	"revision": revision,
}
