-- Enqueue one job, atomically, with optional idempotency key and delay.
-- KEYS[1] pending zset (id -> ready time, ms)   KEYS[2] job hash
-- KEYS[3] stats hash   KEYS[4] notify list   KEYS[5] idempotency string (or the job key when unused)
-- ARGV[1] job id   ARGV[2] payload JSON   ARGV[3] delay ms   ARGV[4] use idempotency (0/1)
-- ARGV[5] idempotency TTL ms   ARGV[6] notify cap
-- Returns {job id, 1 if newly enqueued else 0}.
local pending, job, stats, notify, idem = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local id = ARGV[1]
if ARGV[4] == '1' then
  local existing = redis.call('GET', idem)
  if existing then
    return {existing, 0}
  end
  redis.call('SET', idem, id, 'PX', ARGV[5])
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ready_at = now + tonumber(ARGV[3])
redis.call('HSET', job, 'payload', ARGV[2], 'status', 'queued', 'enqueued_at', now,
  'ready_at', ready_at, 'deliveries', 0, 'token', 0)
redis.call('ZADD', pending, ready_at, id)
redis.call('HINCRBY', stats, 'enqueued', 1)
if ready_at <= now then
  redis.call('LPUSH', notify, 1)
  redis.call('LTRIM', notify, 0, tonumber(ARGV[6]) - 1)
end
return {id, 1}
