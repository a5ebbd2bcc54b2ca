-- Re-queue (or dead-letter) jobs whose lease expired, then lease the next due job.
-- KEYS[1] pending zset   KEYS[2] leases zset (id -> lease expiry, ms)   KEYS[3] dead zset
-- KEYS[4] stats hash
-- ARGV[1] job key prefix (job hash = prefix .. id; same hash tag as KEYS, so one slot)
-- ARGV[2] lease ms   ARGV[3] consumer id   ARGV[4] max deliveries   ARGV[5] batch (bounded work)
-- ARGV[6] 1 = lease a job, 0 = only reap
-- Returns {1, id, payload, deliveries, enqueued_at, token}  when a job was leased,
--         {0, ms until the next job is due (-1: none), reaped, dead-lettered} otherwise.
local pending, leases, dead, stats = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local prefix = ARGV[1]
local lease_ms = tonumber(ARGV[2])
local max_deliveries = tonumber(ARGV[4])
local batch = tonumber(ARGV[5])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

-- 1. Reap: a lease that expired means the worker died or hung; each such delivery counts.
local reaped, buried = 0, 0
local expired = redis.call('ZRANGEBYSCORE', leases, '-inf', now, 'LIMIT', 0, batch)
for _, id in ipairs(expired) do
  redis.call('ZREM', leases, id)
  local job = prefix .. id
  if redis.call('EXISTS', job) == 1 then
    redis.call('HINCRBY', job, 'token', 1)  -- the lost holder can no longer ack or fail it
    local deliveries = tonumber(redis.call('HGET', job, 'deliveries') or '0')
    local consumer = redis.call('HGET', job, 'consumer') or '?'
    redis.call('HSET', job, 'last_error',
      'lease expired on delivery ' .. deliveries .. ' (worker ' .. consumer .. ' lost or hung)')
    if deliveries >= max_deliveries then
      redis.call('HSET', job, 'status', 'dead', 'dead_at', now)
      redis.call('ZADD', dead, now, id)
      redis.call('HINCRBY', stats, 'dead', 1)
      buried = buried + 1
    else
      redis.call('HSET', job, 'status', 'queued', 'ready_at', now)
      redis.call('ZADD', pending, now, id)
      redis.call('HINCRBY', stats, 'reaped', 1)
      reaped = reaped + 1
    end
  end
end

if ARGV[6] ~= '1' then
  return {0, -1, reaped, buried}
end

-- 2. Lease the job that has been due the longest. Delayed jobs (retries, scheduled) share the
--    zset, scored by their due time, so "promotion" is just the clock passing their score.
for _ = 1, batch do
  local due = redis.call('ZRANGEBYSCORE', pending, '-inf', now, 'LIMIT', 0, 1)
  local id = due[1]
  if not id then
    break
  end
  redis.call('ZREM', pending, id)
  local job = prefix .. id
  if redis.call('EXISTS', job) == 1 then
    local deliveries = redis.call('HINCRBY', job, 'deliveries', 1)
    local token = redis.call('HINCRBY', job, 'token', 1)
    redis.call('HSET', job, 'status', 'running', 'consumer', ARGV[3], 'started_at', now)
    redis.call('ZADD', leases, now + lease_ms, id)
    local fields = redis.call('HMGET', job, 'payload', 'enqueued_at')
    return {1, id, fields[1], deliveries, fields[2], token}
  end
  redis.call('HINCRBY', stats, 'orphans', 1)  -- job hash deleted behind our back: skip it
end

local nxt = redis.call('ZRANGE', pending, 0, 0, 'WITHSCORES')
local wait = -1
if nxt[2] then
  wait = math.max(0, tonumber(nxt[2]) - now)
end
return {0, wait, reaped, buried}
