-- wrk script: DB-GPT-style heartbeats (POST /api/controller/heartbeat) for
-- N distinct instances (env ROSTER_BENCH_INSTANCES, default 10000), cycling.
-- Each wrk thread starts at a different offset so threads spread over the set.
local n = tonumber(os.getenv("ROSTER_BENCH_INSTANCES") or "10000")
local models = 100
local reqs = {}
local counter = 0

function setup(thread)
  counter = counter + 1
  thread:set("offset", counter * 7919)
end

function init(args)
  for i = 0, n - 1 do
    local body = string.format(
      '{"model_name":"bench-%d@llm","host":"10.%d.%d.%d","port":8001,"weight":1.0,' ..
      '"check_healthy":true,"healthy":false,"enabled":true,"prompt_template":null,' ..
      '"last_heartbeat":null,"remove_from_registry":false,' ..
      '"heartbeat_interval_secs":5,"load":{"in_flight":%d,"queue_length":0,"capacity":8}}',
      i % models, 1 + math.floor(i / 65536) % 200, math.floor(i / 256) % 256, i % 256, i % 8)
    reqs[i] = wrk.format("POST", "/api/controller/heartbeat",
      {["Content-Type"] = "application/json"}, body)
  end
  idx = (offset or 0) % n
end

function request()
  idx = (idx + 1) % n
  return reqs[idx]
end

function response(status, headers, body)
  if status ~= 200 then
    errors = (errors or 0) + 1
  end
end
