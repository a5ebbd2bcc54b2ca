-- Invalidate every entry carrying a tag in O(1): bump the tag's generation.
-- Entries store the generations they were built under and read the current
-- ones in the same MGET as the value; a mismatch is a miss.
-- KEYS[1] tag generation key, ARGV[1] generation TTL in ms
local gen = redis.call('INCR', KEYS[1])
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return gen
