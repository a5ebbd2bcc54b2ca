-- Sliding-window counter: the current and previous epoch-aligned windows'
-- counts, the previous one weighted by how much of it still overlaps the
-- sliding window (assumes it was spread evenly: an approximation).
-- KEYS[1] the identifier's base key (hash tag {identifier}); window w's count is
--         the string KEYS[1] .. ':@' .. w, in the same slot
-- ARGV: limit, period_us, cost
-- Returns {now_us, remaining} when allowed (reset_after = the end of the next
-- window - now, computed by the caller), {now_us, remaining, reset_after_us,
-- retry_after_us} when denied.
-- A count is created with its expiry (SET .. PX: the end of the next window,
-- while it is still needed as the previous one) in the same call; a denial
-- only reads. Redis >= 5 replicates scripts by effects (TIME before a write).
local t = redis.call('TIME')
local now = t[1] * 1000000 + t[2]
local limit = tonumber(ARGV[1])
local period = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])

local window = math.floor(now / period)
local elapsed = now - window * period
local key = KEYS[1] .. ':@' .. string.format('%d', window)
local stored = redis.call('MGET', key, KEYS[1] .. ':@' .. string.format('%d', window - 1))
local cur = tonumber(stored[1]) or 0
local prev = tonumber(stored[2]) or 0

local estimate = prev * (period - elapsed) / period + cur

if estimate + cost <= limit then
  if cur == 0 then
    redis.call('SET', key, cost, 'PX', math.max(1, math.ceil((2 * period - elapsed) / 1000)))
  else
    redis.call('INCRBY', key, cost)
  end
  return {now, math.max(0, math.floor(limit - estimate - cost))}
end

local retry_after
if cur + cost <= limit then
  -- Still this window: wait for the previous window's weight to decay.
  local at = period - (limit - cur - cost) * period / prev
  retry_after = at - elapsed
else
  -- Next window: this window's count becomes the decaying one.
  local at = period * (1 - (limit - cost) / cur)
  retry_after = (period - elapsed) + math.max(0, at)
end
local reset_after = 0
if cur > 0 then
  reset_after = 2 * period - elapsed
elseif prev > 0 then
  reset_after = period - elapsed
end
return {now, math.max(0, math.floor(limit - estimate)), math.ceil(reset_after), math.max(1, math.ceil(retry_after))}
