-- Hand a leased job back (graceful shutdown): ready again at once, and the delivery not counted.
-- KEYS[1] pending zset   KEYS[2] leases zset   KEYS[3] job hash   KEYS[4] stats hash
-- KEYS[5] notify list
-- ARGV[1] id   ARGV[2] lease token   ARGV[3] notify cap
-- Returns 1, or 0 when the lease was already lost.
local pending, leases, job, stats, notify = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local id = ARGV[1]
if redis.call('HGET', job, 'token') ~= ARGV[2] then
  return 0
end
if redis.call('ZREM', leases, id) == 0 then
  return 0
end
redis.call('HINCRBY', job, 'deliveries', -1)
redis.call('HINCRBY', job, 'token', 1)
redis.call('HSET', job, 'status', 'queued')
-- Keep its place in line: it was due at ready_at and is not at fault.
local ready_at = redis.call('HGET', job, 'ready_at') or '0'
redis.call('ZADD', pending, ready_at, id)
redis.call('HINCRBY', stats, 'released', 1)
redis.call('LPUSH', notify, 1)
redis.call('LTRIM', notify, 0, tonumber(ARGV[3]) - 1)
return 1
