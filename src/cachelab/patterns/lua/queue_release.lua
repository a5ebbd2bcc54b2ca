-- Hand a leased job back without counting the delivery: at graceful shutdown (due at once, in its
-- place in line), or from a worker with no handler for its type (due after ARGV[4] ms, so the
-- worker moves on and a worker that has the handler can take it).
-- KEYS[1] pending zset   KEYS[2] leases zset   KEYS[3] job hash   KEYS[4] stats hash
-- KEYS[5] notify list
-- ARGV[1] id   ARGV[2] lease token   ARGV[3] notify cap   ARGV[4] delay ms (0: due at once)
-- Returns 1, or 0 when the lease was already lost.
local pending, leases, job, stats, notify = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local id = ARGV[1]
local delay = tonumber(ARGV[4] or '0')
if redis.call('HGET', job, 'token') ~= ARGV[2] then
  return 0
end
if redis.call('ZREM', leases, id) == 0 then
  return 0
end
redis.call('HINCRBY', job, 'deliveries', -1)
redis.call('HINCRBY', job, 'token', 1)
redis.call('HSET', job, 'status', 'queued')
if delay > 0 then
  local t = redis.call('TIME')
  local due = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + delay
  redis.call('HSET', job, 'ready_at', due)
  redis.call('ZADD', pending, due, id)
  redis.call('HINCRBY', stats, 'deferred', 1)
  return 1
end
-- Keep its place in line: it was due at ready_at and is not at fault.
local ready_at = redis.call('HGET', job, 'ready_at') or '0'
redis.call('ZADD', pending, ready_at, id)
redis.call('HINCRBY', stats, 'released', 1)
redis.call('LPUSH', notify, 1)
redis.call('LTRIM', notify, 0, tonumber(ARGV[3]) - 1)
return 1
