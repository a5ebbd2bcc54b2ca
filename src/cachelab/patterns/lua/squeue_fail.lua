-- A delivered job failed: schedule a retry after a backoff (the delayed set; streams have no
-- delay), or dead-letter it. Either way its message leaves the group's pending list.
-- KEYS[1] stream   KEYS[2] delayed zset   KEYS[3] dead zset   KEYS[4] stats hash
-- ARGV[1] group   ARGV[2] entry id   ARGV[3] consumer   ARGV[4] entry delivery count
-- ARGV[5] error text   ARGV[6] backoff ms   ARGV[7] max deliveries   ARGV[8] retry allowed (0/1)
-- ARGV[9] job key prefix
-- Returns 1 retry scheduled, 2 dead-lettered, 0 delivery lost.
local stream, delayed, dead, stats = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
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
local jid = f.j or eid
local job = ARGV[9] .. jid
local deliveries = tonumber(f.d or '0') + tonumber(p[4])
redis.call('HSET', job, 'payload', f.p or '', 'deliveries', deliveries, 'last_error', ARGV[5],
  'failed_at', now, 'enqueued_at', tonumber(f.t or string.match(eid, '^(%d+)-')))
redis.call('HDEL', job, 'entry')
if ARGV[8] ~= '1' or deliveries >= tonumber(ARGV[7]) then
  redis.call('HSET', job, 'status', 'dead', 'dead_at', now)
  redis.call('ZADD', dead, now, jid)
  redis.call('HINCRBY', stats, 'dead', 1)
  return 2
end
local ready_at = now + tonumber(ARGV[6])
redis.call('HSET', job, 'status', 'failed', 'ready_at', ready_at)
redis.call('ZADD', delayed, ready_at, jid)
redis.call('HINCRBY', stats, 'retries', 1)
return 1
