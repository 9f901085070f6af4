-- wrk script for keys_bench.py: every request carries one of the TG_BENCH_KEYS keys
-- ("key-0" ... "key-<n-1>"), picked uniformly at random, so lookups hit the whole key set
-- rather than one cached entry. Both runs (1 key and a million) use this same script, so
-- wrk spends the same work per request in each.
local n = tonumber(os.getenv("TG_BENCH_KEYS") or "1")

function init(args)
  math.randomseed(os.time() + (tonumber(tostring({}):match("0x(%x+)"), 16) or 0))
end

function request()
  return wrk.format(nil, nil, { ["apikey"] = "key-" .. math.random(0, n - 1) })
end
