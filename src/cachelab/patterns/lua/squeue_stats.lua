-- Streams queue metrics in one round trip (read-only).
-- KEYS[1] stream   KEYS[2] delayed zset   KEYS[3] dead zset   KEYS[4] stats hash   ARGV[1] group
-- Returns {ready, delayed, in flight, dead, oldest ready age ms, stream length, name, value, ...}.
local stream, delayed, dead, stats = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local group = ARGV[1]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local counters = redis.call('HGETALL', stats)
local c = {}
for i = 1, #counters, 2 do
  c[counters[i]] = tonumber(counters[i + 1])
end
-- Ready = messages added and not yet read by the group (counted by the scripts that do both).
local ready = (c['added'] or 0) - (c['read'] or 0)
local in_flight, age = 0, 0
local groups = redis.pcall('XINFO', 'GROUPS', stream)
if type(groups) == 'table' and not groups.err then
  for _, g in ipairs(groups) do
    local info = {}
    for i = 1, #g, 2 do
      info[g[i]] = g[i + 1]
    end
    if info['name'] == group then
      in_flight = tonumber(info['pending'])
      local first = redis.call('XRANGE', stream, '(' .. info['last-delivered-id'], '+', 'COUNT', 1)[1]
      if first then
        age = math.max(0, now - tonumber(string.match(first[1], '^(%d+)-')))
      end
    end
  end
end
local out = {ready, redis.call('ZCARD', delayed), in_flight, redis.call('ZCARD', dead), age,
  redis.call('XLEN', stream)}
for _, v in ipairs(counters) do
  out[#out + 1] = v
end
return out
