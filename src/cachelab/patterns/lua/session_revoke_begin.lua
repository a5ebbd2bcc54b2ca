-- Start a log-out-everywhere: move the user's index into a "revoking" set and return its ids.
-- KEYS[1]  the user's index          KEYS[2]  the user's revoking set (same hash tag)
-- Returns every id to revoke, including ones left by an earlier, interrupted revocation.
-- Emptying the index atomically is what stops a concurrent rotation (which checks that the old
-- id is still indexed) from carrying a revoked session over to a new id.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZUNIONSTORE', KEYS[2], 2, KEYS[2], KEYS[1], 'AGGREGATE', 'MAX')
redis.call('DEL', KEYS[1])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
local last = redis.call('ZRANGE', KEYS[2], -1, -1, 'WITHSCORES')
if #last > 0 then
  redis.call('PEXPIREAT', KEYS[2], last[2])
end
return redis.call('ZRANGE', KEYS[2], 0, -1)
