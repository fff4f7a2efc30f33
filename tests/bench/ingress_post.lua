-- ingress_post.lua: wrk script of `scripts/bench ingress`: POSTs valid admin requests, each with a
-- slug of its own (BENCH_PREFIX-<thread>-<n>), with the bearer token in BENCH_TOKEN; counts the
-- answers by status and prints one summary line for the script to parse.
--   wrk -c 16 -t 2 -d 20s -s tests/bench/ingress_post.lua http://127.0.0.1:PORT/api/admin/tenants
-- BENCH_BODY_ONLY=1 turns it into the OPA baseline: POSTs the file BENCH_BODY_FILE unchanged.
local threads = {}
local counter = 1

function setup(thread)
    thread:set("id", counter)
    table.insert(threads, thread)
    counter = counter + 1
end

function init(args)
    n = 0
    statuses = {}
    prefix = os.getenv("BENCH_PREFIX") or "wrk"
    token = os.getenv("BENCH_TOKEN") or ""
    fixed = nil
    local f = os.getenv("BENCH_BODY_FILE")
    if f then
        local h = assert(io.open(f, "r"))
        fixed = h:read("*a")
        h:close()
    end
    headers = {["Content-Type"] = "application/json"}
    if token ~= "" then headers["Authorization"] = "Bearer " .. token end
end

function request()
    if fixed then
        return wrk.format("POST", nil, headers, fixed)
    end
    n = n + 1
    local slug = string.format("%s-%d-%d", prefix, id, n)
    local body = string.format(
        '{"name":"Bench %s","slug":"%s","residency":"US","region":"us-east-1","plan":"PRO","environment":"prod"}',
        slug, slug)
    return wrk.format("POST", nil, headers, body)
end

function response(status, hdrs, body)
    statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
    local total = {}
    for _, t in ipairs(threads) do
        local st = t:get("statuses")
        for k, v in pairs(st) do total[k] = (total[k] or 0) + v end
    end
    local codes = {}
    for k, v in pairs(total) do table.insert(codes, string.format("%d:%d", k, v)) end
    table.sort(codes)
    io.write(string.format("BENCH seconds %.3f requests %d p50_ms %.2f p99_ms %.2f errors %d statuses %s\n",
        summary.duration / 1e6, summary.requests, latency:percentile(50) / 1000,
        latency:percentile(99) / 1000,
        summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
        table.concat(codes, ",")))
end
