-- Fixed window, epoch-aligned on the server's clock: one string counter per
-- (identifier, window), named KEYS[1] .. ':@' .. <window index>.
-- KEYS[1] the identifier's base key (hash tag {identifier}); the counter shares its slot
-- ARGV: limit, period_us, cost
-- Returns {now_us, remaining} when allowed (reset_after = the window's end - now,
-- computed by the caller), {now_us, remaining, reset_after_us, retry_after_us}
-- when denied.
-- The window is in the key's name, so a counter whose expiry lags (PX is whole
-- ms, the window µs) can never leak into the next window; the counter is
-- created with its expiry (SET .. PX) in the same call, so it never lacks a TTL.
-- A denial only reads. '@' is never produced by keys.safe(), so no other key
-- (e.g. a limiter named after a number) can be a window counter.
-- Redis >= 5 replicates scripts by effects, so TIME before a write is allowed.
local t = redis.call('TIME')
local now = t[1] * 1000000 + t[2]
local limit = tonumber(ARGV[1])
local period = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])

local window = math.floor(now / period)
local key = KEYS[1] .. ':@' .. string.format('%d', window)
local count = tonumber(redis.call('GET', key)) or 0

if count + cost > limit then
  local reset_after = (window + 1) * period - now
  return {now, limit - count, reset_after, reset_after}
end
if count == 0 then
  local reset_after = (window + 1) * period - now
  redis.call('SET', key, cost, 'PX', math.max(1, math.ceil(reset_after / 1000)))
else
  redis.call('INCRBY', key, cost)
end
return {now, limit - count - cost}
