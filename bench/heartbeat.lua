-- wrk script: DB-GPT-style heartbeats (POST /api/controller/heartbeat) for
-- N distinct instances, cycling. Environment:
--   ROSTER_BENCH_INSTANCES  N (default 10000)
--   ROSTER_BENCH_PART, ROSTER_BENCH_PARTS   this wrk beats the instances
--                           i with i % PARTS == PART (default 0, 1: all)
--   ROSTER_BENCH_RATE       heartbeats per second for this wrk (default 0:
--                           as fast as answers come, closed loop). With a
--                           rate, each connection waits between requests
--                           (wrk's delay()), and the wait is corrected once
--                           a second (os.time) toward the rate: a fleet
--                           that beats at its interval whatever the latency,
--                           until the connections cannot keep up
--   ROSTER_BENCH_CONNS      connections of this wrk (-c), for the first wait
--   ROSTER_BENCH_INTERVAL   heartbeat_interval_secs sent (default 5; lease =
--                           3 x that); "dbgpt": none (the controller's
--                           --heartbeat_timeout_secs lease, as DB-GPT)
--   ROSTER_BENCH_PREFIX     model name prefix (default "bench")
-- Each wrk thread starts at a different offset so threads spread over the set.
local n = tonumber(os.getenv("ROSTER_BENCH_INSTANCES") or "10000")
local part = tonumber(os.getenv("ROSTER_BENCH_PART") or "0")
local parts = tonumber(os.getenv("ROSTER_BENCH_PARTS") or "1")
local rate = tonumber(os.getenv("ROSTER_BENCH_RATE") or "0")
local conns = tonumber(os.getenv("ROSTER_BENCH_CONNS") or "1")
local interval = os.getenv("ROSTER_BENCH_INTERVAL") or "5"
local prefix = os.getenv("ROSTER_BENCH_PREFIX") or "bench"
local models = 100
local reqs = {}
local nreq = 0
local counter = 0
local wait_ms = 0
local done_n, sec, sec_n, nb = 0, nil, 0, 0

function setup(thread)
  counter = counter + 1
  thread:set("offset", counter * 7919)
end

function init(args)
  local iv = ""
  if interval ~= "dbgpt" then
    iv = string.format('"heartbeat_interval_secs":%s,', interval)
  end
  for i = part, n - 1, parts do
    local body = string.format(
      '{"model_name":"%s-%d@llm","host":"10.%d.%d.%d","port":8001,"weight":1.0,' ..
      '"check_healthy":true,"healthy":false,"enabled":true,"prompt_template":null,' ..
      '"last_heartbeat":null,"remove_from_registry":false,' ..
      '%s"load":{"in_flight":%d,"queue_length":0,"capacity":8}}',
      prefix, i % models, 1 + math.floor(i / 65536) % 200, math.floor(i / 256) % 256, i % 256,
      iv, i % 8)
    reqs[nreq] = wrk.format("POST", "/api/controller/heartbeat",
      {["Content-Type"] = "application/json"}, body)
    nreq = nreq + 1
  end
  idx = (offset or 0) % nreq
  if rate > 0 then
    wait_ms = conns * 1000 / rate * 0.9 -- the latency takes the rest
  end
end

function request()
  idx = (idx + 1) % nreq
  return reqs[idx]
end

function delay()
  return wait_ms
end

function response(status, headers, body)
  if status ~= 200 then
    errors = (errors or 0) + 1
  end
  if rate > 0 then
    done_n = done_n + 1
    local now = os.time()
    if now ~= sec then
      nb = nb + 1
      if nb > 2 then -- whole seconds only (the first two boundaries close partial ones)
        local got = done_n - sec_n
        local want = rate * (now - sec)
        if got < want * 0.98 or got > want * 1.02 then
          wait_ms = wait_ms * math.max(0.5, math.min(1.5, got / want))
        end
      end
      sec = now
      sec_n = done_n
    end
  end
end
