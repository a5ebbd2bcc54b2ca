-- Invalidate every entry carrying any of the given tags in O(tags): bump each
-- tag's generation. Entries store the generations they were built under and
-- read the current ones in the same MGET as the value; a mismatch is a miss.
-- KEYS[1..n] tag generation keys (one scope, so one slot), ARGV[1] generation TTL in ms
-- Returns the new generation of the first tag.
local first
for i = 1, #KEYS do
  local gen = redis.call('INCR', KEYS[i])
  redis.call('PEXPIRE', KEYS[i], ARGV[1])
  first = first or gen
end
return first
