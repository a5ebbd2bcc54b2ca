-- Move a dead-lettered job back to ready with a fresh delivery budget (operator action).
-- KEYS[1] pending zset   KEYS[2] dead zset   KEYS[3] job hash   KEYS[4] stats hash
-- KEYS[5] notify list
-- ARGV[1] id   ARGV[2] notify cap
-- Returns 1, or 0 when the job is not in the dead-letter set.
local pending, dead, job, stats, notify = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
if redis.call('ZREM', dead, ARGV[1]) == 0 then
  return 0
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('HSET', job, 'status', 'queued', 'deliveries', 0, 'ready_at', now)
redis.call('HINCRBY', job, 'token', 1)
redis.call('ZADD', pending, now, ARGV[1])
redis.call('HINCRBY', stats, 'requeued_dead', 1)
redis.call('LPUSH', notify, 1)
redis.call('LTRIM', notify, 0, tonumber(ARGV[2]) - 1)
return 1
