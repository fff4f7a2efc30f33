# Provisioning policy of tenant-provisioner: may this ProvisioningRequest create a tenant?
# Deny by default: `allow` is true only when the source is known and no deny reason holds.
# POST /v1/data/tenants/provision answers this package's document, which is exactly
# {allow, reasons, revision, result} (result repeats the first three); the checks live in
# tenants.provision_checks so that they never leak into the answer.
# The quota tiers come from the caller (input.context.tiers: the entries of config/quota-tiers.json
# for the plans the input names), never from these files, so OPA and the quota stage read one table.
package tenants.provision

import data.tenants.provision_checks as checks
import rego.v1

# Bumped by hand whenever the rules change; stored with every decision and every receipt.
revision := "tenants.provision/2025-06.1"

default allow := false

allow if {
	checks.known_source
	count(checks.deny) == 0
}

# Stable codes, sorted so that answers compare equal.
reasons := sort(checks.deny)

result := {
	"allow": allow,
	"reasons": reasons,
	"revision": revision,
}
