-- Read a session and slide its idle timeout, in one round trip.
-- KEYS[1]  the session hash
-- ARGV[1]  idle timeout, ms
-- Returns false for an unknown id, a revoked id (its tombstone is a string, not a hash) or a
-- session past its absolute deadline (which is deleted); else {now_ms, ttl_ms, {field, value, ...}}.
-- The new TTL is min(idle, deadline - now) on the server's clock, so the key can never outlive
-- the absolute deadline, whatever the clients' clocks say.
if redis.call('TYPE', KEYS[1]).ok ~= 'hash' then
  return false
end
local deadline = tonumber(redis.call('HGET', KEYS[1], 'm.abs'))
if not deadline then
  return false
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if now >= deadline then
  redis.call('DEL', KEYS[1])
  return false
end
local ttl = math.min(tonumber(ARGV[1]), deadline - now)
redis.call('HSET', KEYS[1], 'm.seen', now)
redis.call('PEXPIRE', KEYS[1], ttl)
return {now, ttl, redis.call('HGETALL', KEYS[1])}
