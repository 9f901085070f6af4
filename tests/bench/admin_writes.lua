-- wrk script: each connection creates a consumer, then a key-auth credential
-- for it, alternately. Run with as many threads as connections so each
-- connection's requests are strictly sequential (the key needs its consumer).
local counter = 0
local threads = {}

function setup(thread)
  table.insert(threads, thread)
  thread:set("tid", #threads)
end

function init(args)
  prefix = args[1] or "bench"
end

function request()
  counter = counter + 1
  local name = prefix .. "-" .. tid .. "-" .. math.floor((counter + 1) / 2)
  local form = { ["Content-Type"] = "application/x-www-form-urlencoded" }
  if counter % 2 == 1 then
    return wrk.format("POST", "/consumers", form, "username=" .. name)
  end
  return wrk.format("POST", "/consumers/" .. name .. "/key-auth", form, "")
end
