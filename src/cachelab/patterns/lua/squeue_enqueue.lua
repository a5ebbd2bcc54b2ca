-- Enqueue one job on the Streams queue: an entry in the stream (its id is the job's id), or,
-- with a delay, a job hash and a member of the delayed set (streams have no delay).
-- KEYS[1] stream   KEYS[2] delayed zset   KEYS[3] stats hash   KEYS[4] notify list
-- KEYS[5] idempotency string (or the stream key when unused)
-- ARGV[1] payload JSON   ARGV[2] delay ms   ARGV[3] use idempotency (0/1)   ARGV[4] idempotency TTL ms
-- ARGV[5] notify cap   ARGV[6] job key prefix   ARGV[7] the id a delayed job gets
-- Returns {job id, 1 if newly enqueued else 0}.
local stream, delayed, stats, notify, idem = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
if ARGV[3] == '1' then
  local existing = redis.call('GET', idem)
  if existing then
    return {existing, 0}
  end
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local delay = tonumber(ARGV[2])
local id
if delay > 0 then
  id = ARGV[7]
  redis.call('HSET', ARGV[6] .. id, 'payload', ARGV[1], 'status', 'queued', 'enqueued_at', now,
    'ready_at', now + delay, 'deliveries', 0)
  redis.call('ZADD', delayed, now + delay, id)
else
  -- Only the payload: the entry id carries the enqueue time, and there is no per-job key at all.
  id = redis.call('XADD', stream, '*', 'p', ARGV[1])
  redis.call('HINCRBY', stats, 'added', 1)
  redis.call('LPUSH', notify, 1)
  redis.call('LTRIM', notify, 0, tonumber(ARGV[5]) - 1)
end
if ARGV[3] == '1' then
  redis.call('SET', idem, id, 'PX', ARGV[4])
end
redis.call('HINCRBY', stats, 'enqueued', 1)
return {id, 1}
