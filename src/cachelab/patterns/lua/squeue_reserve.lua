-- The consumer's script: complete the job in hand (optional), promote due retries into the
-- stream, then deliver one job to a consumer of the group: first a message abandoned by its
-- consumer (idle past the lease: XAUTOCLAIM), else a new one (XREADGROUP). A message whose
-- deliveries are used up is dead-lettered instead of delivered. One script, so a worker that
-- finishes a job and takes the next one pays one round trip for both
-- (StreamQueue.ack_and_reserve).
-- KEYS[1] stream   KEYS[2] delayed zset   KEYS[3] dead zset   KEYS[4] stats hash
-- KEYS[5] XAUTOCLAIM cursor string   KEYS[6] notify list
-- ARGV[1] job key prefix   ARGV[2] group   ARGV[3] consumer   ARGV[4] lease ms (min idle time)
-- ARGV[5] max deliveries   ARGV[6] batch (bounded work)
-- ARGV[7] 1 = ack (if ARGV[9] is set), then deliver a job; 0 = only reap; 2 = only ack
-- ARGV[8] notify cap
-- ARGV[9] entry id to ack ('' = none)   ARGV[10] its consumer   ARGV[11] its entry delivery count
-- ARGV[12] result JSON   ARGV[13] status TTL ms
-- Returns {1, entry id, payload, deliveries, enqueued_at ms, entry delivery count, job id, completed}
-- when a job was delivered, else {0, ms until the next delayed job is due (-1: none), promoted,
-- dead-lettered, completed}; completed is the queue's completed count after ARGV[9]'s ack, 0 when
-- that delivery was lost (or nothing to ack).
local stream, delayed, dead, stats, cursor_key, notify = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local prefix, group, consumer = ARGV[1], ARGV[2], ARGV[3]
local lease_ms = tonumber(ARGV[4])
local max_deliveries = tonumber(ARGV[5])
local batch = tonumber(ARGV[6])
local mode = ARGV[7]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

local function fields(entry)
  local f = {}
  local kv = entry[2]
  for i = 1, #kv, 2 do
    f[kv[i]] = kv[i + 1]
  end
  return f
end

local function enqueued_at(eid, f)
  return tonumber(f.t or string.match(eid, '^(%d+)-'))
end

-- Record the job as dead (payload and error kept) and take its message out of the group.
local function bury(eid, f, deliveries, err)
  local jid = f.j or eid
  local job = prefix .. jid
  redis.call('XACK', stream, group, eid)
  redis.call('HSET', job, 'status', 'dead', 'payload', f.p or '', 'deliveries', deliveries,
    'last_error', err, 'dead_at', now, 'enqueued_at', enqueued_at(eid, f))
  redis.call('HDEL', job, 'entry')
  redis.call('ZADD', dead, now, jid)
  redis.call('HINCRBY', stats, 'dead', 1)
end

-- 0. Ack: only the consumer the message is pending on, in the delivery it got (the pending
--    entry's delivery count), may ack it; a reclaimed message refuses the old holder.
local completed = 0
local ack_eid = ARGV[9] or ''
if ack_eid ~= '' then
  local p = redis.call('XPENDING', stream, group, ack_eid, ack_eid, 1)[1]
  if p and p[2] == ARGV[10] and tostring(p[4]) == ARGV[11] then
    redis.call('XACK', stream, group, ack_eid)
    local entry = redis.call('XRANGE', stream, ack_eid, ack_eid)[1]
    local f = entry and fields(entry) or {}
    local job = prefix .. (f.j or ack_eid)
    -- The status record keeps the payload (the entry will be trimmed) so the job's owner can be
    -- checked.
    redis.call('HSET', job, 'status', 'completed', 'result', ARGV[12], 'completed_at', now,
      'payload', f.p or '', 'deliveries', tonumber(f.d or '0') + tonumber(p[4]),
      'enqueued_at', enqueued_at(ack_eid, f))
    redis.call('HDEL', job, 'entry')
    redis.call('PEXPIRE', job, ARGV[13])
    completed = redis.call('HINCRBY', stats, 'completed', 1)
  end
end
if mode == '2' then
  return {0, -1, 0, 0, completed}
end

-- 1. Due retries (and delayed jobs) enter the stream as new messages, carrying their job id.
local promoted = 0
local due = redis.call('ZRANGEBYSCORE', delayed, '-inf', now, 'LIMIT', 0, batch)
for _, jid in ipairs(due) do
  redis.call('ZREM', delayed, jid)
  local job = prefix .. jid
  local h = redis.call('HMGET', job, 'payload', 'deliveries', 'enqueued_at')
  if h[1] then
    local eid = redis.call('XADD', stream, '*', 'p', h[1], 'j', jid, 'd', h[2] or 0, 't', h[3] or now)
    redis.call('HSET', job, 'status', 'queued', 'entry', eid)
    redis.call('HDEL', job, 'payload', 'ready_at')
    redis.call('HINCRBY', stats, 'added', 1)
    promoted = promoted + 1
  else
    redis.call('HINCRBY', stats, 'orphans', 1)  -- job hash deleted behind our back: skip it
  end
end
if promoted > 0 then
  redis.call('LPUSH', notify, 1)
  redis.call('LTRIM', notify, 0, tonumber(ARGV[8]) - 1)
end

local buried = 0
if mode ~= '1' then
  -- Reaper tick: dead-letter idle messages whose deliveries are used up, without claiming the
  -- rest (a claim is a delivery; the next reserve makes it). XPENDING IDLE needs Redis >= 6.2.
  local idle = redis.call('XPENDING', stream, group, 'IDLE', lease_ms, '-', '+', batch)
  for _, p in ipairs(idle) do
    local eid, holder, count = p[1], p[2], tonumber(p[4])
    local entry = redis.call('XRANGE', stream, eid, eid)[1]
    if not entry then
      redis.call('XACK', stream, group, eid)  -- trimmed by someone else: nothing to deliver
      redis.call('HINCRBY', stats, 'orphans', 1)
    else
      local f = fields(entry)
      local deliveries = tonumber(f.d or '0') + count
      if deliveries >= max_deliveries then
        bury(eid, f, deliveries, 'lease expired on delivery ' .. deliveries .. ' (worker ' .. holder ..
          ' lost or hung)')
        buried = buried + 1
      end
    end
  end
  return {0, -1, promoted, buried, completed}
end

-- 2. A message whose consumer went silent for a whole lease: claim it (XAUTOCLAIM counts the
--    delivery). The cursor walks the pending-entries list across calls: each call examines a
--    few entries (Redis 7 caps it at 10 × COUNT), so a reserve stays cheap however many jobs are
--    in flight, and an abandoned message is found within a bounded number of reserves. Only a
--    claim that had to be dead-lettered makes this call look further.
local start = redis.call('GET', cursor_key) or '0-0'
local cursor = start
for _ = 1, batch do
  local reply = redis.call('XAUTOCLAIM', stream, group, consumer, lease_ms, cursor, 'COUNT', 1)
  cursor = reply[1]
  local entry = reply[2][1]
  if type(entry) ~= 'table' or type(entry[2]) ~= 'table' then
    break  -- nothing idle in this stretch (a deleted entry, 6.2, is left to its claim on 7+)
  else
    local eid = entry[1]
    local f = fields(entry)
    local count = tonumber(redis.call('XPENDING', stream, group, eid, eid, 1)[1][4])
    local deliveries = tonumber(f.d or '0') + count
    if deliveries > max_deliveries then
      -- The lost delivery was the last one allowed.
      bury(eid, f, deliveries - 1, 'lease expired on delivery ' .. (deliveries - 1) ..
        ' (its worker was lost or hung)')
      buried = buried + 1
    else
      if cursor ~= start then
        redis.call('SET', cursor_key, cursor)
      end
      redis.call('HINCRBY', stats, 'reclaimed', 1)
      local jid = f.j or eid
      redis.call('HSET', prefix .. jid, 'status', 'queued', 'entry', eid, 'last_error',
        'lease expired on delivery ' .. (deliveries - 1) .. ' (its worker was lost or hung)')
      return {1, eid, f.p, deliveries, enqueued_at(eid, f), count, jid, completed}
    end
  end
end
if cursor ~= start then
  redis.call('SET', cursor_key, cursor)
end

-- 3. A message never delivered before.
local read = redis.call('XREADGROUP', 'GROUP', group, consumer, 'COUNT', 1, 'STREAMS', stream, '>')
if read and read[1] and read[1][2][1] then
  local entry = read[1][2][1]
  local eid = entry[1]
  local f = fields(entry)
  redis.call('HINCRBY', stats, 'read', 1)
  return {1, eid, f.p, tonumber(f.d or '0') + 1, enqueued_at(eid, f), 1, f.j or eid, completed}
end

local nxt = redis.call('ZRANGE', delayed, 0, 0, 'WITHSCORES')
local wait = -1
if nxt[2] then
  wait = math.max(0, tonumber(nxt[2]) - now)
end
return {0, wait, promoted, buried, completed}
