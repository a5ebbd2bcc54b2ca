-- Write-through with a version guard: an older version never replaces a newer one.
-- KEYS[1] value key, KEYS[2] the key's generation (holds the newest version seen)
-- ARGV[1] version (integer, increasing per row), ARGV[2] entry bytes,
-- ARGV[3] value TTL in ms, ARGV[4] generation TTL in ms
local seen = tonumber(redis.call('GET', KEYS[2]) or '0') or 0
local version = tonumber(ARGV[1])
if version <= seen then
  return 0
end
redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[4])
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
return 1
