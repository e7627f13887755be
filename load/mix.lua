-- wrk script for the load harness (load/harness.py).
--
-- WRK_REQUESTS names a Lua file returning a list of requests:
--   { {method = "GET", path = "/x", headers = {["X-Purpose"] = "..."}, body = nil}, ... }
-- Entries are pre-formatted once per wrk thread and sent in order, round-robin, so the mix
-- (its weights are repetitions, shuffled by the harness) is the same in every run. A list of
-- one request is sent as wrk's static request: no Lua call per request, as fast as plain wrk.
--
-- done() prints one line "WRK_RESULT {json}" with the counts and the latency percentiles in
-- microseconds, p99.9 and p99.99 included (wrk's own --latency table stops at p99).

local path = os.getenv("WRK_REQUESTS")
if path == nil or path == "" then
  error("WRK_REQUESTS is not set")
end
local entries = dofile(path)
if #entries == 0 then
  error("WRK_REQUESTS holds no request")
end

if #entries == 1 then
  local only = entries[1]
  wrk.method = only.method
  wrk.path = only.path
  wrk.headers = only.headers or {}
  wrk.body = only.body
else
  local formatted = {}
  local count = #entries
  local index = 0

  init = function(args)
    for i, entry in ipairs(entries) do
      formatted[i] = wrk.format(entry.method, entry.path, entry.headers or {}, entry.body)
    end
  end

  request = function()
    index = index + 1
    if index > count then
      index = 1
    end
    return formatted[index]
  end
end

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK_RESULT {"requests":%d,"duration_us":%d,"bytes":%d,' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
    '"latency_us":{"min":%d,"mean":%.2f,"max":%d,"stdev":%.2f,' ..
    '"p50":%d,"p75":%d,"p90":%d,"p99":%d,"p99.9":%d,"p99.99":%d}}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.min, latency.mean, latency.max, latency.stdev,
    latency:percentile(50), latency:percentile(75), latency:percentile(90),
    latency:percentile(99), latency:percentile(99.9), latency:percentile(99.99)))
end
