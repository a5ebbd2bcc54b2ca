-- Complete a delivered job: only the consumer the message is pending on, in the delivery it got
-- (the pending entry's delivery count), may ack it; a reclaimed message refuses the old holder.
-- KEYS[1] stream   KEYS[2] stats hash
-- ARGV[1] group   ARGV[2] entry id   ARGV[3] consumer   ARGV[4] entry delivery count
-- ARGV[5] result JSON   ARGV[6] status TTL ms   ARGV[7] job key prefix
-- Returns the queue's completed count (>= 1), or 0 when the delivery was lost.
local stream, stats = KEYS[1], KEYS[2]
local group, eid = ARGV[1], ARGV[2]
local p = redis.call('XPENDING', stream, group, eid, eid, 1)[1]
if not p or p[2] ~= ARGV[3] or tostring(p[4]) ~= ARGV[4] then
  return 0
end
redis.call('XACK', stream, group, eid)
local entry = redis.call('XRANGE', stream, eid, eid)[1]
local f = {}
if entry then
  for i = 1, #entry[2], 2 do
    f[entry[2][i]] = entry[2][i + 1]
  end
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local job = ARGV[7] .. (f.j or eid)
-- The status record keeps the payload (the entry will be trimmed) so the job's owner can be checked.
redis.call('HSET', job, 'status', 'completed', 'result', ARGV[5], 'completed_at', now,
  'payload', f.p or '', 'deliveries', tonumber(f.d or '0') + tonumber(p[4]),
  'enqueued_at', tonumber(f.t or string.match(eid, '^(%d+)-')))
redis.call('HDEL', job, 'entry')
redis.call('PEXPIRE', job, ARGV[6])
return redis.call('HINCRBY', stats, 'completed', 1)
