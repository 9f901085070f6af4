-- wrk script: each connection creates a consumer, then a key-auth credential
-- for it, alternately. Run with as many threads as connections so each
-- connection's requests are strictly sequential (the key needs its consumer).
-- The next request follows the last response: wrk builds (and discards) one
-- request per thread at start-up, so a plain counter would drift.
local counter = 0
local threads = {}
local created = nil -- consumer created by the last response, waiting for its key
local sent = nil    -- consumer name of the last consumer request sent

function setup(thread)
  table.insert(threads, thread)
  thread:set("tid", #threads)
end

function init(args)
  prefix = args[1] or "bench"
end

function request()
  local form = { ["Content-Type"] = "application/x-www-form-urlencoded" }
  if created then
    local name = created
    created, sent = nil, nil
    return wrk.format("POST", "/consumers/" .. name .. "/key-auth", form, "")
  end
  counter = counter + 1
  sent = prefix .. "-" .. tid .. "-" .. counter
  return wrk.format("POST", "/consumers", form, "username=" .. sent)
end

function response(status)
  if sent and status == 201 then created = sent end
end
