-- Take one of `limit` slots for this key, reclaiming the slots of expired leases first.
-- KEYS[1] leases zset (lease id -> expiry, ms on the server clock)
-- ARGV[1] limit   ARGV[2] lease ms   ARGV[3] lease id (random, chosen by the caller)
-- Returns {1, in flight, expiry ms, now ms} when acquired,
--         {0, in flight, ms until the earliest lease expires, now ms} when every slot is taken.
local key = KEYS[1]
local limit = tonumber(ARGV[1])
local lease_ms = tonumber(ARGV[2])
local id = ARGV[3]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
-- A lease that expired belongs to a holder that died, hung or forgot: its slot is free again.
redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
local expires = now + lease_ms
local held = redis.call('ZSCORE', key, id)
local n = redis.call('ZCARD', key)
if not held and n >= limit then
  local first = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
  return {0, n, tonumber(first[2]) - now, now}
end
-- (`held`: a retried call whose first attempt got through keeps its one slot.)
redis.call('ZADD', key, expires, id)
if redis.call('PTTL', key) < lease_ms then
  redis.call('PEXPIRE', key, lease_ms)  -- the key outlives its latest lease, and no longer
end
if held then
  return {1, n, expires, now}
end
return {1, n + 1, expires, now}
