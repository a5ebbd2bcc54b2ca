-- Put a dead-lettered job back in the stream with a fresh delivery budget (operator action).
-- KEYS[1] stream   KEYS[2] dead zset   KEYS[3] job hash   KEYS[4] stats hash   KEYS[5] notify list
-- ARGV[1] job id   ARGV[2] notify cap
-- Returns 1, or 0 when the job is not in the dead-letter set.
local stream, dead, job, stats, notify = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
if redis.call('ZREM', dead, ARGV[1]) == 0 then
  return 0
end
local h = redis.call('HMGET', job, 'payload', 'enqueued_at')
local eid = redis.call('XADD', stream, '*', 'p', h[1] or '{}', 'j', ARGV[1], 'd', 0, 't', h[2] or 0)
redis.call('HSET', job, 'status', 'queued', 'entry', eid, 'deliveries', 0)
redis.call('HDEL', job, 'payload', 'dead_at')
redis.call('HINCRBY', stats, 'added', 1)
redis.call('HINCRBY', stats, 'requeued_dead', 1)
redis.call('LPUSH', notify, 1)
redis.call('LTRIM', notify, 0, tonumber(ARGV[2]) - 1)
return 1
