-- Hand a delivered job back without counting the delivery: at graceful shutdown (a new message
-- at the end of the stream: a stream cannot put it back in its place), or from a worker with no
-- handler for its type (due after ARGV[5] ms, through the delayed set).
-- KEYS[1] stream   KEYS[2] delayed zset   KEYS[3] stats hash   KEYS[4] notify list
-- ARGV[1] group   ARGV[2] entry id   ARGV[3] consumer   ARGV[4] entry delivery count
-- ARGV[5] delay ms (0: due at once)   ARGV[6] notify cap   ARGV[7] job key prefix
-- Returns 1, or 0 when the delivery was already lost.
local stream, delayed, stats, notify = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
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
local jid = f.j or eid
local job = ARGV[7] .. jid
local uncounted = tonumber(f.d or '0') + tonumber(p[4]) - 1
local enq = tonumber(f.t or string.match(eid, '^(%d+)-'))
local delay = tonumber(ARGV[5])
if delay > 0 then
  local t = redis.call('TIME')
  local due = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + delay
  redis.call('HSET', job, 'payload', f.p or '', 'status', 'queued', 'ready_at', due,
    'deliveries', uncounted, 'enqueued_at', enq)
  redis.call('HDEL', job, 'entry')
  redis.call('ZADD', delayed, due, jid)
  redis.call('HINCRBY', stats, 'deferred', 1)
  return 1
end
local new = redis.call('XADD', stream, '*', 'p', f.p or '', 'j', jid, 'd', uncounted, 't', enq)
redis.call('HSET', job, 'status', 'queued', 'entry', new, 'deliveries', uncounted, 'enqueued_at', enq)
redis.call('HINCRBY', stats, 'added', 1)
redis.call('HINCRBY', stats, 'released', 1)
redis.call('LPUSH', notify, 1)
redis.call('LTRIM', notify, 0, tonumber(ARGV[6]) - 1)
return 1
