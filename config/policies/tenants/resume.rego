# Resumption policy: may this TenantActionRequest (action RESUME) bring a suspended tenant back
# (billing's "payment recovered", an admin)? POST /v1/data/tenants/resume answers {allow, reasons,
# revision, result} like tenants.provision; the checks live in tenants.resume_checks. Admins and
# billing only.
package tenants.resume

import data.tenants.resume_checks as checks
import rego.v1

revision := "tenants.resume/2026-12.1"

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
