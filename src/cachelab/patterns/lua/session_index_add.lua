-- Add a session id to its user's index (a sorted set scored by absolute deadline, ms).
-- KEYS[1]  the user's index
-- ARGV[1]  new session id            ARGV[2]  absolute lifetime, ms (used when ARGV[4] is '')
-- ARGV[3]  old session id being rotated, or ''
-- ARGV[4]  absolute deadline to keep, ms, or ''
-- Returns {ok, now_ms, deadline_ms, size}. ok = 0 when rotating an id no longer in the index:
-- a log-out-everywhere has taken it, and the rotation must not carry the session over.
-- Entries past their deadline are pruned, and the index expires with its last deadline, so it
-- holds at most the sessions started within one absolute lifetime.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local deadline
if ARGV[4] ~= '' then
  deadline = tonumber(ARGV[4])
else
  deadline = now + tonumber(ARGV[2])
end
if ARGV[3] ~= '' then
  if not redis.call('ZSCORE', KEYS[1], ARGV[3]) then
    return {0, now, deadline, redis.call('ZCARD', KEYS[1])}
  end
  redis.call('ZREM', KEYS[1], ARGV[3])
end
redis.call('ZADD', KEYS[1], deadline, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
if #last > 0 then
  redis.call('PEXPIREAT', KEYS[1], last[2])
end
return {1, now, deadline, redis.call('ZCARD', KEYS[1])}
