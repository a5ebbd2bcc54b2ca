-- Delete a cached value and move its generation on, so a loader that read the
-- old generation cannot write its (stale) result back afterwards.
-- KEYS[1] value key, KEYS[2] generation key
-- ARGV[1] version ('' to just increment), ARGV[2] generation TTL in ms
local gen
if ARGV[1] == '' then
  gen = redis.call('INCR', KEYS[2])
else
  local seen = tonumber(redis.call('GET', KEYS[2]) or '0') or 0
  gen = math.max(seen + 1, tonumber(ARGV[1]))
  redis.call('SET', KEYS[2], string.format('%d', gen))
end
redis.call('PEXPIRE', KEYS[2], ARGV[2])
redis.call('UNLINK', KEYS[1])
return gen
