# The stack's own smoke-test policy: proves that OPA serves config/policies (tests/integration/test_stack.c).
package stack.smoke

import rego.v1

default allow := false

allow if input.ping == "pong"
