-- Queue metrics in one round trip (read-only).
-- KEYS[1] pending zset   KEYS[2] leases zset   KEYS[3] dead zset   KEYS[4] stats hash
-- Returns {ready, delayed, in_flight, dead, oldest ready age ms, counter name, value, ...}.
local pending, leases, dead, stats = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ready = redis.call('ZCOUNT', pending, '-inf', now)
local delayed = redis.call('ZCARD', pending) - ready
local age = 0
local first = redis.call('ZRANGE', pending, 0, 0, 'WITHSCORES')
if first[2] and tonumber(first[2]) <= now then
  age = now - tonumber(first[2])
end
local out = {ready, delayed, redis.call('ZCARD', leases), redis.call('ZCARD', dead), age}
for _, v in ipairs(redis.call('HGETALL', stats)) do
  out[#out + 1] = v
end
return out
