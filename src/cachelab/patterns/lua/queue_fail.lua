-- A leased job failed: schedule a retry after a backoff, or dead-letter it.
-- KEYS[1] pending zset   KEYS[2] leases zset   KEYS[3] dead zset   KEYS[4] job hash
-- KEYS[5] stats hash
-- ARGV[1] id   ARGV[2] lease token   ARGV[3] error text   ARGV[4] backoff ms
-- ARGV[5] max deliveries   ARGV[6] retry allowed (0/1)
-- Returns 1 retry scheduled, 2 dead-lettered, 0 lease lost.
local pending, leases, dead, job, stats = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local id = ARGV[1]
if redis.call('HGET', job, 'token') ~= ARGV[2] then
  return 0
end
if redis.call('ZREM', leases, id) == 0 then
  return 0
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local deliveries = tonumber(redis.call('HGET', job, 'deliveries') or '0')
redis.call('HSET', job, 'last_error', ARGV[3], 'failed_at', now)
if ARGV[6] ~= '1' or deliveries >= tonumber(ARGV[5]) then
  redis.call('HSET', job, 'status', 'dead', 'dead_at', now)
  redis.call('ZADD', dead, now, id)
  redis.call('HINCRBY', stats, 'dead', 1)
  return 2
end
local ready_at = now + tonumber(ARGV[4])
redis.call('HSET', job, 'status', 'failed', 'ready_at', ready_at)
redis.call('ZADD', pending, ready_at, id)
redis.call('HINCRBY', stats, 'retries', 1)
return 1
