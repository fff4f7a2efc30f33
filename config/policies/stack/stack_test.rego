package stack.smoke_test

import rego.v1

import data.stack.smoke

test_pong_allowed if smoke.allow with input as {"ping": "pong"}

test_other_denied if not smoke.allow with input as {"ping": "nope"}

test_missing_denied if not smoke.allow with input as {}
