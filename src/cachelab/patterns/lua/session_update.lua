-- Merge fields into a live session; never recreate a destroyed one.
-- KEYS[1]  the session hash
-- ARGV[1]  max data size, bytes      ARGV[2]  number of field/value pairs to set (n)
-- ARGV[3 .. 2+2n]  field, value pairs (JSON-encoded values)
-- ARGV[3+2n ..]    fields to remove
-- Returns the new data size; -1 if the session does not exist (unknown, destroyed, expired,
-- revoked); -2 if the result would exceed the maximum size (nothing is written).
-- Fields are hash fields, so two updates of different fields cannot overwrite each other;
-- the size is kept in m.size and adjusted by the difference, O(fields changed).
if redis.call('TYPE', KEYS[1]).ok ~= 'hash' then
  return -1
end
local size = tonumber(redis.call('HGET', KEYS[1], 'm.size'))
if not size or redis.call('HEXISTS', KEYS[1], 'm.abs') == 0 then
  return -1
end
local n = tonumber(ARGV[2])
local last = 2 + 2 * n
for i = 3, last, 2 do
  local old = redis.call('HSTRLEN', KEYS[1], ARGV[i])
  if old > 0 then
    size = size - #ARGV[i] - old
  end
  size = size + #ARGV[i] + #ARGV[i + 1]
end
for i = last + 1, #ARGV do
  local old = redis.call('HSTRLEN', KEYS[1], ARGV[i])
  if old > 0 then
    size = size - #ARGV[i] - old
  end
end
if size > tonumber(ARGV[1]) then
  return -2
end
for i = 3, last, 2 do
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
end
for i = last + 1, #ARGV do
  redis.call('HDEL', KEYS[1], ARGV[i])
end
redis.call('HSET', KEYS[1], 'm.size', size)
return size
