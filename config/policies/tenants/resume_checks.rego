# The checks behind tenants.resume (stable deny codes; a missing or mistyped field denies).
package tenants.resume_checks

import data.tenants.action_checks as common
import rego.v1

known_source := common.known_source

deny contains reason if some reason in common.deny

deny contains "SELF_SERVE_NOT_ALLOWED" if input.source == "SELF_SERVE_API"
