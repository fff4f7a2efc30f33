# Suspension policy: may this TenantActionRequest (action SUSPEND) suspend a tenant (billing's
# "payment failed", an admin)? POST /v1/data/tenants/suspend answers {allow, reasons, revision,
# result} like tenants.provision; the checks live in tenants.suspend_checks. Admins and billing
# only; a reason is required.
package tenants.suspend

import data.tenants.suspend_checks as checks
import rego.v1

revision := "tenants.suspend/2026-12.1"

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
