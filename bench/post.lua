-- wrk script: POST AdmissionReviews as the API server does (keep-alive, application/json).
--
-- Environment (set by bench/run.py):
--   BENCH_BODIES      files holding the request bodies, separated by ":"; several are sent in turn
--   BENCH_STOP_AFTER  optional: each thread stops after this many responses (wrk itself only knows time)
-- done() prints one line "BENCH_RESULT {json}" that bench/run.py parses: requests, seconds, errors,
-- latency percentiles in microseconds.

local function read_file(path)
  local file = assert(io.open(path, "rb"))
  local data = file:read("*a")
  file:close()
  return data
end

local paths = {}
for path in string.gmatch(os.getenv("BENCH_BODIES") or "", "[^:]+") do
  paths[#paths + 1] = path
end
assert(#paths > 0, "BENCH_BODIES names no file")

wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = read_file(paths[1])

if #paths > 1 then
  -- Formatted once, at the first request (wrk.host is not known yet while this file loads): building one
  -- per call would make wrk, not the server, the bottleneck.
  local formatted = nil
  local next_index = 0
  function request()
    if formatted == nil then
      formatted = {}
      for i, path in ipairs(paths) do
        -- A new table each: wrk.format adds Host and Content-Length to the headers it is given.
        formatted[i] = wrk.format("POST", nil, {["Content-Type"] = "application/json"}, read_file(path))
      end
    end
    next_index = next_index % #formatted + 1
    return formatted[next_index]
  end
end

local stop_after = tonumber(os.getenv("BENCH_STOP_AFTER") or "")
if stop_after then
  local answered = 0
  function response(status, headers, body)
    answered = answered + 1
    if answered >= stop_after then
      wrk.thread:stop()
    end
  end
end

function done(summary, latency, requests)
  local errors = summary.errors
  io.write(string.format(
    'BENCH_RESULT {"requests":%d,"seconds":%.6f,"errors":{"connect":%d,"read":%d,"write":%d,' ..
    '"status":%d,"timeout":%d},"p50_us":%d,"p99_us":%d,"mean_us":%.1f,"max_us":%d}\n',
    summary.requests, summary.duration / 1e6, errors.connect, errors.read, errors.write, errors.status,
    errors.timeout, latency:percentile(50), latency:percentile(99), latency.mean, latency.max))
end
