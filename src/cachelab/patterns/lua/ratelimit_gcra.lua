-- GCRA (generic cell rate algorithm): one number per identifier, the
-- theoretical arrival time (TAT) of the next request at the sustained rate.
-- KEYS[1] string: TAT in whole microseconds
-- ARGV: limit, period_us, cost, burst (integers)
-- Returns {allowed, remaining, reset_after_us, retry_after_us, now_us}.
-- Up to `burst` units may arrive at once. A missing key means "idle": the key
-- lives until TAT.
--
-- Integer ticks: every quantity is a whole number of microseconds (TIME's
-- resolution), held exactly in Lua's doubles (all stay far below 2^53; the
-- limiter's arguments are validated for that). The interval is period/limit
-- rounded up to a whole microsecond (never faster than nominal; exact integer
-- division: `%` and `/` on integers below 2^52), the tolerance is exactly
-- `burst` intervals and the TAT moves by whole intervals, so at one instant
-- exactly `burst` units pass, then one per interval: no float tie at the
-- boundary. The same arithmetic as LocalGCRA (ratelimit_local.py).
if redis.replicate_commands then redis.replicate_commands() end
local key = KEYS[1]
local limit = tonumber(ARGV[1])
local period = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local burst = tonumber(ARGV[4])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])

local interval = (period - period % limit) / limit
if period % limit > 0 then interval = interval + 1 end
local tolerance = burst * interval

-- A TAT written by the float version of this script may have a fraction
-- (float noise around a whole µs): rounded to the nearest.
local tat = math.floor((tonumber(redis.call('GET', key)) or now) + 0.5)
if tat < now then tat = now end
local new_tat = tat + cost * interval
local allow_at = new_tat - tolerance

if now < allow_at then
  local remaining = math.max(0, math.floor((tolerance - (tat - now)) / interval))
  return {0, remaining, tat - now, allow_at - now, now}
end

local reset_after = new_tat - now
redis.call('SET', key, string.format('%.0f', new_tat), 'PX', math.max(1, math.ceil(reset_after / 1000)))
local remaining = math.max(0, math.floor((tolerance - reset_after) / interval))
return {1, remaining, reset_after, 0, now}
