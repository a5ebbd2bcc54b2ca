-- Take a live session out of Redis (the first step of rotation): read it and delete it at once,
-- so the old id is invalid from this moment on.
-- KEYS[1]  the old session hash
-- Returns false if there is no live session; else {now_ms, {field, value, ...}}.
if redis.call('TYPE', KEYS[1]).ok ~= 'hash' then
  return false
end
local deadline = tonumber(redis.call('HGET', KEYS[1], 'm.abs'))
if not deadline then
  return false
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local fields = redis.call('HGETALL', KEYS[1])
redis.call('DEL', KEYS[1])
if now >= deadline then
  return false
end
return {now, fields}
