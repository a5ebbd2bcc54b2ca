-- Give a slot back.
-- KEYS[1] leases zset   ARGV[1] lease id
-- Returns 1 when the lease was still held, 0 when it had expired (its slot was already free),
-- -1 when it is not there (released before, or expired and its slot reclaimed by an acquire).
local key, id = KEYS[1], ARGV[1]
local score = redis.call('ZSCORE', key, id)
if not score then
  return -1
end
redis.call('ZREM', key, id)
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if tonumber(score) <= now then
  return 0
end
return 1
