-- The consumer's script: complete the job in hand (optional), re-queue (or dead-letter) jobs
-- whose lease expired, then lease the next due job. One script, so a worker that finishes a
-- job and takes the next one pays one round trip for both (JobQueue.ack_and_reserve).
-- KEYS[1] pending zset   KEYS[2] leases zset (id -> lease expiry, ms)   KEYS[3] dead zset
-- KEYS[4] stats hash
-- ARGV[1] job key prefix (job hash = prefix .. id; same hash tag as KEYS, so one slot)
-- ARGV[2] lease ms   ARGV[3] consumer id   ARGV[4] max deliveries   ARGV[5] batch (bounded work)
-- ARGV[6] 1 = ack (if ARGV[7] is set), reap, lease a job; 0 = only reap; 2 = only ack
-- ARGV[7] id of the job to ack ('' = none)   ARGV[8] its lease token   ARGV[9] result JSON
-- ARGV[10] status TTL ms
-- Returns {1, id, payload, deliveries, enqueued_at, token, acked}  when a job was leased,
--         {0, ms until the next job is due (-1: none), reaped, dead-lettered, acked} otherwise;
-- acked is 1 when ARGV[7]'s job was completed, 0 when its lease was lost (or nothing to ack).
local pending, leases, dead, stats = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local prefix = ARGV[1]
local lease_ms = tonumber(ARGV[2])
local max_deliveries = tonumber(ARGV[4])
local batch = tonumber(ARGV[5])
local mode = ARGV[6]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

-- 0. Ack: only the current lease holder may (its token matches and the lease is still there;
--    a reaped job's token changed, a failed or acked one left the leases set). Before the reap,
--    as a separate ack before the next reserve was: an expired lease nobody reaped yet still acks.
local acked = 0
local ack_id = ARGV[7] or ''
if ack_id ~= '' then
  local job = prefix .. ack_id
  if redis.call('HGET', job, 'token') == ARGV[8] and redis.call('ZREM', leases, ack_id) == 1 then
    redis.call('HSET', job, 'status', 'completed', 'result', ARGV[9], 'completed_at', now)
    redis.call('PEXPIRE', job, ARGV[10])
    redis.call('HINCRBY', stats, 'completed', 1)
    acked = 1
  end
end
if mode == '2' then
  return {0, -1, 0, 0, acked}
end

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

if mode ~= '1' then
  return {0, -1, reaped, buried, acked}
end

-- 2. Lease the job that has been due the longest. Delayed jobs (retries, scheduled) share the
--    zset, scored by their due time, so "promotion" is just the clock passing their score.
--    ZPOPMIN takes the head in one command; a head not due yet goes back with its own score
--    (same score, same member: same place), which is the rare path.
local wait = -1
for _ = 1, batch do
  local head = redis.call('ZPOPMIN', pending)
  local id, score = head[1], tonumber(head[2])
  if not id then
    break
  end
  if score > now then
    redis.call('ZADD', pending, score, id)
    wait = score - now
    break
  end
  local job = prefix .. id
  -- One read replaces EXISTS + HINCRBY x2 + HMGET: every job hash has a payload.
  local f = redis.call('HMGET', job, 'payload', 'enqueued_at', 'deliveries', 'token')
  if f[1] then
    local deliveries = tonumber(f[3] or '0') + 1
    local token = tonumber(f[4] or '0') + 1
    redis.call('HSET', job, 'deliveries', deliveries, 'token', token, 'status', 'running',
      'consumer', ARGV[3], 'started_at', now)
    redis.call('ZADD', leases, now + lease_ms, id)
    return {1, id, f[1], deliveries, f[2], token, acked}
  end
  redis.call('HINCRBY', stats, 'orphans', 1)  -- job hash deleted behind our back: skip it
end

return {0, wait, reaped, buried, acked}
