# The checks behind tenants.deprovision (stable deny codes; a missing or mistyped field denies).
package tenants.deprovision_checks

import data.tenants.action_checks as common
import rego.v1

known_source := common.known_source

# Days before purge when the request names none (also the worker's default).
default_retention_days := 30

retention_days := input.retentionDays if {
	object.get(input, "retentionDays", null) != null
} else := default_retention_days

deny contains reason if some reason in common.deny

deny contains "RETENTION_OUT_OF_RANGE" if not retention_in_range

retention_in_range if {
	is_number(retention_days)
	retention_days >= 0
	retention_days <= 3650
}

deny contains "RETENTION_BELOW_SELF_SERVE_MINIMUM" if {
	input.source == "SELF_SERVE_API"
	is_number(retention_days)
	retention_days < default_retention_days
}

deny contains "ENTERPRISE_NOT_SELF_SERVE" if {
	input.source == "SELF_SERVE_API"
	input.tenant.plan == "ENTERPRISE"
}
