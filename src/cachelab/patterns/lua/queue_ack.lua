-- Complete a leased job: only the current lease holder may (its token matches, lease present).
-- KEYS[1] leases zset   KEYS[2] job hash   KEYS[3] stats hash
-- ARGV[1] id   ARGV[2] lease token   ARGV[3] result JSON   ARGV[4] status TTL ms
-- Returns 1, or 0 when the lease was lost (reaped and possibly re-delivered).
local leases, job, stats = KEYS[1], KEYS[2], KEYS[3]
if redis.call('HGET', job, 'token') ~= ARGV[2] then
  return 0
end
if redis.call('ZREM', leases, ARGV[1]) == 0 then
  return 0
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('HSET', job, 'status', 'completed', 'result', ARGV[3], 'completed_at', now)
redis.call('PEXPIRE', job, ARGV[4])
redis.call('HINCRBY', stats, 'completed', 1)
return 1
