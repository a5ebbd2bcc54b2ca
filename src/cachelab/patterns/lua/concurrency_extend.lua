-- Push a live lease's expiry `lease ms` from now (a long holder that is still working).
-- KEYS[1] leases zset   ARGV[1] lease id   ARGV[2] lease ms
-- Returns the new expiry (ms), or 0 when the lease had already expired (the slot may be taken).
local key, id = KEYS[1], ARGV[1]
local lease_ms = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local score = redis.call('ZSCORE', key, id)
if not score then
  return 0
end
if tonumber(score) <= now then
  redis.call('ZREM', key, id)
  return 0
end
redis.call('ZADD', key, 'XX', now + lease_ms, id)
if redis.call('PTTL', key) < lease_ms then
  redis.call('PEXPIRE', key, lease_ms)
end
return now + lease_ms
