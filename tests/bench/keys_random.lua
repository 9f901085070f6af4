-- wrk script for keys_bench.py: every request carries one of the TG_BENCH_KEYS keys
-- ("key-0" ... "key-<n-1>"), picked uniformly at random, so lookups hit the whole key set
-- rather than one cached entry. Both runs (1 key and a million) use this same script, so
-- wrk spends the same work per request in each.
local n = tonumber(os.getenv("TG_BENCH_KEYS") or "1")
-- TG_BENCH_TRAFFIC=zipf: key i is drawn with probability proportional to 1/(i+1) (Zipf, s = 1),
-- the skew of real API traffic, where a few clients send most requests; by default every key
-- is equally likely, the worst case for caches.
local zipf = os.getenv("TG_BENCH_TRAFFIC") == "zipf"
local log_n1 = math.log(n + 1)

function init(args)
  math.randomseed(os.time() + (tonumber(tostring({}):match("0x(%x+)"), 16) or 0))
end

-- exp(u * ln(n + 1)) is log-uniform on [1, n + 1): its floor k has probability
-- ln((k + 1) / k) / ln(n + 1), about 1 / (k ln n), which is Zipf with s = 1
local function pick()
  if not zipf then return math.random(0, n - 1) end
  return math.min(math.floor(math.exp(math.random() * log_n1)), n) - 1
end

function request()
  return wrk.format(nil, nil, { ["apikey"] = "key-" .. pick() })
end
