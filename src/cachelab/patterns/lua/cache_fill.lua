-- Store a loaded value only if nothing was invalidated since the reader looked.
-- KEYS[1] value key, KEYS[2] the key's generation, KEYS[3..n] tag generations
-- ARGV[1] generation the reader saw, ARGV[2] entry bytes, ARGV[3] TTL in ms,
-- ARGV[4..] tag generations the reader saw (same order as KEYS[3..n])
if (redis.call('GET', KEYS[2]) or '0') ~= ARGV[1] then
  return 0
end
for i = 3, #KEYS do
  if (redis.call('GET', KEYS[i]) or '0') ~= ARGV[i + 1] then
    return 0
  end
end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
return 1
