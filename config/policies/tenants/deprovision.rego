# Offboarding policy: may this TenantActionRequest (action DEPROVISION) soft-delete a tenant?
# POST /v1/data/tenants/deprovision answers {allow, reasons, revision, result} like
# tenants.provision; the checks live in tenants.deprovision_checks. Admins and billing may; a
# self-serve owner may offboard its own tenant (never someone else's, never an ENTERPRISE one),
# keeping at least the default retention so nothing is purged sooner than the product promises.
package tenants.deprovision

import data.tenants.deprovision_checks as checks
import rego.v1

revision := "tenants.deprovision/2026-12.1"

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
