-- Write a new session hash, never over an existing key.
-- KEYS[1]  the new session hash
-- ARGV[1]  idle timeout, ms          ARGV[2]  created_at, ms        ARGV[3]  absolute deadline, ms
-- ARGV[4]  user id                   ARGV[5]  data size, bytes
-- ARGV[6]  fence, ms: server time at which the id entered the user's index
-- ARGV[7]  max delay, ms: refuse if more than this has passed since the fence
-- ARGV[8..] field, value pairs (data fields, already JSON-encoded)
-- Returns now_ms on success; -1 if the key exists (a revocation tombstone, or a collision);
-- -2 if the deadline has passed or the write came too late after the fence.
-- The "exists" check is what makes log-out-everywhere safe against a login racing it: the
-- revoker tombstones every id it found in the index, and a tombstoned id cannot be written.
if redis.call('EXISTS', KEYS[1]) == 1 then
  return -1
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local deadline = tonumber(ARGV[3])
if now >= deadline or now > tonumber(ARGV[6]) + tonumber(ARGV[7]) then
  return -2
end
redis.call('HSET', KEYS[1], 'm.uid', ARGV[4], 'm.created', ARGV[2], 'm.seen', now,
  'm.abs', ARGV[3], 'm.size', ARGV[5])
for i = 8, #ARGV, 2 do
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
end
redis.call('PEXPIRE', KEYS[1], math.min(tonumber(ARGV[1]), deadline - now))
return now
