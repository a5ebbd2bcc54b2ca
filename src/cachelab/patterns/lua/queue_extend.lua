-- Extend the lease of a job still held by this holder (long-running jobs).
-- KEYS[1] leases zset   KEYS[2] job hash
-- ARGV[1] id   ARGV[2] lease token   ARGV[3] lease ms
-- Returns 1, or 0 when the lease was lost.
if redis.call('HGET', KEYS[2], 'token') ~= ARGV[2] then
  return 0
end
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then
  return 0
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], 'XX', now + tonumber(ARGV[3]), ARGV[1])
return 1
