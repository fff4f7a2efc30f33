# The checks behind tenants.change_plan (stable deny codes; a missing or mistyped field denies).
package tenants.change_plan_checks

import data.tenants.action_checks as common
import rego.v1

known_source := common.known_source

tier := input.context.tiers[input.plan]

# Seats the tenant would have on the new plan: the requested count, else its current one; none at
# all (a tenant created without a seat count) checks nothing.
seats := input.requestedSeats if {
	object.get(input, "requestedSeats", null) != null
} else := input.tenant.seats if {
	object.get(input.tenant, "seats", null) != null
}

storage := input.storageEstimateBytes if {
	object.get(input, "storageEstimateBytes", null) != null
} else := input.tenant.storageEstimateBytes if {
	object.get(input.tenant, "storageEstimateBytes", null) != null
}

seats_within_cap if not seats

seats_within_cap if {
	is_number(seats)
	seats <= tier.seatCap
}

storage_within_limit if not storage

storage_within_limit if {
	is_number(storage)
	storage <= tier.storageBytes
}

deny contains reason if some reason in common.deny

deny contains "UNKNOWN_PLAN" if not tier

deny contains "SEATS_OVER_PLAN_CAP" if not seats_within_cap

deny contains "STORAGE_OVER_PLAN_LIMIT" if not storage_within_limit

deny contains "ENTERPRISE_NOT_SELF_SERVE" if {
	input.source == "SELF_SERVE_API"
	input.plan == "ENTERPRISE"
}

deny contains "ENTERPRISE_NOT_SELF_SERVE" if {
	input.source == "SELF_SERVE_API"
	input.tenant.plan == "ENTERPRISE"
}
